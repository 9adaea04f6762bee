package engine_test

import (
	"context"
	"sync"
	"testing"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// collectedRefusals is a RefusalSink that keeps what it is given.
type collectedRefusals struct {
	mu    sync.Mutex
	codes []string
	evs   []store.Event
}

func (c *collectedRefusals) Record(ev store.Event, code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs, c.codes = append(c.evs, ev), append(c.codes, code)
}

// TestRefusalsGoToTheSink: with a refusal sink, a refused request is
// handed to it, bounded and with its code, and not written to the store
// one by one; what the engine does is still recorded in the store.
func TestRefusalsGoToTheSink(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	sink := &collectedRefusals{}
	e := ca.Engine(t, st, engine.Config{Refusals: sink})
	ra := store.Actor{UID: 1000, GID: 1000, Role: "ra"}
	_, csr := enginetest.NewCSR(t)
	for i := range 3 {
		req := engine.Request{ID: "refused", Profile: "no-such-profile", CSR: csr, Subject: engine.Subject{CommonName: "x"}}
		if _, err := e.Issue(context.Background(), ra, req); engine.CodeOf(err) != api.CodeUnknownProfile {
			t.Fatalf("issue %d: %v", i, err)
		}
	}
	c, err := e.Issue(context.Background(), ra, engine.Request{ID: "good", Profile: "person-sign", CSR: csr,
		Subject: engine.Subject{CommonName: "张三", Country: "CN"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Restore(ra, c.Serial); engine.CodeOf(err) != api.CodeInvalidState {
		t.Fatalf("restore of a good certificate: %v", err)
	}
	if _, err := e.Revoke(ra, []byte{0x7e, 0x7e}, 1); engine.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("revoke of a serial that does not exist: %v", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.evs) != 5 {
		t.Fatalf("the sink got %d refusals, want 5: %v", len(sink.evs), sink.codes)
	}
	for i, ev := range sink.evs {
		want, action := "unknown_profile", "certificate.issue"
		switch i {
		case 3:
			want, action = "invalid_state", "certificate.restore"
		case 4:
			want, action = "not_found", "certificate.revoke"
		}
		if sink.codes[i] != want || ev.Action != action || ev.Outcome != store.OutcomeRefused || ev.Actor.UID != ra.UID || ev.Actor.Role != ra.Role {
			t.Errorf("refusal %d: %s %s %s %+v, want %s %s refused", i, sink.codes[i], ev.Action, ev.Outcome, ev.Actor, want, action)
		}
	}
	issued := 0
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Outcome == store.OutcomeRefused {
				t.Errorf("refusal event %d %s written to the store, not to the sink", ev.Seq, ev.Action)
			}
			if ev.Action == "certificate.issue" && ev.Outcome == store.OutcomeOK {
				issued++
			}
			return nil
		})
	}); err != nil {
		t.Fatalf("read the audit log: %v", err)
	}
	if issued != 1 {
		t.Errorf("%d certificate.issue ok events, want 1", issued)
	}
}
