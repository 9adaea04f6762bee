package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/store"
)

// anchorLab is a CA, its audit key and the audit anchor in its token, and
// a store that engines are started on one after another, as signerd
// restarts.
type anchorLab struct {
	ca     *enginetest.CA
	key    *hsm.SM2Signer
	anchor *hsm.DataObject
	at     *enginetest.StoreAt
}

func newAnchorLab(t *testing.T, se enginetest.StoreEngine) *anchorLab {
	t.Helper()
	ca := enginetest.NewCA(t)
	return &anchorLab{ca: ca, key: auditKey(t, ca), anchor: ca.Module.DataObject("audit-2026-anchor"), at: se.New(t)}
}

// start opens the store and starts an engine on it with the audit key and
// anchor (anchor nil: none, as signerd before anchors), acknowledging a
// break with ack. The store closes with the engine (stop).
func (l *anchorLab) start(t *testing.T, anchor engine.AuditAnchor, ack string) (*engine.Engine, *store.Store, error) {
	t.Helper()
	st := l.at.Open(t)
	e, err := engine.New(engine.Config{Store: st, Issuers: []*issuance.Issuer{l.ca.Issuer}, Random: l.ca.Module.Random(),
		AuditKey: l.key, AuditAnchor: anchor, AcknowledgeAuditBreak: ack, SealInterval: time.Hour})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return e, st, nil
}

// run starts an engine, records n events, and stops it, which seals
// them; it returns the shutdown seal's sequence number.
func (l *anchorLab) run(t *testing.T, anchor engine.AuditAnchor, n int) uint64 {
	t.Helper()
	e, st, err := l.start(t, anchor, "")
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	for i := range n {
		if err := e.Audit(store.Event{Actor: store.System, Action: "test.event", Object: fmt.Sprint(i), Outcome: store.OutcomeOK}); err != nil {
			t.Fatal(err)
		}
	}
	e.Close()
	evs := events(t, st)
	st.Close()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Seal != nil && evs[i].Reason == "shutdown" {
			return evs[i].Seq
		}
	}
	t.Fatal("no shutdown seal")
	return 0
}

// anchored is the seal the token's anchor records.
func (l *anchorLab) anchored(t *testing.T) uint64 {
	t.Helper()
	raw, err := l.anchor.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	if _, err := fmt.Sscanf(string(raw), "signerd-audit-anchor-v1\n%d\n", &seq); err != nil {
		t.Fatalf("anchor %q: %v", raw, err)
	}
	return seq
}

// TestAuditAnchorCatchesLostSeals: a log cut back to an earlier seal, or
// an older copy of the store put back, is a well-formed sealed log that
// the chain alone accepts; the anchor in the token still records the
// later seal, so the engine refuses to start, naming the anchored seal
// and the store's head, until an operator acknowledges the break.
// It runs on each store engine.
func TestAuditAnchorCatchesLostSeals(t *testing.T) { onEachStore(t, testAuditAnchorCatchesLostSeals) }

