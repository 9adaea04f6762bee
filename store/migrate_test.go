package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"signerd/store/pgtest"
)

// migrationSource is a bbolt store file written through the store API as
// the engine writes one: healthyStore's certificates, revocation,
// requests, serials, CRL state and statistics, plus a compromised key, an
// RA replay mark, more audit events than a scan reads in one page, a seal
// signed by sealKey, and an event after it. The store is closed.
func migrationSource(t *testing.T) (path string, sealKey *sm2.PrivateKey) {
	t.Helper()
	s := healthyStore(t)
	sealKey, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *Tx) error {
		if err := tx.MarkKeyCompromised([]byte("key-digest"), []byte{2}); err != nil {
			return err
		}
		if err := errors.Join(tx.PutCRLLayout("ab", CRLLayout{Shards: 2, URL: "http://crl/ab-{shard}.crl", Pinned: true}),
			tx.PutCRLShardState("ab", 1, CRLState{Next: 2, Number: 1, BaseSeq: 1}),
			tx.PutCRLObject("ab", 1, false, []byte{0x30, 0x01, 0x01}), tx.PutCRLObject("ab", 0, true, []byte{0x30, 0x00})); err != nil {
			return err
		}
		if err := errors.Join(tx.PutOCSPResponse(migrationOCSPResponse, migrationOCSPResponse.NextUpdate.Add(-time.Hour)),
			tx.MarkOCSPDue("ab", []byte{2}, migrationOCSPResponse.ThisUpdate)); err != nil {
			return err
		}
		return tx.RaiseRAReplayMark([]byte{0x7f, 0xff}, time.Now())
	})
	for batch := 0; batch < 3; batch++ {
		update(t, s, func(tx *Tx) error {
			for i := 0; i < pgScanPage/2+1; i++ {
				if _, err := tx.Append(Event{Actor: System, Action: "test.event", Object: fmt.Sprint(batch, i), Outcome: OutcomeOK}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	update(t, s, func(tx *Tx) error {
		seq, prev, err := tx.AuditHead()
		if err != nil {
			return err
		}
		sig, err := sealKey.SignWithSM2(rand.Reader, nil, SealMessage(seq+1, prev))
		if err != nil {
			return err
		}
		if _, err := tx.Append(Event{Actor: System, Action: "audit.seal", Outcome: OutcomeOK,
			Seal: &Seal{KeyID: []byte("audit-key"), Signature: sig}}); err != nil {
			return err
		}
		_, err = tx.Append(Event{Actor: System, Action: "after.seal", Outcome: OutcomeOK})
		return err
	})
	path = s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, sealKey
}

// migrationOCSPResponse is certificate 01's OCSP response in
// migrationSource; certificate 02 is due for its first.
var migrationOCSPResponse = &OCSPResponse{Issuer: "ab", Serial: []byte{1}, ThisUpdate: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
	NextUpdate: time.Date(2026, 2, 8, 0, 0, 0, 0, time.UTC), DER: []byte{0x30, 0x02, 0x0a, 0x00}}

// boltTables reads every bucket of the file at path, as raw bbolt sees
// it: table, then its records as key, value, key, value...
func boltTables(t *testing.T, path string) map[string][][]byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out[string(name)] = [][]byte{}
			return b.ForEach(func(k, v []byte) error {
				out[string(name)] = append(out[string(name)], bytes.Clone(k), bytes.Clone(v))
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pgTables reads every table of the database with plain SQL, in bytea
// order: table (by its store name), then key, value, key, value...
func pgTables(t *testing.T, dsn string) map[string][][]byte {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	out := map[string][][]byte{}
	for _, table := range tables {
		rows, err := conn.Query(t.Context(), "SELECT k, v FROM "+pgTableIdentifier(table)+" ORDER BY k")
		if err != nil {
			t.Fatal(err)
		}
		out[table] = [][]byte{}
		for rows.Next() {
			var k, v []byte
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			if v == nil {
				v = []byte{}
			}
			out[table] = append(out[table], k, v)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// wantEmpty fails t unless every table of the database is empty.
func wantEmpty(t *testing.T, dsn string) {
	t.Helper()
	for table, kv := range pgTables(t, dsn) {
		if len(kv) > 0 {
			t.Errorf("table %s holds %d records after a refused or failed migration", table, len(kv)/2)
		}
	}
}

// TestMigrateToPostgres copies a store file into a new database and
// compares every table, read with raw bbolt on one side and plain SQL on
// the other, record for record and byte for byte; the file is unchanged,
// the report matches both, and the store opens on PostgreSQL with its audit
// chain and seal verifying, its key index current, and Verify's findings
// (none) and counts.
func TestMigrateToPostgres(t *testing.T) {
	path, sealKey := migrationSource(t)
	dsn := newPostgresDatabase(t)
	before := fileSHA256(t, path)
	fileReport, err := Verify(path)
	if err != nil || !fileReport.OK() {
		t.Fatalf("the source does not verify: %+v, %v", fileReport, err)
	}

	report, err := MigrateToPostgres(t.Context(), path, dsn)
	if err != nil {
		t.Fatal(err)
	}

	if !bytes.Equal(fileSHA256(t, path), before) {
		t.Error("the migration changed the file")
	}
	file, db := boltTables(t, path), pgTables(t, dsn)
	for _, table := range tables {
		f, d := file[table], db[table]
		if len(f) != len(d) {
			t.Errorf("table %s: the file holds %d records, the database %d", table, len(f)/2, len(d)/2)
			continue
		}
		for i := range f {
			if !bytes.Equal(f[i], d[i]) {
				t.Errorf("table %s, record %d: the file holds %q, the database %q", table, i/2, f[i], d[i])
				break
			}
		}
	}
	for name := range file {
		if _, ok := db[name]; !ok {
			t.Errorf("bucket %q of the file has no table", name)
		}
	}
	if len(report.Tables) != len(tables) {
		t.Fatalf("report has %d tables, want %d", len(report.Tables), len(tables))
	}
	for i, td := range report.Tables {
		d := newRecordDigest()
		kv := file[td.Table]
		for j := 0; j < len(kv); j += 2 {
			d.add(kv[j], kv[j+1])
		}
		if want := d.result(tables[i]); td.Table != tables[i] || td.Records != want.Records || !bytes.Equal(td.SHA256, want.SHA256) {
			t.Errorf("report's table %d: %s, %d records, %x; the file's %s has %d, %x", i, td.Table, td.Records, td.SHA256,
				tables[i], want.Records, want.SHA256)
		}
	}
	if len(file[tableAudit])/2 < pgScanPage*3/2 || len(file[tableKeys]) == 0 || len(file[tableCompromisedKeys]) == 0 || len(file[tableRAReplay]) == 0 ||
		len(file[tableCRLObjects]) == 0 || len(file[tableCRLChanges]) == 0 || len(file[tableOCSPResponses]) != 4 || len(file[tableOCSPDue]) != 4 {
		t.Fatalf("the source lacks records the test means to copy: %d events, %d key index entries, %d compromised keys, %d replay marks, %d CRL objects, %d CRL changes",
			len(file[tableAudit])/2, len(file[tableKeys])/2, len(file[tableCompromisedKeys])/2, len(file[tableRAReplay])/2,
			len(file[tableCRLObjects])/2, len(file[tableCRLChanges])/2)
	}
	if report.AuditHead != fileReport.AuditHead || !bytes.Equal(report.AuditHash, fileReport.AuditHash) ||
		report.LastSeal != fileReport.LastSeal || report.LastSeal == 0 || report.Schema != SchemaVersion {
		t.Errorf("report: head %d %x, last seal %d, schema %d; the file's head %d %x, last seal %d",
			report.AuditHead, report.AuditHash, report.LastSeal, report.Schema, fileReport.AuditHead, fileReport.AuditHash, fileReport.LastSeal)
	}

	dbReport, err := VerifyPostgres(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if !dbReport.OK() || len(dbReport.Notes) > 0 || dbReport.Certificates != fileReport.Certificates || dbReport.Serials != fileReport.Serials ||
		dbReport.Requests != fileReport.Requests || dbReport.Revoked != fileReport.Revoked || dbReport.Events != fileReport.Events ||
		dbReport.AuditHead != fileReport.AuditHead || dbReport.LastSeal != fileReport.LastSeal {
		t.Errorf("VerifyPostgres of the copy: %+v\nVerify of the file: %+v", dbReport, fileReport)
	}

	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	view(t, s, func(tx *Tx) error {
		if current, err := keyIndexCurrent(tx); err != nil || !current {
			t.Errorf("key index current on the copy: %v, %v", current, err)
		}
		if err := tx.VerifyAuditChain(); err != nil {
			t.Errorf("audit chain of the copy: %v", err)
		}
		seal, err := tx.LastSeal()
		if err != nil || seal == nil {
			t.Fatalf("last seal of the copy: %v, %v", seal, err)
		}
		if err := VerifySeal(&sealKey.PublicKey, *seal); err != nil {
			t.Errorf("the copy's seal: %v", err)
		}
		c, err := tx.Certificate([]byte{1})
		if err != nil {
			return err
		}
		var found [][]byte
		if err := tx.CertificatesOfKey(c.DER, func(c *Certificate) error { found = append(found, c.Serial); return nil }); err != nil {
			return err
		}
		if len(found) != 1 || !bytes.Equal(found[0], []byte{1}) {
			t.Errorf("the key index on the copy finds %x for certificate 01's key", found)
		}
		// The CRL records read on the copy as on the file.
		var changes []CRLChange
		if err := tx.CRLChanges("ab", 0, func(c CRLChange) error { changes = append(changes, c); return nil }); err != nil {
			return err
		}
		if len(changes) != 1 || changes[0].Seq != 1 || !bytes.Equal(changes[0].Serial, []byte{2}) {
			t.Errorf("the copy's change log: %+v, want certificate 02's revocation", changes)
		}
		der, err := tx.CRLObject("ab", 1, false)
		if err != nil || !bytes.Equal(der, []byte{0x30, 0x01, 0x01}) {
			t.Errorf("the copy's CRL of shard 1: %x, %v", der, err)
		}
		if l, found, err := tx.CRLLayout("ab"); err != nil || !found || l.Shards != 2 || !l.Pinned {
			t.Errorf("the copy's CRL layout: %+v, %v, %v", l, found, err)
		}
		// The OCSP records too: a response, and the due times in order.
		if r, err := tx.OCSPResponse("ab", []byte{1}); err != nil || r == nil || !bytes.Equal(r.DER, migrationOCSPResponse.DER) ||
			!r.ThisUpdate.Equal(migrationOCSPResponse.ThisUpdate) || !r.NextUpdate.Equal(migrationOCSPResponse.NextUpdate) {
			t.Errorf("the copy's OCSP response of 01: %+v, %v", r, err)
		}
		var due []string
		if err := tx.DueOCSP(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), 10, func(issuer string, serial []byte, at time.Time) error {
			due = append(due, fmt.Sprintf("%s %x %s", issuer, serial, at.Format(time.RFC3339)))
			return nil
		}); err != nil {
			return err
		}
		if want := []string{"ab 02 2026-02-01T00:00:00Z", "ab 01 2026-02-07T23:00:00Z"}; !slices.Equal(due, want) {
			t.Errorf("the copy's OCSP due entries: %q, want %q", due, want)
		}
		return nil
	})
	// The store opened on the copy writes on it, as signerd will.
	update(t, s, func(tx *Tx) error {
		_, err := tx.Append(Event{Actor: System, Action: "signerd.start", Outcome: OutcomeOK})
		return err
	})
	view(t, s, func(tx *Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			t.Errorf("audit chain after a write on the copy: %v", err)
		}
		return nil
	})
}

// TestMigrateRefuses: a migration that must not happen is refused with a
// message naming why, and leaves the database as it was.
func TestMigrateRefuses(t *testing.T) {
	server := pgtest.Shared(t)
	source, _ := migrationSource(t)
	tests := []struct {
		name string
		// prepare readies the database (already upgraded unless raw) and
		// returns the file to migrate; it may hold things open until t
		// ends.
		prepare func(t *testing.T, dsn string) string
		raw     bool // a database without signerd's schema
		want    string
		wantErr error
	}{
		{"a database holding records", func(t *testing.T, dsn string) string {
			server.Exec(t, dsn, `INSERT INTO certificates (k, v) VALUES ('\x01', '{}'), ('\x02', '{}')`)
			return source
		}, false, "certificates: 2 records", ErrNotEmpty},
		{"a database a signerd opened", func(t *testing.T, dsn string) string {
			s, err := OpenPostgres(dsn, PostgresOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			return source
		}, false, "meta: 1 record", ErrNotEmpty},
		{"a database a signerd has open", func(t *testing.T, dsn string) string {
			s, err := OpenPostgres(dsn, PostgresOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return source
		}, false, "in use by another signerd", nil},
		{"a database without the schema", func(t *testing.T, dsn string) string { return source },
			true, "signerctl store upgrade --dsn DSN", nil},
		{"a file signerd has open", func(t *testing.T, dsn string) string {
			path := copyFile(t, source)
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return path
		}, false, "in use by another process: stop signerd first", nil},
		{"a file whose audit chain is broken", func(t *testing.T, dsn string) string {
			path := copyFile(t, source)
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketAudit)
				v := bytes.Replace(b.Get(seqKey(2)), []byte("certificate.issue"), []byte("certificate.issuf"), 1)
				return b.Put(seqKey(2), v)
			})
			return path
		}, false, "audit event 3: does not chain to event 2", nil},
		{"a file with a bucket signerd does not know", func(t *testing.T, dsn string) string {
			path := copyFile(t, source)
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("notes"))
				if err != nil {
					return err
				}
				return b.Put([]byte("k"), []byte("v"))
			})
			return path
		}, false, `bucket "notes" is not one of signerd's`, nil},
		{"a file whose key index was deleted", func(t *testing.T, dsn string) string {
			path := copyFile(t, source)
			rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketKeys) })
			return path
		}, false, `bucket "keys" is missing while the key index is recorded current and certificate 01 has a key to index`, nil},
		{"a file whose key index is behind", func(t *testing.T, dsn string) string {
			path := copyFile(t, source)
			rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyKeyIndexAtHead, []byte("h-older")) })
			return path
		}, false, `the key index ("keys") is behind the audit log's head`, nil},
		{"a file that is not there", func(t *testing.T, dsn string) string {
			return filepath.Join(t.TempDir(), "missing.db")
		}, false, "no such file", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := server.CreateDatabase(t)
			if !tc.raw {
				mustUpgrade(t, dsn)
			}
			path := tc.prepare(t, dsn)
			var before map[string][][]byte
			if !tc.raw {
				before = pgTables(t, dsn)
			}
			_, err := MigrateToPostgres(t.Context(), path, dsn)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("migrate: %v; want an error saying %q (errors.Is %v)", err, tc.want, tc.wantErr)
			}
			if tc.raw {
				if v, err := PostgresSchemaVersion(t.Context(), dsn); err != nil || v != 0 {
					t.Errorf("schema version after a refused migration = %d, %v; want 0", v, err)
				}
				return
			}
			if after := pgTables(t, dsn); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("the refused migration changed the database")
			}
		})
	}
}

