package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// storeStatus is e.Store(), which must answer at once even while the
// store's writes hang.
func storeStatus(t *testing.T, e *engine.Engine) engine.StoreStatus {
	t.Helper()
	out := make(chan engine.StoreStatus, 1)
	go func() { out <- e.Store() }()
	select {
	case s := <-out:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("Store() waits on the store")
		return engine.StoreStatus{}
	}
}

// TestStalledWritesAreReportedAndAudited stalls the store's writes for
// real, on each engine. bbolt: a read transaction held open while writes
// grow a store opened without a reserved map makes them wait in bbolt's
// remap. PostgreSQL: another session (an operator's, a migration's) holds
// a lock on the audit table, which every write transaction appends to.
// The engine reports the store stalled (not writable) without waiting on
// it; once the stall ends, the writes complete and the stall is one
// store.stalled audit event, however many writes waited.
func TestStalledWritesAreReportedAndAudited(t *testing.T) {
	for _, se := range enginetest.Stores {
		t.Run(se.Name, func(t *testing.T) {
			var st *store.Store
			var stall func() (release func())
			switch se.Name {
			case enginetest.Bolt:
				var err error
				st, err = store.OpenWith(filepath.Join(t.TempDir(), "signerd.db"), store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				stall = func() func() { return holdReader(st) }
			case enginetest.Postgres:
				at := se.New(t)
				// Longer than the test: the writes wait rather than fail.
				at.PostgresOptions.Timeout = 5 * time.Minute
				st = at.Open(t)
				stall = func() func() { return lockTable(t, at, "audit") }
			default:
				t.Fatalf("no stall for store engine %s", se.Name)
			}
			testStalledWrites(t, st, stall)
		})
	}
}

// holdReader holds a read transaction on st open until release is called.
func holdReader(st *store.Store) (release func()) {
	reading, done := make(chan struct{}), make(chan struct{})
	readerDone := make(chan error, 1)
	go func() { readerDone <- st.View(func(*store.Tx) error { close(reading); <-done; return nil }) }()
	<-reading
	return func() { close(done); <-readerDone }
}

// lockTable has a session of its own hold an EXCLUSIVE lock on table of
// the store's database (reads go on, writes wait) until release is called.
func lockTable(t *testing.T, at *enginetest.StoreAt, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, at.DSN)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{table}.Sanitize()+" IN EXCLUSIVE MODE")
	}
	if err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	return func() {
		if err := tx.Rollback(ctx); err != nil {
			t.Errorf("release the lock on %s: %v", table, err)
		}
		conn.Close(ctx)
	}
}

// testStalledWrites runs writers into stall's stall and checks what the
// engine reports and audits.
func testStalledWrites(t *testing.T, st *store.Store, stall func() (release func())) {
	ca := enginetest.NewCA(t)
	e := ca.Engine(t, st, engine.Config{WriteStallAfter: 2 * time.Second})
	if s := storeStatus(t, e); !s.Writable || s.Stalled {
		t.Fatalf("store status at start: %+v", s)
	}

	var once sync.Once
	release := stall()
	end := func() { once.Do(release) }
	defer end()

	// Writers run into the stall (on bbolt, they grow the file until it
	// must be remapped, which waits for the reader); the writes behind
	// wait too.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := e.Audit(store.Event{Actor: store.System, Action: "test.write", Object: fmt.Sprintf("%d/%d", w, i),
					Outcome: store.OutcomeOK, Detail: strings.Repeat("x", 64<<10)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var stalled engine.StoreStatus
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if stalled = storeStatus(t, e); stalled.Stalled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store not reported stalled after 20s: %+v", stalled)
		}
	}
	if stalled.Writable || !strings.Contains(stalled.Error, "writes stalled") || stalled.Since.IsZero() {
		t.Errorf("stalled store's status: %+v", stalled)
	}

	close(stop)
	end()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a write failed: %v", err)
	}
	if s := storeStatus(t, e); !s.Writable || s.Stalled {
		t.Fatalf("store status once writes complete: %+v", s)
	}
	var stalls []store.Event
	for _, ev := range events(t, st) {
		if ev.Action == "store.stalled" {
			stalls = append(stalls, ev)
		}
	}
	if len(stalls) != 1 || stalls[0].Outcome != store.OutcomeFailed || !strings.HasPrefix(stalls[0].Reason, "no store write completed for ") {
		t.Fatalf("store.stalled events: %+v", stalls)
	}
	// The chain still holds.
	if err := st.View(func(tx *store.Tx) error { return tx.VerifyAuditChain() }); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
}
