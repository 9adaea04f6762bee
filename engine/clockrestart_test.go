package engine_test

import (
	"context"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// countRefused counts the refused events actor caused.
func countRefused(t *testing.T, st *store.Store, actor store.Actor) int {
	t.Helper()
	n := 0
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Outcome == store.OutcomeRefused && ev.Actor.UID == actor.UID && ev.Actor.Role == actor.Role {
				n++
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClockGuardCoversLifecycleAcrossRestart revokes and holds at T, then
// restarts the engine on the same store with its clock at T−1h: revoke,
// hold, restore, CRL and issuance are each refused with clock_backwards,
// audited as refused under the RA, with one clock.alarm event for them all (no lint_failed, no notBefore before a recorded
// revocation), and nothing changes. With the clock back at T they all
// work. A revocation time a store holds without having noted it (written
// by an earlier signerd) is honoured at start just the same.
func TestClockGuardCoversLifecycleAcrossRestart(t *testing.T) {
	onEachStore(t, testClockGuardCoversLifecycleAcrossRestart)
}

func testClockGuardCoversLifecycleAcrossRestart(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	revoked := issue(t, e, request(t, "revoked"))
	held := issue(t, e, request(t, "held"))
	good := issue(t, e, request(t, "good"))
	mustCRL(t, e) // the last signing time is base
	revokedAt := base.Add(2 * time.Hour)
	clk.set(revokedAt)
	if _, err := e.Revoke(ra, revoked.Serial, keyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Hold(ra, held.Serial); err != nil {
		t.Fatal(err)
	}
	e.Close()

	clk.set(revokedAt.Add(-time.Hour))
	e = ca.Engine(t, st, engine.Config{Now: clk.read})
	refusals := []struct {
		name string
		do   func() error
	}{
		{"revoke", func() error { _, err := e.Revoke(ra, good.Serial, 0); return err }},
		{"hold", func() error { _, err := e.Hold(ra, good.Serial); return err }},
		{"restore", func() error { _, err := e.Restore(ra, held.Serial); return err }},
		{"CRL", func() error { _, err := e.SignCRL(context.Background(), ra, engine.CRLName{}); return err }},
		{"issue", func() error { _, err := e.Issue(context.Background(), ra, request(t, "backdated")); return err }},
	}
	// The first refusal writes the episode's one clock.alarm; every refusal
	// is audited as itself (no refusal sink here: one event each), under
	// the RA and its action.
	alarms := len(eventsOf(t, st, "clock.alarm"))
	for i, r := range refusals {
		refused := countRefused(t, st, ra)
		if err := r.do(); engine.CodeOf(err) != api.CodeClockBackwards {
			t.Errorf("%s with the clock behind the last revocation: %v, want %s", r.name, err, api.CodeClockBackwards)
		}
		if got := len(eventsOf(t, st, "clock.alarm")); got != alarms+1 {
			t.Errorf("after %s (refusal %d of the episode): %d clock.alarm events audited, want 1", r.name, i+1, got-alarms)
		}
		if got := countRefused(t, st, ra); got != refused+1 {
			t.Errorf("%s: %d refusals audited under the RA, want 1", r.name, got-refused)
		}
	}
	for c, want := range map[*store.Certificate]store.CertStatus{good: store.StatusGood, held: store.StatusOnHold, revoked: store.StatusRevoked} {
		if rec, err := e.Status(c.Serial); err != nil || rec.Status != want {
			t.Errorf("%s after the refusals: %+v, %v; want %s", c.RequestID, rec, err, want)
		}
	}

	clk.set(revokedAt)
	if _, err := e.Restore(ra, held.Serial); err != nil {
		t.Fatal(err)
	}
	crl := listed(checkCRL(t, ca, mustCRL(t, e)))
	if len(crl) != 1 || crl[hexOf(revoked.Serial)] != keyCompromise {
		t.Errorf("CRL lists %v, want only %x", crl, revoked.Serial)
	}
	if c := issue(t, e, request(t, "clock-fixed")); c.NotBefore.Before(revokedAt) {
		t.Errorf("notBefore %s is before the revocation at %s", c.NotBefore, revokedAt)
	}
	e.Close()

	// A revocation an earlier signerd recorded without noting its time.
	later := revokedAt.Add(2 * time.Hour)
	if err := st.Update(func(tx *store.Tx) error {
		c, err := tx.Certificate(good.Serial)
		if err != nil {
			return err
		}
		c.Status, c.Reason, c.RevokedAt = store.StatusRevoked, 0, later
		return tx.PutCertificate(c)
	}); err != nil {
		t.Fatal(err)
	}
	clk.set(later.Add(-time.Hour))
	e = ca.Engine(t, st, engine.Config{Now: clk.read})
	if _, err := e.SignCRL(context.Background(), ra, engine.CRLName{}); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Errorf("CRL with the clock behind an unnoted revocation: %v, want %s", err, api.CodeClockBackwards)
	}
	if _, err := e.Issue(context.Background(), ra, request(t, "before-unnoted")); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Errorf("issue with the clock behind an unnoted revocation: %v, want %s", err, api.CodeClockBackwards)
	}
}