// TestMigrateFailureLeavesDatabaseEmpty: a failure after some tables were
// copied (the server refusing a record of a later table; a table that
// reads back other than it was sent) leaves every table empty, and the
// database takes a migration once the cause is gone.
func TestMigrateFailureLeavesDatabaseEmpty(t *testing.T) {
	server := pgtest.Shared(t)
	source, _ := migrationSource(t)
	tests := []struct {
		name           string
		sabotage, undo string
		want           string
	}{
		{"the server refuses an audit event",
			"ALTER TABLE audit ADD CONSTRAINT small CHECK (length(v) < 10)",
			"ALTER TABLE audit DROP CONSTRAINT small",
			`copy table audit: ERROR: new row for relation "audit" violates check constraint "small"`},
		{"a table reads back changed",
			`CREATE FUNCTION alter_request() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN NEW.v := NEW.v || '\x20'::bytea; RETURN NEW; END $$;
			CREATE TRIGGER alter_request BEFORE INSERT ON requests FOR EACH ROW EXECUTE FUNCTION alter_request()`,
			"DROP TRIGGER alter_request ON requests",
			"the copy was not kept: table requests reads back as 4 records with SHA-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := newPostgresDatabase(t)
			server.Exec(t, dsn, tc.sabotage)
			_, err := MigrateToPostgres(t.Context(), source, dsn)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("migrate: %v; want an error saying %q", err, tc.want)
			}
			wantEmpty(t, dsn)
			server.Exec(t, dsn, tc.undo)
			if _, err := MigrateToPostgres(t.Context(), source, dsn); err != nil {
				t.Fatalf("migrate once the cause is gone: %v", err)
			}
		})
	}
}

