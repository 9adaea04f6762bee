package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"signerd/audit"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// exportWithin exports the whole log, failing the test if the export has
// not ended within a minute.
func exportWithin(t *testing.T, e *engine.Engine) ([]byte, error) {
	t.Helper()
	type result struct {
		bundle []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var buf bytes.Buffer
		_, err := e.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf)
		done <- result{buf.Bytes(), err}
	}()
	select {
	case r := <-done:
		return r.bundle, r.err
	case <-time.After(time.Minute):
		t.Fatal("the export has not ended after a minute")
		return nil, nil
	}
}

// TestAuditExportReadsInChunks: an export read a chunk at a time, each in
// a transaction of its own, holds every event exactly as stored, across
// chunk boundaries and past an event larger than a chunk; and a log whose
// event was edited to carry another sequence number is exported as it is
// stored (the export ends, and its verification names the edit). It runs
// on each store engine.
func TestAuditExportReadsInChunks(t *testing.T) { onEachStore(t, testAuditExportReadsInChunks) }

func testAuditExportReadsInChunks(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	key := auditKey(t, ca)
	at := se.New(t)
	st := at.Open(t)
	cfg := engine.Config{AuditKey: key, SealEvery: 1 << 20, SealInterval: time.Hour}
	e := ca.Engine(t, st, cfg)
	for i := range 150 {
		ev := store.Event{Actor: store.System, Action: "test.event", Object: fmt.Sprint(i), Outcome: store.OutcomeOK}
		if i == 100 {
			ev.Detail = strings.Repeat("a long transcript ", 20000) // 360 KB
		}
		if err := e.Audit(ev); err != nil {
			t.Fatal(err)
		}
	}
	bundle, err := exportWithin(t, e)
	if err != nil {
		t.Fatal(err)
	}
	rep := audit.Verify(bundle, audit.Options{Root: ca.Root})
	if !rep.OK() || rep.Header.First != 1 {
		t.Fatalf("bundle from %d: %v", rep.Header.First, rep.Problems)
	}
	var stored [][]byte
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, b []byte) error {
			if ev.Seq <= rep.Header.Last {
				stored = append(stored, bytes.Clone(b))
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(bundle, []byte("\n")), []byte("\n"))[1:]
	if len(lines) != len(stored) {
		t.Fatalf("bundle holds %d events, the store %d up to the export's seal", len(lines), len(stored))
	}
	for i := range lines {
		if !bytes.Equal(lines[i], stored[i]) {
			t.Fatalf("bundle's event %d differs from the stored bytes", i+1)
		}
	}

	e.Close()
	st.Close()
	at.EditAuditEvent(t, 70, func(b []byte) []byte { return bytes.Replace(b, []byte(`"seq":70,`), []byte(`"seq":3,`), 1) })
	st = at.Open(t)
	e = ca.Engine(t, st, cfg) // the edit is before the last seal: it starts
	bundle, err = exportWithin(t, e)
	if err != nil {
		t.Fatal(err)
	}
	rep = audit.Verify(bundle, audit.Options{Root: ca.Root})
	if bad, named := rep.FirstBad(); rep.OK() || !named || bad != 3 && bad != 70 {
		t.Fatalf("edited log's bundle: first bad event %d (named %v): %v", bad, named, rep.Problems)
	}
}
