package engine_test

import (
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestKeyCompromiseReachesEveryCertificateOfTheKey: a keyCompromise
// revocation revokes every still-valid certificate this CA issued for the
// key, not only those of the certificate's own line: certificates of
// separate Issue requests for the same key, and their extensions, good,
// superseded or on hold, each with its own audit event and count. One
// revoked before for another reason gets reason keyCompromise, with an
// audit event but no second count (its own test:
// TestKeyCompromiseReachesSiblingRevokedForAnotherReason); a certificate
// of another key stays good.
func TestKeyCompromiseReachesEveryCertificateOfTheKey(t *testing.T) {
	onEachStore(t, testKeyCompromiseReachesEveryCertificateOfTheKey)
}

func testKeyCompromiseReachesEveryCertificateOfTheKey(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	key, _ := enginetest.NewCSR(t)
	issueFor := func(id string, k any) *store.Certificate {
		t.Helper()
		return issue(t, e, engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id}, CSR: csrWith(t, k)})
	}
	compromised := issueFor("compromised", key)
	separate := issueFor("separate", key) // same key, its own request
	extended := issueFor("extended", key)
	extension, err := extendOp(e, "extension", extended.Serial) // extended is now superseded
	if err != nil {
		t.Fatal(err)
	}
	held := issueFor("held", key)
	if _, err := e.Hold(ra, held.Serial); err != nil {
		t.Fatal(err)
	}
	revokedBefore := issueFor("revoked-before", key)
	if _, err := e.Revoke(ra, revokedBefore.Serial, 3); err != nil {
		t.Fatal(err)
	}
	otherKey, _ := enginetest.NewCSR(t)
	other := issueFor("other", otherKey)
	before, err := e.Statistics(store.Month(time.Now()))
	if err != nil {
		t.Fatal(err)
	}

	if _, err := e.Revoke(ra, compromised.Serial, keyCompromise); err != nil {
		t.Fatal(err)
	}

	reached := []*store.Certificate{compromised, separate, extended, extension, held}
	for _, x := range reached {
		rec, err := e.Status(x.Serial)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != store.StatusRevoked || rec.Reason != keyCompromise {
			t.Errorf("%s after keyCompromise of the key: %s, reason %d; want revoked, 1", x.RequestID, rec.Status, rec.Reason)
		}
	}
	if rec, err := e.Status(revokedBefore.Serial); err != nil || rec.Status != store.StatusRevoked || rec.Reason != keyCompromise {
		t.Errorf("certificate revoked before for affiliationChanged: %+v, %v; want its reason now keyCompromise", rec, err)
	}
	if rec, err := e.Status(other.Serial); err != nil || rec.Status != store.StatusGood {
		t.Errorf("certificate of another key: %+v, %v; want good", rec, err)
	}
	events := map[string]int{}
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action == "certificate.revoke" && ev.Outcome == store.OutcomeOK {
				events[ev.Object]++
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for _, x := range reached {
		if n := events[store.HexSerial(x.Serial)]; n != 1 {
			t.Errorf("%d certificate.revoke events for %s, want 1", n, x.RequestID)
		}
	}
	if n := events[store.HexSerial(revokedBefore.Serial)]; n != 2 {
		t.Errorf("%d certificate.revoke events for %s, want 2 (its revocation, its reason change)", n, revokedBefore.RequestID)
	}
	after, err := e.Statistics(store.Month(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if got := after["device-sign"][store.StatRevoked] - before["device-sign"][store.StatRevoked]; got != uint64(len(reached)) {
		t.Errorf("revoked count grew by %d, want %d", got, len(reached))
	}
	checkLines(t, st)
	crl := listed(checkCRL(t, ca, mustCRL(t, e)))
	for _, x := range append(reached, revokedBefore) {
		if crl[hexOf(x.Serial)] != keyCompromise {
			t.Errorf("CRL lists %s with %v, want keyCompromise", x.RequestID, crl[hexOf(x.Serial)])
		}
	}
}
