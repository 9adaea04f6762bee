package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"signerd/store/pgtest"
)

func TestPostgresMigrationsAreNumberedInOrder(t *testing.T) {
	for i, m := range pgMigrations {
		if m.Version != i+1 {
			t.Errorf("migration %d has version %d", i, m.Version)
		}
	}
}

func TestPostgresUpgrade(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Shared(t).CreateDatabase(t)
	if v, err := PostgresSchemaVersion(ctx, dsn); err != nil || v != 0 {
		t.Fatalf("schema version of an empty database = %d, %v; want 0", v, err)
	}
	applied, err := UpgradePostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(applied, pgMigrations, func(a, b Migration) bool { return a.Version == b.Version }) {
		t.Errorf("first upgrade applied %v, want every migration", applied)
	}
	if v, err := PostgresSchemaVersion(ctx, dsn); err != nil || v != pgSchemaVersionLatest {
		t.Fatalf("schema version after upgrade = %d, %v; want %d", v, err, pgSchemaVersionLatest)
	}
	applied, err = UpgradePostgres(ctx, dsn)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second upgrade applied %v, %v; want nothing", applied, err)
	}
	b := openTestPostgres(t, dsn, PostgresOptions{})
	mustUpdate(t, b, func(r records) error {
		return putAll(r, tableCerts, "\x01\x02", `{"serial":"AQI=","status":"good"}`)
	})
	// The operators' views read the records.
	pgtest.Shared(t).Exec(t, pgtest.DatabaseName(t, dsn),
		`DO $$ BEGIN IF (SELECT record->>'status' FROM certificate_records WHERE serial = '0102') IS DISTINCT FROM 'good'
		THEN RAISE 'certificate_records does not show the record'; END IF; END $$`)
}

