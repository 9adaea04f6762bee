package engine_test

import (
	"context"
	"strings"
	"testing"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestRefusalEventsAreBounded: a refused request is recorded, but what the
// RA sent is quoted only up to a bound, so an RA cannot grow the audit log
// by tens of kilobytes per refused request.
func TestRefusalEventsAreBounded(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{})
	_, csr := enginetest.NewCSR(t)
	ra := store.Actor{UID: 1000, GID: 1000, Role: "ra"}
	huge := strings.Repeat("\u202e", 20_000) // 60 KB of bidi overrides
	cases := []struct {
		name string
		req  engine.Request
	}{
		{"request id", engine.Request{ID: huge, Profile: "person-sign", CSR: csr, Subject: engine.Subject{CommonName: "x"}}},
		{"subject", engine.Request{ID: "bounded-subject", Profile: "person-sign", CSR: csr, Subject: engine.Subject{CommonName: huge}}},
		{"profile", engine.Request{ID: "bounded-profile", Profile: huge, CSR: csr, Subject: engine.Subject{CommonName: "x"}}},
	}
	for _, c := range cases {
		if _, err := e.Issue(context.Background(), ra, c.req); err == nil {
			t.Fatalf("%s: a 60 KB value was accepted", c.name)
		}
	}
	refused := 0
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, raw []byte) error {
			if ev.Outcome != store.OutcomeRefused || ev.Actor.UID != ra.UID {
				return nil
			}
			refused++
			if len(raw) > 2048 {
				t.Errorf("refusal event %d is %d bytes, want at most 2 KiB: object %.80q", ev.Seq, len(raw), ev.Object)
			}
			if strings.ContainsRune(ev.Object+ev.Reason, '\u202e') {
				t.Errorf("refusal event %d stores a bidi override: %.80q", ev.Seq, ev.Object)
			}
			return nil
		})
	}); err != nil {
		t.Fatalf("read the audit log: %v", err)
	}
	if refused != len(cases) {
		t.Errorf("%d refusals recorded, want %d", refused, len(cases))
	}
}