func testAuditAnchorCatchesLostSeals(t *testing.T, se enginetest.StoreEngine) {
	tests := []struct {
		name string
		lose func(t *testing.T, l *anchorLab, earlier uint64, oldCopy *enginetest.StoreAt)
	}{
		{"log cut back to an earlier seal", func(t *testing.T, l *anchorLab, earlier uint64, _ *enginetest.StoreAt) {
			l.at.CutAuditLog(t, earlier)
		}},
		{"older copy of the store restored", func(t *testing.T, l *anchorLab, _ uint64, oldCopy *enginetest.StoreAt) {
			l.at.RestoreFrom(t, oldCopy)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newAnchorLab(t, se)
			earlier := l.run(t, l.anchor, 3)
			oldCopy := l.at.Copy(t)
			later := l.run(t, l.anchor, 3)
			if got := l.anchored(t); got != later {
				t.Fatalf("anchor records seal %d, want the last seal %d", got, later)
			}

			tt.lose(t, l, earlier, oldCopy)
			_, _, err := l.start(t, l.anchor, "")
			want := fmt.Sprintf("audit anchor records seal event %d, but the store's audit log ends at event %d", later, earlier)
			if !errors.Is(err, engine.ErrAuditBroken) || !strings.Contains(err.Error(), want) {
				t.Fatalf("start after losing events %d–%d: %v\nwant ErrAuditBroken saying %q", earlier+1, later, err, want)
			}

			// Acknowledged, the break is recorded and sealed, and the anchor
			// follows the log as it now is.
			e, st, err := l.start(t, l.anchor, "Li Na, incident 2026-31: store restored from backup")
			if err != nil {
				t.Fatalf("acknowledged start: %v", err)
			}
			e.Close()
			evs := events(t, st)
			st.Close()
			var ack *store.Event
			for i := range evs {
				if evs[i].Action == "audit.break.acknowledged" {
					ack = &evs[i]
				}
			}
			if ack == nil || !strings.Contains(ack.Reason, want) || !strings.Contains(ack.Detail, "incident 2026-31") {
				t.Fatalf("acknowledgement event: %+v", ack)
			}
			if got, last := l.anchored(t), evs[len(evs)-1].Seq; got != last {
				t.Fatalf("anchor records seal %d after the acknowledged start, want %d", got, last)
			}
			if _, _, err := l.start(t, l.anchor, ""); err != nil {
				t.Fatalf("start after the acknowledged break: %v", err)
			}
		})
	}
}

// TestAuditAnchorEditedSeal: a store whose anchored seal was replaced by
// other bytes (a log rewritten from there on) is refused too.
// It runs on each store engine.
func TestAuditAnchorEditedSeal(t *testing.T) { onEachStore(t, testAuditAnchorEditedSeal) }

func testAuditAnchorEditedSeal(t *testing.T, se enginetest.StoreEngine) {
	l := newAnchorLab(t, se)
	l.run(t, l.anchor, 2)
	sealed := l.run(t, l.anchor, 2)
	// Append events and a new last seal would need the audit key; editing
	// the anchored seal's reason changes its hash.
	l.at.EditAuditEvent(t, sealed, func(v []byte) []byte {
		return []byte(strings.Replace(string(v), `"reason":"shutdown"`, `"reason":"shutdowN"`, 1))
	})
	l.at.CutAuditLog(t, sealed) // the head rewritten to the edited bytes
	_, _, err := l.start(t, l.anchor, "")
	if !errors.Is(err, engine.ErrAuditBroken) {
		t.Fatalf("start on an edited anchored seal: %v", err)
	}
}

// stuckAnchor is the token's anchor with updates failing on demand: the
// state signerd leaves when it dies after a seal commits and before the
// anchor is written, which the token cannot be made to produce at will.
type stuckAnchor struct {
	*hsm.DataObject
	stuck atomic.Bool
}

func (a *stuckAnchor) Update(ctx context.Context, v []byte) error {
	if a.stuck.Load() {
		return errors.New("signerd stopped before the anchor write (injected)")
	}
	return a.DataObject.Update(ctx, v)
}

// TestAuditAnchorBehindStarts: a seal committed whose anchor write never
// happened leaves the anchor behind the store; the next start accepts
// that and brings the anchor up to the last seal.
// It runs on each store engine.
func TestAuditAnchorBehindStarts(t *testing.T) { onEachStore(t, testAuditAnchorBehindStarts) }

