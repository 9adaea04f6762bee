package engine_test

import (
	"context"
	"crypto/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// eventsOf returns the audit events with action.
func eventsOf(t *testing.T, st *store.Store, action string) []store.Event {
	t.Helper()
	var out []store.Event
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action == action {
				out = append(out, ev)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// settableClock is an injected clock a test moves.
type settableClock struct{ now atomic.Pointer[time.Time] }

func (c *settableClock) set(t time.Time) { c.now.Store(&t) }
func (c *settableClock) read() time.Time { return *c.now.Load() }

// clockNow is a settableClock set to now in whole seconds, and that time.
func clockNow() (*settableClock, time.Time) {
	c, now := new(settableClock), time.Now().UTC().Truncate(time.Second)
	c.set(now)
	return c, now
}

// TestClockResetAcknowledgedRestoresRevocation: the clock runs 100 days
// ahead while a certificate is held (the forward step is alarmed), then is
// corrected. Until an operator acknowledges the reset, revocation is
// refused with clock_backwards and each refusal is alarmed with the remedy
// (--acknowledge-clock-reset). A start with the acknowledgement
// records it with both times, re-dates the hold to the clock, and from
// then on keyCompromise revocation, restore and CRLs work with times
// from the corrected clock. The acknowledgement given again, with the
// clock no longer behind, resets nothing.
func TestClockResetAcknowledgedRestoresRevocation(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	held := issue(t, e, request(t, "held"))
	compromised := issue(t, e, request(t, "compromised"))
	ahead := base.AddDate(0, 0, 100)
	clk.set(ahead)
	if _, err := e.Hold(ra, held.Serial); err != nil {
		t.Fatal(err)
	}
	if steps := eventsOf(t, st, "clock.step"); len(steps) != 1 || !strings.Contains(steps[0].Reason, "--acknowledge-clock-reset") {
		t.Errorf("a 100-day forward step gave clock.step events %+v, want one naming the remedy", steps)
	}
	corrected := base.Add(time.Minute)
	clk.set(corrected)
	if _, err := e.Revoke(ra, compromised.Serial, keyCompromise); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("keyCompromise with the clock corrected, no reset: %v, want %s", err, api.CodeClockBackwards)
	}
	e.Close()

	e = ca.Engine(t, st, engine.Config{Now: clk.read})
	alarms := len(eventsOf(t, st, "clock.alarm"))
	if _, err := e.Revoke(ra, compromised.Serial, keyCompromise); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("keyCompromise after a restart without the acknowledgement: %v, want %s", err, api.CodeClockBackwards)
	}
	if got := eventsOf(t, st, "clock.alarm"); len(got) != alarms+1 || !strings.Contains(got[len(got)-1].Detail, "--acknowledge-clock-reset") {
		t.Errorf("refusal with the clock behind: clock.alarm events %+v, want one naming --acknowledge-clock-reset", got[alarms:])
	}
	e.Close()

	const statement = "Li Wei, operator: NTP served a date 100 days ahead, corrected, ticket 4711"
	e = ca.Engine(t, st, engine.Config{Now: clk.read, AcknowledgeClockReset: statement})
	resets := eventsOf(t, st, "clock.reset.acknowledged")
	if len(resets) != 1 || resets[0].Detail != statement ||
		!strings.Contains(resets[0].Reason, ahead.Format(time.RFC3339)) || !strings.Contains(resets[0].Reason, corrected.Format(time.RFC3339)) ||
		!strings.Contains(resets[0].Reason, "1 revocation or hold times") {
		t.Fatalf("clock.reset.acknowledged events %+v: want one with the statement, both times and the re-dated hold", resets)
	}
	if rec, err := e.Status(held.Serial); err != nil || !rec.RevokedAt.Equal(corrected) {
		t.Errorf("hold after the reset: %+v, %v; want it dated %s", rec, err, corrected)
	}
	crl := checkCRL(t, ca, mustCRL(t, e))
	if l := listed(crl); len(l) != 1 || !crl.ThisUpdate.Equal(corrected) {
		t.Errorf("CRL after the reset: thisUpdate %s, entries %v; want %s and the hold", crl.ThisUpdate, l, corrected)
	}
	rec, err := e.Revoke(ra, compromised.Serial, keyCompromise)
	if err != nil || !rec.RevokedAt.Equal(corrected) {
		t.Fatalf("keyCompromise after the reset: %+v, %v; want it dated %s", rec, err, corrected)
	}
	if _, err := e.Restore(ra, held.Serial); err != nil {
		t.Fatalf("restore after the reset: %v", err)
	}
	clk.set(corrected.Add(time.Second))
	if l := listed(checkCRL(t, ca, mustCRL(t, e))); len(l) != 1 || l[hexOf(compromised.Serial)] != keyCompromise {
		t.Errorf("CRL lists %v, want only %x for keyCompromise", l, compromised.Serial)
	}
	if c := issue(t, e, request(t, "after-reset")); !c.NotBefore.Equal(corrected.Add(time.Second)) {
		t.Errorf("notBefore %s after the reset, want %s", c.NotBefore, corrected.Add(time.Second))
	}
	e.Close()

	ca.Engine(t, st, engine.Config{Now: clk.read, AcknowledgeClockReset: statement}).Close()
	if n := len(eventsOf(t, st, "clock.reset.acknowledged")); n != 1 {
		t.Errorf("the acknowledgement given again with the clock not behind: %d resets recorded, want still 1", n)
	}
}

// TestClockResetRefusedBeforeIssuer: an acknowledged reset to a clock
// before the issuing CA's notBefore is refused, and the engine does not
// start: such a clock is plainly wrong, and the reset would let
// revocations be backdated.
func TestClockResetRefusedBeforeIssuer(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, _ := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	issue(t, e, request(t, "before"))
	e.Close()
	clk.set(ca.Cert.NotBefore.Add(-time.Hour))
	_, err := engine.New(engine.Config{Store: st, Issuers: []*issuance.Issuer{ca.Issuer}, Random: rand.Reader, Now: clk.read,
		AcknowledgeClockReset: "someone: the clock is right"})
	if err == nil || !strings.Contains(err.Error(), "before the issuing CA's notBefore") {
		t.Fatalf("reset to a clock before the issuer: %v, want a refusal", err)
	}
	if n := len(eventsOf(t, st, "clock.reset.acknowledged")); n != 0 {
		t.Errorf("%d resets recorded, want none", n)
	}
}

// TestClockForwardStepAlarmed: a signing time more than ClockMaxStep after
// the last one is alarmed (clock.step) but not refused, since a CA that
// sat idle looks the same; smaller steps are not alarmed.
func TestClockForwardStepAlarmed(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read, ClockMaxStep: 48 * time.Hour})
	issue(t, e, request(t, "first"))
	for _, s := range []struct {
		at    time.Time
		steps int
	}{
		{base.Add(47 * time.Hour), 0},
		{base.Add(47*time.Hour + 49*time.Hour), 1},
		{base.AddDate(0, 0, 30), 2},
	} {
		clk.set(s.at)
		mustCRL(t, e)
		if got := eventsOf(t, st, "clock.step"); len(got) != s.steps {
			t.Errorf("CRL at %s: %d clock.step events, want %d", s.at, len(got), s.steps)
		}
	}
}