// TestPostgresUpgradeFromVersion2: a database an older signerd created at
// version 2 and wrote to is refused at open, upgraded by the migrations
// from 3,
// and then opens with its records as they were: the CRL state it wrote is
// shard 0's, its CRL read from it; a revocation fills the change log,
// which the operators' view shows.
func TestPostgresUpgradeFromVersion2(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Shared(t).CreateDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range pgMigrations[:2] {
		if _, err := conn.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", m.Version, m.Description); err != nil {
			t.Fatal(err)
		}
	}
	c := fakeCertificate("ab", []byte{0x42})
	cert, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	oldState := `{"next":4,"number":3,"der":"MAA="}`
	if _, err := conn.Exec(ctx, "INSERT INTO certificates (k, v) VALUES ($1, $2)", c.Serial, cert); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO serials (k, v) VALUES ($1, $2)", c.Serial, []byte(`{"request_id":"r-1","state":"issued"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO crl (k, v) VALUES ($1, $2)", []byte("ab"), []byte(oldState)); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if _, err := OpenPostgres(dsn, PostgresOptions{}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("schema version 2; this signerd reads version %d", pgSchemaVersionLatest)) {
		t.Fatalf("open of a version 2 database: %v; want refused, naming the upgrade", err)
	}
	applied, err := UpgradePostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(applied, pgMigrations[2:], func(a, b Migration) bool { return a.Version == b.Version }) {
		t.Fatalf("upgrade from version 2 applied %v, want the migrations from 3", applied)
	}
	if v, err := PostgresSchemaVersion(ctx, dsn); err != nil || v != pgSchemaVersionLatest {
		t.Fatalf("schema version after upgrade = %d, %v; want %d", v, err, pgSchemaVersionLatest)
	}
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	revokedAt := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	update(t, s, func(tx *Tx) error {
		st, err := tx.CRLShardState("ab", 0)
		if err != nil || st.Next != 4 || st.Number != 3 {
			return fmt.Errorf("shard 0 of the version 2 state: %+v, %v", st, err)
		}
		if der, err := tx.CRLObject("ab", 0, false); err != nil || !bytes.Equal(der, []byte{0x30, 0x00}) {
			return fmt.Errorf("the version 2 state's CRL: %x, %v", der, err)
		}
		c, err := tx.Certificate([]byte{0x42})
		if err != nil {
			return err
		}
		c.Status, c.Reason, c.RevokedAt = StatusRevoked, 1, revokedAt
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		return tx.PutCRLObject("ab", 1, true, []byte{0x30, 0x00})
	})
	r, err := VerifyPostgres(ctx, dsn)
	if err != nil || !r.OK() || r.Schema != pgSchemaVersionLatest {
		t.Fatalf("verify after the upgrade: %+v, %v", r, err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var issuer, serial string
	var seq int64
	var at time.Time
	if err := conn.QueryRow(ctx, "SELECT issuer, seq, serial, at FROM crl_change_records").Scan(&issuer, &seq, &serial, &at); err != nil {
		t.Fatal(err)
	}
	if issuer != "ab" || seq != 1 || serial != "42" || !at.Equal(revokedAt) {
		t.Errorf("crl_change_records shows %s %d %s %v; want ab 1 42 %v", issuer, seq, serial, at, revokedAt)
	}
}

func TestPostgresOpenRefuses(t *testing.T) {
	server := pgtest.Shared(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T, dsn string)
		want    string
	}{
		{"a database without the schema", func(t *testing.T, dsn string) {}, "signerctl store upgrade --dsn DSN"},
		{"a newer schema", func(t *testing.T, dsn string) {
			mustUpgrade(t, dsn)
			server.Exec(t, pgtest.DatabaseName(t, dsn), "INSERT INTO schema_migrations (version, description) VALUES ($1, 'later')",
				pgSchemaVersionLatest+1)
		}, "written by a newer signerd"},
		{"a schema missing a table", func(t *testing.T, dsn string) {
			mustUpgrade(t, dsn)
			server.Exec(t, pgtest.DatabaseName(t, dsn), "DROP TABLE ra_replay")
		}, "ra_replay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := server.CreateDatabase(t)
			tc.prepare(t, dsn)
			b, err := openPostgresBackend(dsn, PostgresOptions{})
			if err == nil {
				b.close()
				t.Fatal("open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("open: %v; want a message with %q", err, tc.want)
			}
			// A refused open neither created nor changed the schema.
			if tc.name == "a database without the schema" {
				if v, err := PostgresSchemaVersion(t.Context(), dsn); err != nil || v != 0 {
					t.Errorf("schema version after a refused open = %d, %v; want 0", v, err)
				}
			}
		})
	}
}

