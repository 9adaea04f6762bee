package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"signerd/store/pgtest"
)

// engine is one of the store's backends as its tests open it. The tests of
// records and rules run on every engine (forEachEngine): each promise the
// store makes holds on both.
type engine struct {
	name string
	// create makes the place of a new, empty store: a file's path or a
	// database's DSN (on the test binary's shared server, schema applied).
	create func(t *testing.T) string
	// openAt opens the store at where as signerd does.
	openAt func(where string) (*Store, error)
	// openBare opens the records at where without Store's open, which
	// makes the derived indexes whole: how an older signerd or an
	// operator editing the records sees them.
	openBare func(where string) (backend, error)
	// writeSchemaVersion records, in the closed store at where, that its
	// records are of schema version v, where the engine records it: the
	// file's meta bucket, the database's schema_migrations.
	writeSchemaVersion func(t *testing.T, where string, v int)
	// version is the schema version the engine's stores are at.
	version int
}

var engines = []engine{
	{
		name:    "bolt",
		version: SchemaVersion,
		create:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "signerd.db") },
		openAt:  Open,
		openBare: func(path string) (backend, error) {
			b, err := openBoltBackend(path, Options{})
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		writeSchemaVersion: func(t *testing.T, path string, v int) {
			t.Helper()
			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(v)))
			}); err != nil {
				t.Fatal(err)
			}
		},
	},
	{
		name:    "postgres",
		version: pgSchemaVersionLatest,
		create:  func(t *testing.T) string { return newPostgresDatabase(t) },
		openAt:  func(dsn string) (*Store, error) { return OpenPostgres(dsn, PostgresOptions{}) },
		openBare: func(dsn string) (backend, error) {
			b, err := openPostgresBackend(dsn, PostgresOptions{})
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		writeSchemaVersion: func(t *testing.T, dsn string, v int) {
			t.Helper()
			server := pgtest.Shared(t)
			server.Exec(t, dsn, "DELETE FROM schema_migrations WHERE version > $1", v)
			server.Exec(t, dsn, `INSERT INTO schema_migrations (version, description)
				SELECT n, 'a later version' FROM generate_series(1, $1::int) AS n ON CONFLICT DO NOTHING`, v)
		},
	},
}

// forEachEngine runs test once per engine, as subtests named after the
// engines. The test and its subtests run in parallel with the package's
// other parallel tests: each has a store of its own, and most of their
// time is the database server's.
func forEachEngine(t *testing.T, test func(t *testing.T, e engine)) {
	t.Helper()
	t.Parallel()
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			test(t, e)
		})
	}
}

// open opens the store at where; it is closed when the test ends unless
// the test closed it before.
func (e engine) open(t *testing.T, where string) *Store {
	t.Helper()
	s, err := e.openAt(where)
	if err != nil {
		t.Fatalf("open %s store: %v", e.name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s store: %v", e.name, err)
		}
	})
	return s
}

// openNew is a new, empty, open store.
func (e engine) openNew(t *testing.T) *Store {
	t.Helper()
	return e.open(t, e.create(t))
}

// reopen closes s and opens the store at where again, as a restarted
// signerd does.
func (e engine) reopen(t *testing.T, s *Store, where string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("close %s store: %v", e.name, err)
	}
	return e.open(t, where)
}

// edit writes to the closed store at where through its records, in one
// transaction and behind Tx's back: no rule checked, no index noted. It is
// how the tests play an older signerd, a damaged store or an operator's
// edit on either engine.
func (e engine) edit(t *testing.T, where string, fn func(r records) error) {
	t.Helper()
	b, err := e.openBare(where)
	if err != nil {
		t.Fatalf("open %s records: %v", e.name, err)
	}
	if err := b.update(fn); err != nil {
		b.close()
		t.Fatalf("edit %s records: %v", e.name, err)
	}
	if err := b.close(); err != nil {
		t.Fatalf("close %s records: %v", e.name, err)
	}
}

