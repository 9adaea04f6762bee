package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/revocation"
	"signerd/store"
)

// revokeEvents returns the reasons of the certificate.revoke events with
// outcome ok for serial, in order.
func revokeEvents(t *testing.T, st *store.Store, serial []byte) []string {
	t.Helper()
	var out []string
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action == "certificate.revoke" && ev.Outcome == store.OutcomeOK && ev.Object == store.HexSerial(serial) {
				out = append(out, ev.Reason)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestKeyCompromiseDeclaredForRevokedOrExpiredCertificate: a key's
// compromise may come to light after its certificate was revoked for
// another reason, or has expired. keyCompromise is then still taken for
// that certificate (any other reason is refused with invalid_state, as is
// keyCompromise a second time): the key is marked compromised, so a new
// request for it gets key_compromised; every other still-valid
// certificate of the key is revoked with it; a revoked certificate's
// reason becomes keyCompromise with its revocation date kept, audited,
// not counted as a second revocation, and the next CRL shows the new
// reason. An expired certificate is revoked at the time of the
// declaration and stays off the CRL. The clock guard holds for it as for
// any revocation.
func TestKeyCompromiseDeclaredForRevokedOrExpiredCertificate(t *testing.T) {
	cases := []struct {
		name         string
		revokeBefore revocation.Reason // a reason to revoke the certificate with first, -1 for none
		expire       bool              // let it expire before the compromise is declared
	}{
		{"revoked for affiliationChanged", 3, false},
		{"revoked for cessationOfOperation", 5, false},
		{"held", -2, false},
		{"expired", -1, true},
		{"revoked for superseded, then expired", 4, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca := enginetest.NewCA(t)
			st := enginetest.OpenStore(t)
			clk, base := clockNow()
			e := ca.Engine(t, st, engine.Config{Now: clk.read})
			key, _ := enginetest.NewCSR(t)
			issueFor := func(id string, days int) *store.Certificate {
				t.Helper()
				return issue(t, e, engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id},
					CSR: csrWith(t, key), ValidityDays: days})
			}
			first := issueFor("first", 1)
			sibling := issueFor("sibling", 0) // same key, its own request, valid for long
			switch {
			case tc.revokeBefore >= 0:
				if _, err := e.Revoke(ra, first.Serial, tc.revokeBefore); err != nil {
					t.Fatal(err)
				}
			case tc.revokeBefore == -2:
				if _, err := e.Hold(ra, first.Serial); err != nil {
					t.Fatal(err)
				}
			}
			before, err := e.Status(first.Serial)
			if err != nil {
				t.Fatal(err)
			}
			declaredAt := base.Add(time.Minute)
			if tc.expire {
				declaredAt = first.NotAfter.Add(time.Hour)
				// Any other reason is refused for an expired certificate.
				clk.set(declaredAt)
				if _, err := e.Revoke(ra, first.Serial, 0); engine.CodeOf(err) != api.CodeInvalidState {
					t.Errorf("revoke the expired certificate for unspecified: %v, want %s", err, api.CodeInvalidState)
				}
			} else if tc.revokeBefore >= 0 {
				if _, err := e.Revoke(ra, first.Serial, 0); engine.CodeOf(err) != api.CodeInvalidState {
					t.Errorf("revoke the revoked certificate for unspecified: %v, want %s", err, api.CodeInvalidState)
				}
			}

			// The clock guard: behind the last revocation nothing changes.
			clk.set(base.Add(-time.Hour))
			if _, err := e.Revoke(ra, first.Serial, keyCompromise); engine.CodeOf(err) != api.CodeClockBackwards {
				t.Errorf("keyCompromise with the clock stepped back: %v, want %s", err, api.CodeClockBackwards)
			}
			if rec, err := e.Status(first.Serial); err != nil || rec.Reason != before.Reason || rec.Status != before.Status {
				t.Errorf("after the clock_backwards refusal: %+v, %v; want it unchanged", rec, err)
			}

			clk.set(declaredAt)
			month := store.Month(declaredAt)
			statsBefore, err := e.Statistics(month)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := e.Revoke(ra, first.Serial, keyCompromise)
			if err != nil {
				t.Fatalf("keyCompromise for a certificate %s: %v", tc.name, err)
			}
			wantRevokedAt := declaredAt
			if before.Status == store.StatusRevoked {
				wantRevokedAt = before.RevokedAt
			}
			if rec.Status != store.StatusRevoked || rec.Reason != keyCompromise || !rec.RevokedAt.Equal(wantRevokedAt) {
				t.Errorf("after keyCompromise: %s, reason %d, revoked at %s; want revoked, 1, at %s",
					rec.Status, rec.Reason, rec.RevokedAt, wantRevokedAt)
			}
			if rec, err := e.Status(sibling.Serial); err != nil || rec.Status != store.StatusRevoked || rec.Reason != keyCompromise {
				t.Errorf("the key's other certificate: %+v, %v; want revoked for keyCompromise", rec, err)
			}
			if _, err := e.Revoke(ra, first.Serial, keyCompromise); engine.CodeOf(err) != api.CodeInvalidState {
				t.Errorf("keyCompromise a second time: %v, want %s", err, api.CodeInvalidState)
			}
			_, err = e.Issue(context.Background(), ra, engine.Request{ID: "again", Profile: "device-sign",
				Subject: engine.Subject{CommonName: "again"}, CSR: csrWith(t, key)})
			if engine.CodeOf(err) != api.CodeKeyCompromised {
				t.Errorf("issue for the key declared compromised: %v, want %s", err, api.CodeKeyCompromised)
			}

			evs := revokeEvents(t, st, first.Serial)
			if len(evs) == 0 || !strings.Contains(evs[len(evs)-1], "reason 1") {
				t.Errorf("audit events of the revocation: %q; want the last to record reason 1", evs)
			} else if before.Status == store.StatusRevoked && !strings.Contains(evs[len(evs)-1], "was reason") {
				t.Errorf("audit event of the reason change: %q; want the former reason in it", evs[len(evs)-1])
			}
			statsAfter, err := e.Statistics(month)
			if err != nil {
				t.Fatal(err)
			}
			wantCount := uint64(2) // the sibling and the certificate itself
			if before.Status == store.StatusRevoked {
				wantCount = 1 // a reason change is not a second revocation
			}
			if got := statsAfter["device-sign"][store.StatRevoked] - statsBefore["device-sign"][store.StatRevoked]; got != wantCount {
				t.Errorf("revoked count grew by %d, want %d", got, wantCount)
			}

			crl := checkCRL(t, ca, mustCRL(t, e))
			entries := listed(crl)
			if got := entries[hexOf(sibling.Serial)]; got != keyCompromise {
				t.Errorf("CRL lists the sibling with %d, want keyCompromise", got)
			}
			got, onCRL := entries[hexOf(first.Serial)]
			switch {
			case tc.expire && onCRL:
				t.Errorf("CRL lists the expired certificate (reason %d)", got)
			case !tc.expire && got != keyCompromise:
				t.Errorf("CRL lists the certificate with %d (on it: %v), want keyCompromise", got, onCRL)
			}
			for _, x := range crl.RevokedCertificateEntries {
				if hexOf(first.Serial) == x.SerialNumber.Text(16) && !x.RevocationTime.Equal(wantRevokedAt) {
					t.Errorf("CRL revocation date %s, want %s", x.RevocationTime, wantRevokedAt)
				}
			}
			checkLines(t, st)
			e.Close()

			// After a restart the key stays compromised (the mark is
			// rebuilt from the revocation index).
			e = ca.Engine(t, st, engine.Config{Now: clk.read})
			_, err = e.Issue(context.Background(), ra, engine.Request{ID: "after-restart", Profile: "device-sign",
				Subject: engine.Subject{CommonName: "again"}, CSR: csrWith(t, key)})
			if engine.CodeOf(err) != api.CodeKeyCompromised {
				t.Errorf("issue for the key after a restart: %v, want %s", err, api.CodeKeyCompromised)
			}
		})
	}
}