func mustUpgrade(t testing.TB, dsn string) {
	t.Helper()
	if _, err := UpgradePostgres(t.Context(), dsn); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresInUse(t *testing.T) {
	dsn := newPostgresDatabase(t)
	first, err := openPostgresBackend(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := openPostgresBackend(dsn, PostgresOptions{}); err == nil || !strings.Contains(err.Error(), "in use by another signerd") {
		if err == nil {
			b.close()
		}
		t.Errorf("second open: %v; want refused as in use by another signerd", err)
	}
	if _, err := UpgradePostgres(t.Context(), dsn); err == nil || !strings.Contains(err.Error(), "in use by another signerd") {
		t.Errorf("upgrade while open: %v; want refused as in use by another signerd", err)
	}
	// Another database of the same server is another store.
	openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	if err := first.close(); err != nil {
		t.Fatal(err)
	}
	openTestPostgres(t, dsn, PostgresOptions{})
}

func TestPostgresPasswordNotShown(t *testing.T) {
	const password = "s3cr3t-pw"
	dsns := []string{
		"postgres://signerd:" + password + "@localhost:notaport/signerd",
		"postgres://signerd:" + password + "@[::1/signerd",
		"postgres://signerd:" + password + "@localhost/signerd?pool_max_conns=many",
		"host=localhost port=notaport user=signerd password=" + password,
		"host=localhost user=signerd password='" + password + "' sslmode=bogus",
		"host=/nonexistent/socket/dir user=signerd password=" + password + " connect_timeout=5",
		"postgres://signerd:" + password + "@localhost:1/signerd?connect_timeout=5",
	}
	for _, dsn := range dsns {
		var errs []error
		if b, err := openPostgresBackend(dsn, PostgresOptions{}); err == nil {
			b.close()
			t.Errorf("open %q succeeded", dsn)
		} else {
			errs = append(errs, err)
		}
		_, err := UpgradePostgres(t.Context(), dsn)
		errs = append(errs, err)
		_, err = PostgresSchemaVersion(t.Context(), dsn)
		errs = append(errs, err)
		for _, err := range errs {
			if err == nil {
				t.Errorf("%q: no error", dsn)
			} else if strings.Contains(err.Error(), password) {
				t.Errorf("the error shows the password: %v", err)
			}
		}
	}
}

// TestPostgresRestart stops and restarts a server of its own under open
// backends, which must come back without being reopened.
func TestPostgresRestart(t *testing.T) {
	server := pgtest.Start(t)
	newDatabase := func(t *testing.T) string {
		dsn := server.CreateDatabase(t)
		mustUpgrade(t, dsn)
		return dsn
	}

	t.Run("unavailable while down, back after", func(t *testing.T) {
		b := openTestPostgres(t, newDatabase(t), PostgresOptions{})
		mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "before", "1") })

		server.Stop(t)
		err := b.update(func(r records) error { return putAll(r, tableCerts, "while down", "2") })
		if !errors.Is(err, ErrWrite) {
			t.Errorf("update with the server down: %v; want ErrWrite", err)
		}
		err = b.view(func(r records) error { _, err := r.get(tableCerts, []byte("before")); return err })
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("view with the server down: %v; want ErrUnavailable", err)
		}

		server.Restart(t)
		mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "after", "3") })
		mustView(t, b, func(r records) error {
			wantRecords(t, r, tableCerts, "after", "3", "before", "1")
			return nil
		})
	})

	t.Run("in-use lock retaken", func(t *testing.T) {
		dsn := newDatabase(t)
		first := openTestPostgres(t, dsn, PostgresOptions{})

		// The restart ends the session holding first's in-use lock:
		// another signerd can now open the database, and first must not
		// write.
		server.Stop(t)
		server.Restart(t)
		second, err := openPostgresBackend(dsn, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		err = first.update(func(r records) error { return putAll(r, tableCerts, "k", "first") })
		if !errors.Is(err, ErrWrite) || !strings.Contains(err.Error(), "in use by another signerd") {
			t.Errorf("update while another signerd holds the database: %v; want ErrWrite naming it", err)
		}
		if err := second.close(); err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, first, func(r records) error { return putAll(r, tableCerts, "k", "first") })
		if b, err := openPostgresBackend(dsn, PostgresOptions{}); err == nil {
			b.close()
			t.Error("open succeeded after first took the in-use lock again")
		}
	})
}