// TestIssuerExpiredIsNotTheRAs: with the clock past the issuing CA's
// notAfter, issue, renew and extend are refused issuer_expired (not the
// RA's validity_too_long), and a CRL is not signed with a thisUpdate
// after the issuer's notAfter.
func TestIssuerExpiredIsNotTheRAs(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	old := issue(t, e, request(t, "old"))
	clk.set(ca.Cert.NotAfter.Add(time.Hour))
	ctx := context.Background()
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"issue", func() error { _, err := e.Issue(ctx, ra, request(t, "late")); return err }},
		{"issue for a day", func() error {
			r := request(t, "late-day")
			r.ValidityDays = 1
			_, err := e.Issue(ctx, ra, r)
			return err
		}},
		{"renew", func() error { _, err := e.Renew(ctx, ra, old.Serial, request(t, "late-renew")); return err }},
		{"extend", func() error { _, err := e.Extend(ctx, ra, "late-extend", old.Serial, 1); return err }},
		{"CRL", func() error { _, err := e.SignCRL(ctx, store.Actor{Role: "operator"}, engine.CRLName{}); return err }},
	} {
		err := op.do()
		if engine.CodeOf(err) != api.CodeIssuerExpired || api.CodeIssuerExpired.Retryable() {
			t.Errorf("%s with the clock past the issuing CA's notAfter: %v, want %s (not retryable)", op.name, err, api.CodeIssuerExpired)
		}
	}
	if _, err := e.LatestCRL(engine.CRLName{}); engine.CodeOf(err) != api.CodeNotFound {
		t.Errorf("a CRL was recorded: %v", err)
	}
	if _, err := e.Revoke(ra, old.Serial, 0); engine.CodeOf(err) != api.CodeInvalidState {
		t.Errorf("revoke of a certificate the clock says expired: %v, want %s", err, api.CodeInvalidState)
	}
	// Nothing carries the time past the issuer, so it does not hold the
	// guard: with the clock corrected, the CA works without a reset.
	clk.set(base.Add(time.Minute))
	if _, err := e.Hold(ra, old.Serial); err != nil {
		t.Errorf("hold after the clock came back from past the issuer: %v", err)
	}
	issue(t, e, request(t, "back"))
	mustCRL(t, e)
}
