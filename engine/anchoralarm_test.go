package engine_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"signerd/engine/enginetest"
	"signerd/store"
)

// TestAuditAnchorMovedAlarmAfterWriteFailure: an ordinary anchor write
// failure is audited once until a write succeeds. If meanwhile another
// signerd writes the anchor, that alarm is a different thing and is
// audited too (once), not swallowed as one more failed write.
func TestAuditAnchorMovedAlarmAfterWriteFailure(t *testing.T) {
	l := newAnchorLab(t, enginetest.BoltStore)
	l.run(t, l.anchor, 1)
	a := &stuckAnchor{DataObject: l.ca.Module.DataObject(l.anchor.Label)}
	e, st, err := l.start(t, a, "")
	if err != nil {
		t.Fatal(err)
	}
	seal := func() {
		t.Helper()
		// An export seals first, and the seal writes the anchor.
		if _, err := e.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	a.stuck.Store(true)
	seal() // the anchor write fails: an HSM blip
	seal() // and again: not audited twice

	// A second signerd on the token writes the anchor.
	other := l.ca.Module.DataObject(l.anchor.Label)
	v, err := other.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Update(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	a.stuck.Store(false)
	seal() // the anchor moved under this signerd
	seal() // still moved: not audited twice
	e.Close()
	evs := events(t, st)
	st.Close()

	failed, moved := 0, 0
	for _, ev := range evs {
		if ev.Action != "audit.anchor" {
			continue
		}
		t.Logf("event %d %s %s: %s", ev.Seq, ev.Action, ev.Outcome, ev.Reason)
		if ev.Outcome != store.OutcomeFailed {
			t.Errorf("event %d: outcome %s, want failed", ev.Seq, ev.Outcome)
		}
		switch {
		case strings.Contains(ev.Reason, "the HSM's audit anchor moved under this signerd: another signerd is sealing on this token"):
			moved++
		case strings.Contains(ev.Reason, "signerd stopped before the anchor write (injected)"):
			failed++
		}
	}
	if failed != 1 || moved != 1 {
		t.Fatalf("audited %d failed anchor writes and %d 'moved under this signerd' alarms; want 1 of each", failed, moved)
	}
}