// TestPostgresReadOnly: a database that takes no writes (a standby, here
// a database whose transactions are read-only) fails writes as ErrWrite.
func TestPostgresReadOnly(t *testing.T) {
	dsn := newPostgresDatabase(t)
	db := pgtest.DatabaseName(t, dsn)
	pgtest.Shared(t).Exec(t, db, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET default_transaction_read_only = on")
	b := openTestPostgres(t, dsn, PostgresOptions{})
	err := b.update(func(r records) error { return putAll(r, tableCerts, "k", "v") })
	if !errors.Is(err, ErrWrite) || !errors.Is(err, errReadOnlySession) {
		t.Errorf("update of a read-only database: %v; want ErrWrite (read-only)", err)
	}
	// An empty transaction (the engine's probe) must not pass either.
	if err := b.update(func(records) error { return nil }); !errors.Is(err, errReadOnlySession) {
		t.Errorf("empty update of a read-only database: %v; want it refused", err)
	}
	mustView(t, b, func(r records) error {
		wantRecords(t, r, tableCerts)
		return nil
	})
}

// TestPostgresBatchRoundTrips: a write transaction costs the same round
// trips and statements whatever the number of records it writes.
func TestPostgresBatchRoundTrips(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	cost := func(n int) (requests, statements int64) {
		b.ending.Wait() // a view's end, sent after it returned, is not this transaction's
		r0, s0 := b.traffic.requests.Load(), b.traffic.statements.Load()
		mustUpdate(t, b, func(r records) error {
			for i := range n {
				key := fmt.Appendf(nil, "%d-%08d", n, i)
				if err := errors.Join(r.put(tableCerts, key, key), r.put(tableAudit, key, key),
					r.delete(tableSerials, key)); err != nil {
					return err
				}
			}
			return nil
		})
		return b.traffic.requests.Load() - r0, b.traffic.statements.Load() - s0
	}
	fewRequests, fewStatements := cost(10)
	manyRequests, manyStatements := cost(1000)
	if fewRequests != manyRequests || manyRequests > 2 || fewStatements != manyStatements {
		t.Errorf("a write transaction of 10 records took %d requests (%d statements), of 1000 records %d (%d); "+
			"want the same, at most 2 requests", fewRequests, fewStatements, manyRequests, manyStatements)
	}
	mustView(t, b, func(r records) error {
		for _, table := range []string{tableCerts, tableAudit} {
			n := 0
			if err := r.scan(table, nil, nil, func(k, v []byte) error { n++; return nil }); err != nil {
				return err
			}
			if n != 1010 {
				t.Errorf("%s holds %d records, want 1010", table, n)
			}
		}
		return nil
	})
}

// TestPostgresViewSnapshot: every page of a scan in a read transaction
// comes from the same snapshot, whatever is written meanwhile.
func TestPostgresViewSnapshot(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	const n = 2*pgScanPage + 1
	mustUpdate(t, b, func(r records) error {
		for i := range n {
			if err := r.put(tableAudit, fmt.Appendf(nil, "%08d", i), nil); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, b, func(r records) error {
		seen := 0
		err := r.scan(tableAudit, nil, nil, func(k, v []byte) error {
			if seen++; seen == 1 {
				mustUpdate(t, b, func(w records) error {
					return errors.Join(w.clear(tableAudit), w.put(tableAudit, []byte("new"), nil))
				})
			}
			return nil
		})
		if seen != n {
			t.Errorf("scan saw %d records, want the %d of its snapshot", seen, n)
		}
		wantValue(t, r, tableAudit, "new", nil)
		return err
	})
	mustView(t, b, func(r records) error {
		wantRecords(t, r, tableAudit, "new", "")
		return nil
	})
}

// TestPostgresCommitOutcome: a commit whose answer was lost is ErrWrite
// whatever the server says of it (committed on the primary is not
// confirmed on a synchronous standby), the message saying what it knows.
func TestPostgresCommitOutcome(t *testing.T) {
	dsn := newPostgresDatabase(t)
	b := openTestPostgres(t, dsn, PostgresOptions{Timeout: 500 * time.Millisecond})
	cause := errors.New("connection lost")
	tests := []struct {
		name string
		end  string // how the transaction ends; "" leaves it open
		want string // "" for success
	}{
		{"committed", "COMMIT", "not confirmed"},
		{"aborted", "ROLLBACK", "connection lost"},
		{"still running", "", "outcome unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.WithoutCancel(ctx))
			var xid int64
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, "SELECT txid_current()").Scan(&xid); err != nil {
				t.Fatal(err)
			}
			if tc.end != "" {
				if _, err := conn.Exec(ctx, tc.end); err != nil {
					t.Fatal(err)
				}
			}
			err = b.commitOutcome(xid, cause)
			switch {
			case !errors.Is(err, ErrWrite) || !strings.Contains(err.Error(), tc.want):
				t.Errorf("outcome: %v; want ErrWrite saying %q", err, tc.want)
			}
		})
	}
}

// TestPostgresConnectionLostBeforeCommit: the session of a write
// transaction ends before its commit reaches the server: the update fails
// as ErrWrite, nothing of it is written, and the next one succeeds.
func TestPostgresConnectionLostBeforeCommit(t *testing.T) {
	dsn := newPostgresDatabase(t)
	b := openTestPostgres(t, dsn, PostgresOptions{})
	b.testHookBeforeCommit = func(pid uint32) {
		pgtest.Shared(t).Exec(t, pgtest.DatabaseName(t, dsn), "SELECT pg_terminate_backend($1)", int32(pid))
	}
	err := b.update(func(r records) error { return putAll(r, tableCerts, "lost", "1") })
	if !errors.Is(err, ErrWrite) {
		t.Errorf("update whose session ended before commit: %v; want ErrWrite", err)
	}
	b.testHookBeforeCommit = nil
	mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "kept", "2") })
	mustView(t, b, func(r records) error {
		wantRecords(t, r, tableCerts, "kept", "2")
		return nil
	})
}

