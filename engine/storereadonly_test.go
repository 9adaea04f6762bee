package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
	"signerd/store/pgtest"
)

// setReadOnly makes the store's database read-only, or writable again, for
// sessions that start from now on (ALTER DATABASE … SET
// default_transaction_read_only); readOnly also ends the sessions open now,
// so the store's next connections are new.
func setReadOnly(t *testing.T, at *enginetest.StoreAt, readOnly bool) {
	t.Helper()
	db := pgtest.DatabaseName(t, at.DSN)
	value := "off"
	if readOnly {
		value = "on"
	}
	at.Server.Exec(t, "postgres", "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET default_transaction_read_only = "+value)
	if readOnly {
		at.Server.Exec(t, "postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db)
	}
}

// TestReadOnlyDatabase: a database that answers but takes no writes fails
// requests store_unavailable with no certificate, and health says the
// store is not writable, also when the engine's watcher probes it; reads
// go on. Set writable again (its sessions not ended), the store recovers
// by itself and the request issues. The database is changed alone, so
// the test binary's shared server serves.
func TestReadOnlyDatabase(t *testing.T) {
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStore(t)
	st := at.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	before := issue(t, e, request(t, "before"))

	setReadOnly(t, at, true)
	req := request(t, "during")
	c, err := e.Issue(context.Background(), ra, req)
	wantStoreUnavailable(t, "issue", c, err)
	if s := e.Store(); s.Writable {
		t.Fatalf("store status with the database read-only: %+v", s)
	}
	// What the engine's watcher probes with: it must not find the
	// database writable while it takes no writes.
	if err := st.Probe(); !errors.Is(err, store.ErrWrite) {
		t.Fatalf("probe of a read-only database: %v; want %v", err, store.ErrWrite)
	}
	if rec, err := e.Status(before.Serial); err != nil || rec.Status != store.StatusGood {
		t.Fatalf("status read from a read-only database: %+v, %v", rec, err)
	}

	setReadOnly(t, at, false)
	waitWritable(t, e)
	got := issue(t, e, req)
	verifyChainGMSM(t, ca, got.DER)
	if l := checkLedger(t, st); len(l.certs) != 2 || len(l.burned) != 0 {
		t.Fatalf("store holds %d certificates and %d burned serials; want 2 and none", len(l.certs), len(l.burned))
	}
}

// TestLockedTableKeepsStoreUnwritable: an operator's session holds a lock
// on the certificates table. Requests fail store_unavailable once the
// store's transaction timeout passes, and health stays "not writable"
// while the lock is held, although the watcher's empty probe transaction
// goes through (it touches no table): a write that ran out of time is
// ended only by a recorded batch. The lock released, the request issues
// and health is writable again.
func TestLockedTableKeepsStoreUnwritable(t *testing.T) {
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStore(t)
	at.PostgresOptions.Timeout = time.Second
	st := at.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	issue(t, e, request(t, "before"))

	ctx := context.Background()
	op, err := pgx.Connect(ctx, at.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close(ctx)
	if _, err := op.Exec(ctx, "BEGIN; LOCK TABLE certificates"); err != nil {
		t.Fatal(err)
	}
	req := request(t, "during")
	c, err := e.Issue(ctx, ra, req)
	wantStoreUnavailable(t, "issue under the lock", c, err)
	// Three probes' time: none may call the store writable.
	for range 3 {
		time.Sleep(engine.StoreProbeInterval)
		if s := e.Store(); s.Writable {
			t.Fatalf("store writable while a lock blocks its writes: %+v", s)
		}
	}
	if _, err := op.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	issue(t, e, req)
	if s := e.Store(); !s.Writable {
		t.Fatalf("store status after a recorded batch: %+v", s)
	}
}
