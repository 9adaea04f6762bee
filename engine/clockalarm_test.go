package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestClockAlarmOncePerEpisodeRefusalsTallied: with the clock stepped back
// behind the guard, an RA repeating a revocation of one serial 500 times
// (and an operator's CRL, and an issue) gets clock_backwards each time;
// each refusal goes to the refusal sink under its actor, action, serial or
// request and code, and the system writes one clock.alarm for the whole
// episode, not one per request. Once the clock has passed the guard and
// stepped back again, the next refusal alarms at once, with the count of
// refusals since the last alarm.
func TestClockAlarmOncePerEpisodeRefusalsTallied(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, base := clockNow()
	sink := &collectedRefusals{}
	e := ca.Engine(t, st, engine.Config{Now: clk.read, Refusals: sink})
	defer e.Close()
	c := issue(t, e, request(t, "victim"))
	if _, err := e.Hold(ra, c.Serial); err != nil {
		t.Fatal(err)
	}
	clk.set(base.Add(-30 * time.Second)) // NTP stepped back 30s
	before := len(eventsOf(t, st, "clock.alarm"))
	const n = 500
	for i := range n {
		if _, err := e.Revoke(ra, c.Serial, 0); engine.CodeOf(err) != api.CodeClockBackwards {
			t.Fatalf("revoke %d with the clock behind: %v, want %s", i, err, api.CodeClockBackwards)
		}
	}
	op := store.Actor{UID: 1000, Role: "operator"}
	if _, err := e.SignCRL(context.Background(), op, engine.CRLName{}); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("CRL with the clock behind: %v", err)
	}
	if _, err := e.Issue(context.Background(), ra, request(t, "backdated")); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("issue with the clock behind: %v", err)
	}
	alarms := eventsOf(t, st, "clock.alarm")[before:]
	t.Logf("%d revocations, a CRL and an issue with the clock 30s behind: %d clock.alarm events %+v; refusal sink got %d",
		n, len(alarms), alarms, len(sink.evs))
	if len(alarms) != 1 || alarms[0].Actor.Role != store.System.Role || !strings.Contains(alarms[0].Detail, "--acknowledge-clock-reset") {
		t.Errorf("clock.alarm events for one episode: %+v, want one of the system's naming the remedy", alarms)
	}
	sink.mu.Lock()
	if len(sink.evs) != n+2 {
		t.Errorf("refusal sink got %d refusals, want %d", len(sink.evs), n+2)
	}
	for i, ev := range sink.evs {
		want := store.Event{Actor: ra, Action: "certificate.revoke", Object: store.HexSerial(c.Serial)}
		switch i {
		case n:
			want = store.Event{Actor: op, Action: "crl.sign", Object: "issuer " + ca.Issuer.ID()}
		case n + 1:
			want = store.Event{Actor: ra, Action: "certificate.issue", Object: "request backdated"}
		}
		if ev.Actor.UID != want.Actor.UID || ev.Actor.Role != want.Actor.Role || ev.Action != want.Action || ev.Object != want.Object ||
			ev.Outcome != store.OutcomeRefused || sink.codes[i] != string(api.CodeClockBackwards) {
			t.Errorf("refusal %d: %+v code %s; want %s by %+v on %q, refused, %s", i, ev, sink.codes[i],
				want.Action, want.Actor, want.Object, api.CodeClockBackwards)
			break
		}
	}
	sink.mu.Unlock()
	if n := len(eventsOf(t, st, "certificate.revoke")); n != 0 {
		t.Errorf("%d certificate.revoke events in the store; refusals go to the sink", n)
	}

	// The clock passes the guard (the episode ends), then steps back again.
	clk.set(base)
	if _, err := e.Restore(ra, c.Serial); err != nil {
		t.Fatal(err)
	}
	clk.set(base.Add(-time.Minute))
	for range 3 {
		if _, err := e.Hold(ra, c.Serial); engine.CodeOf(err) != api.CodeClockBackwards {
			t.Fatalf("hold with the clock behind again: %v", err)
		}
	}
	alarms = eventsOf(t, st, "clock.alarm")[before:]
	if len(alarms) != 2 || !strings.Contains(alarms[1].Reason, "502 clock_backwards refusals since the last clock.alarm") {
		t.Errorf("clock.alarm events after a second step back: %+v, want a second one counting the 502 refusals since the first", alarms)
	}
}