func TestPostgresStatementErrorsAreNotUnavailability(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	err := b.update(func(r records) error { return r.put("no-such-table", []byte("k"), nil) })
	if err == nil || errors.Is(err, ErrWrite) {
		t.Errorf("put to an unknown table: %v; want an error that is not ErrWrite", err)
	}
}

func TestPostgresInfrastructureError(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "08006"}, true},
		{&pgconn.PgError{Code: "57P01", Severity: "FATAL"}, true},
		{&pgconn.PgError{Code: "57P03", Severity: "FATAL"}, true},
		{&pgconn.PgError{Code: "25006"}, true},
		{&pgconn.PgError{Code: "53100"}, true},
		{&pgconn.PgError{Code: "58030"}, true},
		{&pgconn.PgError{Code: "57014"}, true},
		{fmt.Errorf("commit: %w", io.ErrUnexpectedEOF), true},
		{context.DeadlineExceeded, true},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "42P01"}, false},
		{fmt.Errorf("get: %w", &pgconn.PgError{Code: "22021"}), false},
	}
	for _, tc := range tests {
		if got := pgInfrastructureError(tc.err); got != tc.want {
			t.Errorf("pgInfrastructureError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ prefix, want []byte }{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte("ab"), []byte("ac")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte("\xff\xff"), nil},
		{[]byte("a\x00"), []byte("a\x01")},
	}
	for _, tc := range tests {
		if got := prefixEnd(tc.prefix); string(got) != string(tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("prefixEnd(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

// benchmarkBatch measures a write transaction of 64 certificate-sized
// records, the engine's largest batch.
func benchmarkBatch(b *testing.B, be backend) {
	value := []byte(strings.Repeat("c", 1200))
	n := 0
	for b.Loop() {
		if err := be.update(func(r records) error {
			for range 64 {
				n++
				if err := r.put(tableCerts, fmt.Appendf(nil, "%016x", n), value); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkPostgresBatch(b *testing.B) {
	benchmarkBatch(b, openTestPostgres(b, newPostgresDatabase(b), PostgresOptions{}))
}

// BenchmarkBoltBatch is the same transaction on a bbolt file, for
// comparison.
func BenchmarkBoltBatch(b *testing.B) {
	bb, err := openBoltBackend(filepath.Join(b.TempDir(), "store.db"), Options{InitialMmapSize: DefaultInitialMmapSize})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.close()
	benchmarkBatch(b, bb)
}

// TestPostgresKeyIndexBehindIsRebuiltAtOpen: the key index is rebuilt at
// open when its mark in the meta table is not the audit log's head, as an
// edit with psql or an older signerd leaves it, and only then.
func TestPostgresKeyIndexBehindIsRebuiltAtOpen(t *testing.T) {
	t.Parallel()
	server := pgtest.Shared(t)
	dsn := newPostgresDatabase(t)
	a, keyA := testCertificate(t, 1)
	b, keyB := testCertificate(t, 2)
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *Tx) error {
		if err := errors.Join(tx.PutCertificate(a), tx.PutCertificate(b)); err != nil {
			return err
		}
		_, err := tx.Append(Event{Actor: System, Action: "certificate.issue", Outcome: OutcomeOK})
		return err
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		sql     string // run after the index is emptied; "" for none
		args    []any
		rebuilt bool
	}{
		{"mark at the head", "", nil, false},
		{"mark differs", "UPDATE meta SET v = $2 WHERE k = $1", []any{keyKeyIndexAtHead, []byte("h-stale")}, true},
		{"mark removed", "DELETE FROM meta WHERE k = $1", []any{keyKeyIndexAtHead}, true},
		{"head moved", "UPDATE meta SET v = $2 WHERE k = $1", []any{keyAuditHead, []byte(`{"seq":9,"hash":"AA=="}`)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server.Exec(t, dsn, `DELETE FROM "keys"`)
			if tc.sql != "" {
				server.Exec(t, dsn, tc.sql, tc.args...)
			}
			s, err := OpenPostgres(dsn, PostgresOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var wantA, wantB [][]byte
			if tc.rebuilt {
				wantA, wantB = [][]byte{{1}}, [][]byte{{2}}
			}
			if got := withKey(t, s, keyA); !slices.EqualFunc(got, wantA, slices.Equal) {
				t.Errorf("certificates of key A: %x, want %x", got, wantA)
			}
			if got := withKey(t, s, keyB); !slices.EqualFunc(got, wantB, slices.Equal) {
				t.Errorf("certificates of key B: %x, want %x", got, wantB)
			}
			view(t, s, func(tx *Tx) error {
				if current, err := keyIndexCurrent(tx); err != nil || !current {
					t.Errorf("after open the index is noted at the head: %v, %v", current, err)
				}
				return nil
			})
		})
	}
}

// TestPostgresLostCommitLeavesNeitherChangeNorEvent: a transaction whose
// session ends before its commit reaches the server fails as ErrWrite and
// leaves the store as it was, its certificate and its audit event alike;
// the same transaction then succeeds.
func TestPostgresLostCommitLeavesNeitherChangeNorEvent(t *testing.T) {
	t.Parallel()
	dsn := newPostgresDatabase(t)
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var certs []*Certificate
	for i := range 2 {
		c, _ := testCertificate(t, byte(i+1))
		c.RequestID, c.NotBefore = fmt.Sprintf("r-%d", i+1), time.Date(2026, 12, 1, i, 0, 0, 0, time.UTC)
		certs = append(certs, c)
	}
	update(t, s, func(tx *Tx) error { return issue(tx, certs[0]) })
	before := dump(t, s)
	pg := s.b.(*pgBackend)
	pg.testHookBeforeCommit = func(pid uint32) {
		pgtest.Shared(t).Exec(t, dsn, "SELECT pg_terminate_backend($1)", int32(pid))
	}
	err = s.Update(func(tx *Tx) error { return issue(tx, certs[1]) })
	pg.testHookBeforeCommit = nil
	if !errors.Is(err, ErrWrite) {
		t.Fatalf("update whose session ended before commit: %v; want ErrWrite", err)
	}
	wantSameDump(t, "after the lost commit", before, dump(t, s))
	update(t, s, func(tx *Tx) error { return issue(tx, certs[1]) })
	if got, want := auditEvents(t, s), []string{"1 01", "2 02"}; !slices.Equal(got, want) {
		t.Errorf("audit log %q, want %q", got, want)
	}
}

// TestPostgresSessionSettings: signerd's sessions end a transaction left
// idle past the store's timeout, and price sequential scans out of their
// plans without compiling them.
func TestPostgresSessionSettings(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{Timeout: 3 * time.Second})
	conn, err := b.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for setting, want := range map[string]string{"idle_in_transaction_session_timeout": "3s", "enable_seqscan": "off", "jit": "off"} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", setting, got, err, want)
		}
	}
}

// TestPostgresKeptPlansUseIndex: a plan the server keeps for a statement
// of the store, made while its table held a few rows and was analyzed so,
// still reads the table by its index once the table has grown thousands
// of rows past its statistics (autovacuum has not analyzed it again).
// Without the session's settings, that kept plan is a sequential scan.
func TestPostgresKeptPlansUseIndex(t *testing.T) {
	dsn := newPostgresDatabase(t)
	server := pgtest.Shared(t)
	b := openTestPostgres(t, dsn, PostgresOptions{})
	conn, err := b.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	grow := func(table string, rows int) {
		t.Helper()
		server.Exec(t, dsn, fmt.Sprintf(`INSERT INTO %s (k, v) SELECT 'ab'::bytea || uuid_send(gen_random_uuid()), '\x00'::bytea FROM generate_series(1, %d)`,
			pgTableIdentifier(table), rows))
	}
	for _, table := range []string{tableSerials, tableKeys} {
		server.Exec(t, dsn, fmt.Sprintf("ALTER TABLE %s SET (autovacuum_enabled = false)", pgTableIdentifier(table)))
		grow(table, 10)
		server.Exec(t, dsn, "ANALYZE "+pgTableIdentifier(table))
	}
	key, end := `'\x6162ff'::bytea`, `'\x6163'::bytea`
	keys := `ARRAY['\x6162ff'::bytea, '\x616200'::bytea]`
	serials := pgStatements[tableSerials]
	statements := []struct {
		name, sql, args string
	}{
		{"get", serials.get, key},
		{"read", serials.read, keys},
		{"delete", serials.delete, keys},
		{"scan", serials.scan, key + ", 10"},
		{"scanBefore", serials.scanBefore, key + ", " + end + ", 10"},
		{"scanRange", serials.scanRange, key + ", " + end + ", 10"},
		{"read key prefixes", pgReadKeyPrefixes, keys + ", " + keys},
	}
	// Each run five times planned for its arguments, and then kept: the
	// server's plan_cache_mode = auto.
	for i, st := range statements {
		if _, err := conn.Exec(t.Context(), fmt.Sprintf("PREPARE kept%d AS %s", i, st.sql)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for range 6 {
			if _, err := conn.Exec(t.Context(), fmt.Sprintf("EXECUTE kept%d(%s)", i, st.args)); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
	}
	grow(tableSerials, 5000)
	grow(tableKeys, 5000)
	for i, st := range statements {
		rows, err := conn.Query(t.Context(), fmt.Sprintf("EXPLAIN EXECUTE kept%d(%s)", i, st.args), pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "Index") || strings.Contains(plan, "Seq Scan") {
			t.Errorf("%s: the kept plan on a table grown past its statistics:\n%s\nwant the primary key's index", st.name, plan)
		}
	}
}

// TestPostgresScanRangePlan: scanRange's statement reads a range by the
// primary key's index in key order even when the table's statistics are
// far behind it (never analyzed, as after bulk revocations autovacuum has
// not caught up with): one page's rows from lo, not the whole rest of the
// range sorted for each page.
func TestPostgresScanRangePlan(t *testing.T) {
	dsn := newPostgresDatabase(t)
	server := pgtest.Shared(t)
	server.Exec(t, dsn, "ALTER TABLE revoked SET (autovacuum_enabled = false)")
	server.Exec(t, dsn, `INSERT INTO revoked (k, v)
		SELECT 'ab'::bytea || '\x00'::bytea || uuid_send(gen_random_uuid()), '\x00'::bytea FROM generate_series(1, 50000)`)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "SET plan_cache_mode = force_custom_plan"); err != nil {
		t.Fatal(err)
	}
	plan := func(sql string, args ...any) string {
		t.Helper()
		rows, err := conn.Query(t.Context(), "EXPLAIN "+sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	lo, hi := []byte("ab\x00\x40"), []byte("ab\x01")
	sql := pgStatements[tableRevoked]
	got := plan(sql.scanRange, lo, hi, pgRangePage)
	if !strings.Contains(got, "Index Scan using revoked_pkey") || strings.Contains(got, "Sort") || strings.Contains(got, "Bitmap") {
		t.Errorf("scanRange's plan on a table never analyzed:\n%s\nwant an index scan in key order, no sort", got)
	}
	t.Logf("the plan of the two-sided range on the same table:\n%s", plan(sql.scanBefore, lo, hi, pgRangePage))
}
