package engine_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

var backupOperator = store.Actor{UID: 1001, GID: 1001, Role: "operator"}

// lastBackupEvent is the last store.backup event in st.
func lastBackupEvent(t *testing.T, st *store.Store) store.Event {
	t.Helper()
	evs := eventsOf(t, st, "store.backup")
	if len(evs) == 0 {
		t.Fatal("no store.backup event")
	}
	return evs[len(evs)-1]
}

// TestStoreBackupOneAtATime: while one backup's copy is held by a client
// that has not read it, a second backup is refused at once with
// backup_in_progress (retryable) and audited as failed, with no second
// copy made; once the first send ends, the next backup is made.
func TestStoreBackupOneAtATime(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 1 << 20, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))
	holding, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, _, err := receiveBackup(e, func(engine.StoreBackup) { close(holding); <-release })
		first <- err
	}()
	<-holding
	called := false
	err := e.BackupStore(context.Background(), backupOperator, func(engine.StoreBackup, io.Reader) error {
		called = true
		return nil
	})
	var ee *engine.Error
	if !errors.As(err, &ee) || ee.Code != api.CodeBackupInProgress || !ee.Code.Retryable() || called {
		t.Fatalf("second backup while the first is sent: %v (send called: %v); want backup_in_progress, retryable, no copy", err, called)
	}
	if ev := lastBackupEvent(t, st); ev.Outcome != store.OutcomeFailed || !strings.Contains(ev.Reason, "another store backup") {
		t.Fatalf("refused backup audited as %+v", ev)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	b, raw, err := receiveBackup(e, func(engine.StoreBackup) {})
	if err != nil {
		t.Fatalf("backup after the first ended: %v", err)
	}
	checkCopy(t, b, raw)
}

// TestStoreBackupRefusedWithoutFreeSpace: with less free space beside the
// store than the copy and the store's size again, no copy is made: the
// backup is refused with backup_no_space (not retryable), audited as
// failed, and nothing is left beside the store. The free space is
// injected (a file system cannot be filled on demand here).
func TestStoreBackupRefusedWithoutFreeSpace(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 1 << 20, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))
	size := fileSizeOf(t, st.Path())
	for _, tc := range []struct {
		name string
		free uint64
		ok   bool
	}{
		{"room for the copy only", uint64(size) + 4096, false},
		{"none", 0, false},
		{"room for the copy and the store again", 4 * uint64(size), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer engine.SetBackupFreeSpace(func(string) (uint64, error) { return tc.free, nil })()
			b, raw, err := receiveBackup(e, func(engine.StoreBackup) {})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				checkCopy(t, b, raw)
				return
			}
			var ee *engine.Error
			if !errors.As(err, &ee) || ee.Code != api.CodeBackupNoSpace || ee.Code.Retryable() || len(raw) != 0 {
				t.Fatalf("backup with %d bytes free: %v, %d bytes sent; want backup_no_space and nothing sent", tc.free, err, len(raw))
			}
			if busyCopying(st.Path()) {
				t.Fatal("a copy was left beside the store")
			}
			if ev := lastBackupEvent(t, st); ev.Outcome != store.OutcomeFailed || !strings.Contains(ev.Reason, "bytes free") {
				t.Fatalf("refused backup audited as %+v", ev)
			}
			t.Logf("%v", err)
		})
	}
}

// TestAbandonedStoreBackupIsNotMade: a backup whose client has gone
// before the engine starts it is not sealed, copied or sent, and is
// recorded as failed, client gone (one event, no seal); it ends with
// client_gone, not internal (which signerd logs as its own failure).
func TestAbandonedStoreBackupIsNotMade(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 1 << 20, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))
	before := len(events(t, st))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := e.BackupStore(ctx, backupOperator, func(engine.StoreBackup, io.Reader) error {
		called = true
		return nil
	})
	if engine.CodeOf(err) != api.CodeClientGone || called {
		t.Fatalf("abandoned backup: %v, send called: %v; want client_gone and no send", err, called)
	}
	evs := events(t, st)
	if len(evs) != before+1 {
		for _, ev := range evs[before:] {
			t.Logf("event %d %s %s %s", ev.Seq, ev.Action, ev.Outcome, ev.Reason)
		}
		t.Fatalf("%d events after an abandoned backup, want 1 (store.backup failed, no seal)", len(evs)-before)
	}
	if ev := evs[len(evs)-1]; ev.Action != "store.backup" || ev.Outcome != store.OutcomeFailed || !strings.Contains(ev.Reason, "client gone") {
		t.Fatalf("abandoned backup audited as %+v", ev)
	}
}

func fileSizeOf(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