func testAuditAnchorBehindStarts(t *testing.T, se enginetest.StoreEngine) {
	l := newAnchorLab(t, se)
	first := l.run(t, l.anchor, 2)
	a := &stuckAnchor{DataObject: l.anchor}
	a.stuck.Store(true)
	second := l.run(t, a, 2)
	if got := l.anchored(t); got != first {
		t.Fatalf("anchor records seal %d, want %d (the later write failed)", got, first)
	}
	evs := eventsAt(t, l.at)
	failed := 0
	for _, ev := range evs {
		if ev.Action == "audit.anchor" && ev.Outcome == store.OutcomeFailed {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed anchor writes audited, want 1", failed)
	}
	e, st, err := l.start(t, l.anchor, "")
	if err != nil {
		t.Fatalf("start with the anchor behind the store: %v", err)
	}
	if got := l.anchored(t); got != second {
		t.Fatalf("anchor records seal %d after start, want the store's last seal %d", got, second)
	}
	e.Close()
	st.Close()
}

// TestAuditAnchorCreated: a new log gets its anchor at the first start,
// without an event (nothing went before); a log that has run without one
// gets it at the next start, audited, and from then on a cut is caught.
// It runs on each store engine.
func TestAuditAnchorCreated(t *testing.T) { onEachStore(t, testAuditAnchorCreated) }

func testAuditAnchorCreated(t *testing.T, se enginetest.StoreEngine) {
	t.Run("new log", func(t *testing.T) {
		l := newAnchorLab(t, se)
		sealed := l.run(t, l.anchor, 1)
		if got := l.anchored(t); got != sealed {
			t.Fatalf("anchor records seal %d, want %d", got, sealed)
		}
		for _, ev := range eventsAt(t, l.at) {
			if strings.HasPrefix(ev.Action, "audit.anchor") {
				t.Fatalf("event %+v on a new log", ev)
			}
		}
	})
	t.Run("log without an anchor", func(t *testing.T) {
		l := newAnchorLab(t, se)
		earlier := l.run(t, nil, 2)
		before := l.run(t, nil, 2)
		if _, err := l.anchor.Read(context.Background()); !errors.Is(err, hsm.ErrObjectNotFound) {
			t.Fatalf("anchor before one is configured: %v", err)
		}
		later := l.run(t, l.anchor, 2)
		var created *store.Event
		for _, ev := range eventsAt(t, l.at) {
			if ev.Action == "audit.anchor.created" {
				created = &ev
			}
		}
		if created == nil || created.Object != fmt.Sprintf("seal event %d", before) {
			t.Fatalf("anchor creation event %+v, want one naming seal event %d", created, before)
		}
		if got := l.anchored(t); got != later {
			t.Fatalf("anchor records seal %d, want %d", got, later)
		}
		l.at.CutAuditLog(t, earlier)
		if _, _, err := l.start(t, l.anchor, ""); !errors.Is(err, engine.ErrAuditBroken) {
			t.Fatalf("start on a cut log once anchored: %v", err)
		}
	})
}

// TestAuditAnchorFollowsConcurrentSeals: seals made at once (each export
// seals first; the sealer is kept out of it) write the anchor in the order
// they commit, so it ends on the last seal, never an earlier one.
// It runs on each store engine.
func TestAuditAnchorFollowsConcurrentSeals(t *testing.T) {
	onEachStore(t, testAuditAnchorFollowsConcurrentSeals)
}

func testAuditAnchorFollowsConcurrentSeals(t *testing.T, se enginetest.StoreEngine) {
	l := newAnchorLab(t, se)
	st := l.at.Open(t)
	e := l.ca.Engine(t, st, engine.Config{AuditKey: l.key, AuditAnchor: l.anchor, SealEvery: 1000, SealInterval: time.Hour})
	done := make(chan error)
	for i := range 6 {
		go func() {
			if err := e.Audit(store.Event{Actor: store.System, Action: "test.event", Object: fmt.Sprint(i), Outcome: store.OutcomeOK}); err != nil {
				done <- err
				return
			}
			_, err := e.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, io.Discard)
			done <- err
		}()
	}
	for range 6 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	if err := st.View(func(tx *store.Tx) error {
		s, err := tx.LastSeal()
		if s != nil {
			last = s.Seq
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := l.anchored(t); got != last {
		t.Fatalf("anchor records seal %d, want the last seal %d", got, last)
	}
}
