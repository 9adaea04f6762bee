package engine_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
// real: a read transaction held open while writes grow a store opened
// without a reserved map makes them wait in bbolt's remap. The engine
// reports the store stalled (not writable) without waiting on it; once
// the reader lets go, the writes complete and the stall is one
// store.stalled audit event, however many writes waited.
func TestStalledWritesAreReportedAndAudited(t *testing.T) {
	ca := enginetest.NewCA(t)
	st, err := store.OpenWith(filepath.Join(t.TempDir(), "signerd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := ca.Engine(t, st, engine.Config{WriteStallAfter: 2 * time.Second})
	if s := storeStatus(t, e); !s.Writable || s.Stalled {
		t.Fatalf("store status at start: %+v", s)
	}

	reading, release := make(chan struct{}), make(chan struct{})
	readerDone := make(chan error, 1)
	go func() { readerDone <- st.View(func(*store.Tx) error { close(reading); <-release; return nil }) }()
	<-reading
	var once sync.Once
	releaseReader := func() { once.Do(func() { close(release); <-readerDone }) }
	defer releaseReader()

	// Writers grow the file until bbolt must remap it, which waits for
	// the reader; the writes behind wait too.
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
	releaseReader()
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