// TestLateKeyCompromiseDiscardsCertificateBeingSigned: keyCompromise
// declared for a certificate revoked before for another reason, while a
// new certificate for the same key is at the HSM: the declaration is
// acknowledged at once and the new certificate is discarded when it comes
// back (key_compromised), as for a first revocation.
func TestLateKeyCompromiseDiscardsCertificateBeingSigned(t *testing.T) {
	e, g, st := gatedEngineWith(t, engine.Config{})
	release := releaseOnce(t, g)
	go func() { <-g.entered; g.release <- struct{}{} }() // the first issue signs at once
	key, _ := enginetest.NewCSR(t)
	req := func(id string) engine.Request {
		return engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id}, CSR: csrWith(t, key)}
	}
	first := issue(t, e, req("first"))
	if _, err := e.Revoke(ra, first.Serial, 3); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.Issue(context.Background(), ra, req("being-signed"))
		done <- err
	}()
	waitPrepared(t, st, "being-signed")
	if _, err := e.Revoke(ra, first.Serial, keyCompromise); err != nil {
		t.Fatalf("keyCompromise for the revoked certificate while another for its key is signed: %v", err)
	}
	release()
	if err := <-done; engine.CodeOf(err) != api.CodeKeyCompromised {
		t.Errorf("certificate signed while the key was declared compromised: %v, want %s", err, api.CodeKeyCompromised)
	}
	checkLines(t, st)
}