// TestVerifyPostgres: a good store verifies, also while signerd has it
// open; edits made with SQL are named as Verify names them in a file.
func TestVerifyPostgres(t *testing.T) {
	server := pgtest.Shared(t)
	source, _ := migrationSource(t)
	tests := []struct {
		name string
		edit string // SQL; "" for none
		want []string
	}{
		{"untouched", "", nil},
		{"an audit event's bytes changed",
			`UPDATE audit SET v = convert_to(replace(convert_from(v, 'UTF8'), 'certificate.revoke', 'certificate.revokf'), 'UTF8')
			WHERE k = '\x0000000000000003'`,
			[]string{`bucket "audit", event 4: audit event 4: does not chain to event 3`}},
		{"a revoked index row deleted", "DELETE FROM revoked",
			[]string{`bucket "revoked", serial 02: certificate is revoked but not in the index`}},
		{"a table dropped", "DROP TABLE in_flight",
			[]string{`bucket "in_flight": table missing`}},
		{"no schema", "DROP TABLE schema_migrations",
			[]string{`bucket "schema_migrations": missing: the database holds no signerd schema`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := newPostgresDatabase(t)
			if _, err := MigrateToPostgres(t.Context(), source, dsn); err != nil {
				t.Fatal(err)
			}
			if tc.edit != "" {
				server.Exec(t, dsn, tc.edit)
			} else {
				s, err := OpenPostgres(dsn, PostgresOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			r, err := VerifyPostgres(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range r.Findings {
				got = append(got, f.String())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("findings %q; want %d like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("finding %q; want %q", got[i], tc.want[i])
				}
			}
			if tc.edit == "" && (r.Schema != pgSchemaVersionLatest || r.Certificates != 2 || r.Revoked != 1 || r.LastSeal == 0) {
				t.Errorf("report of the untouched copy: %+v", r)
			}
		})
	}
}

// copyFile copies the closed store file at path to a new file of the
// test's.
func copyFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(out, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// rawUpdate edits the file at path with bbolt, as someone editing it by
// hand would.
func rawUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}