// dump is every record of every table of s, as "table key=value" lines in
// table and key order, for comparing whole stores.
func dump(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	err := s.b.view(func(r records) error {
		for _, table := range tables {
			if err := r.scan(table, nil, nil, func(k, v []byte) error {
				out = append(out, fmt.Sprintf("%s %x=%x", table, k, v))
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump the store: %v", err)
	}
	return out
}

// wantSameDump fails the test, naming the first difference, unless before
// and after hold the same records.
func wantSameDump(t *testing.T, what string, before, after []string) {
	t.Helper()
	if slices.Equal(before, after) {
		return
	}
	for i := range max(len(before), len(after)) {
		var b, a string
		if i < len(before) {
			b = before[i]
		}
		if i < len(after) {
			a = after[i]
		}
		if b != a {
			t.Fatalf("%s: record %d was %q, is %q (%d records before, %d after)", what, i, b, a, len(before), len(after))
		}
	}
}

// auditEvents is the sequence numbers and objects of the audit log.
func auditEvents(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	view(t, s, func(tx *Tx) error {
		return tx.Events(1, func(e Event, _ []byte) error {
			out = append(out, fmt.Sprintf("%d %s", e.Seq, e.Object))
			return nil
		})
	})
	return out
}

// hasRecord reports whether table holds key.
func hasRecord(t *testing.T, s *Store, table string, key []byte) bool {
	t.Helper()
	var found bool
	if err := s.b.view(func(r records) error {
		v, err := r.get(table, key)
		found = v != nil
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// TestEnginesHoldTheSameRecords: the same history written to each engine
// leaves the same bytes under the same keys in every table, and a reopen
// changes none of them: a store moves from one engine to the other record
// for record.
func TestEnginesHoldTheSameRecords(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	var certs []*Certificate
	for i := range 2 {
		c, _ := testCertificate(t, byte(i+1))
		c.RequestID = fmt.Sprintf("r-%d", i+1)
		c.Profile, c.Subject = "person-sign", fmt.Sprintf("CN=holder %d", i+1)
		c.NotBefore, c.NotAfter = at.Add(time.Duration(i)*time.Hour), at.AddDate(1, 0, 0)
		certs = append(certs, c)
	}
	history := func(t *testing.T, s *Store) {
		t.Helper()
		for _, c := range certs {
			update(t, s, func(tx *Tx) error { return issue(tx, c) })
		}
		update(t, s, func(tx *Tx) error {
			c, err := tx.Certificate(certs[1].Serial)
			if err != nil {
				return err
			}
			c.Status, c.RevokedAt, c.Reason = StatusRevoked, at.Add(2*time.Hour), 1
			if err := tx.PutCertificate(c); err != nil {
				return err
			}
			if err := tx.MarkKeyCompromised([]byte("digest of key 2"), c.Serial); err != nil {
				return err
			}
			if err := tx.Count(Month(c.RevokedAt), c.Profile, StatRevoked, 1); err != nil {
				return err
			}
			if err := tx.PutCRLState(c.Issuer, CRLState{Next: 2, ThisUpdate: c.RevokedAt, NextUpdate: c.RevokedAt.Add(24 * time.Hour), DER: []byte("crl 1")}); err != nil {
				return err
			}
			if err := errors.Join(tx.PutCRLLayout(c.Issuer, CRLLayout{Shards: 2, URL: "http://crl/{shard}", Pinned: true}),
				tx.PutCRLShardState(c.Issuer, 1, CRLState{Next: 3, Number: 2, BaseSeq: 1, Claim: &CRLClaim{Node: "n1", Until: at}}),
				tx.PutCRLObject(c.Issuer, 1, true, []byte("delta crl 2"))); err != nil {
				return err
			}
			if err := errors.Join(tx.MarkOCSPDue(c.Issuer, certs[0].Serial, at),
				tx.PutOCSPResponse(&OCSPResponse{Issuer: c.Issuer, Serial: c.Serial, ThisUpdate: c.RevokedAt,
					NextUpdate: c.RevokedAt.Add(24 * time.Hour), DER: []byte{0x30, 0x01, 0x02}}, c.RevokedAt.Add(12*time.Hour))); err != nil {
				return err
			}
			_, err = tx.Append(Event{Time: c.RevokedAt, Actor: System, Action: "certificate.revoke", Object: HexSerial(c.Serial), Outcome: OutcomeOK})
			return err
		})
		update(t, s, func(tx *Tx) error {
			return errors.Join(tx.ReserveSerial([]byte{3}, "r-3"),
				tx.PutRequest(&Request{ID: "r-3", State: RequestSigning, Serial: []byte{3}, TBS: []byte("tbs"), Created: at}),
				tx.ReserveSerial([]byte{4}, "r-4"), tx.SetSerialState([]byte{4}, SerialBurned),
				tx.PutRequest(&Request{ID: "r-4", State: RequestFailed, Serial: []byte{4}, Burned: [][]byte{{4}}, Created: at}),
				tx.RaiseRAReplayMark([]byte{0x77}, at))
		})
		update(t, s, func(tx *Tx) error {
			_, err := tx.Append(Event{Time: at.Add(3 * time.Hour), Actor: System, Action: "audit.seal", Outcome: OutcomeOK,
				Seal: &Seal{KeyID: []byte("audit key"), Signature: []byte("signature")}})
			return err
		})
	}
	// The file also keeps its schema version among its records; the
	// database keeps it in schema_migrations.
	fileSchema := fmt.Sprintf("%s %x=", tableMeta, keySchema)
	dumps := make([][]string, len(engines))
	t.Run("write", func(t *testing.T) {
		for i, e := range engines {
			t.Run(e.name, func(t *testing.T) {
				t.Parallel()
				where := e.create(t)
				s := e.open(t, where)
				history(t, s)
				written := slices.DeleteFunc(dump(t, s), func(r string) bool { return strings.HasPrefix(r, fileSchema) })
				reopened := slices.DeleteFunc(dump(t, e.reopen(t, s, where)), func(r string) bool { return strings.HasPrefix(r, fileSchema) })
				wantSameDump(t, "reopened", written, reopened)
				dumps[i] = written
			})
		}
	})
	for _, table := range tables {
		if !slices.ContainsFunc(dumps[0], func(r string) bool { return strings.HasPrefix(r, table+" ") }) {
			t.Errorf("the history leaves table %s empty", table)
		}
	}
	for i := 1; i < len(engines); i++ {
		wantSameDump(t, engines[i].name+" against "+engines[0].name, dumps[0], dumps[i])
	}
}
