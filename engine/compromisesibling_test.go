package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestKeyCompromiseReachesSiblingRevokedForAnotherReason: two
// certificates for one key; the sibling was revoked for
// affiliationChanged, then keyCompromise is declared on the other. The
// sibling's reason becomes keyCompromise with its revocation date kept
// (as declareCompromise does for a certificate's own reason), audited
// with the former reason and not counted again, and the CRL lists it so,
// as OpenSSL reads it.
func TestKeyCompromiseReachesSiblingRevokedForAnotherReason(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	clk, base := clockNow()
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	defer e.Close()
	key, _ := enginetest.NewCSR(t)
	issueFor := func(id string) *store.Certificate {
		t.Helper()
		return issue(t, e, engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id}, CSR: csrWith(t, key)})
	}
	compromised, sibling := issueFor("compromised"), issueFor("sibling")
	const affiliationChanged = 3
	if _, err := e.Revoke(ra, sibling.Serial, affiliationChanged); err != nil {
		t.Fatal(err)
	}
	month := store.Month(base)
	statsBefore, err := e.Statistics(month)
	if err != nil {
		t.Fatal(err)
	}
	clk.set(base.Add(time.Minute))
	if _, err := e.Revoke(ra, compromised.Serial, keyCompromise); err != nil {
		t.Fatal(err)
	}

	rec, err := e.Status(sibling.Serial)
	if err != nil || rec.Status != store.StatusRevoked || rec.Reason != keyCompromise || !rec.RevokedAt.Equal(base) {
		t.Errorf("sibling after keyCompromise of its key: %+v, %v; want revoked, reason 1, revocation date %s kept", rec, err, base)
	}
	evs := revokeEvents(t, st, sibling.Serial)
	if len(evs) != 2 || !strings.Contains(evs[1], "reason 1, was reason 3, revocation date "+base.Format(time.RFC3339)+" kept") ||
		!strings.Contains(evs[1], store.HexSerial(compromised.Serial)) {
		t.Errorf("sibling's certificate.revoke events %q; want its revocation, then the reason change naming the former reason, the date and %x",
			evs, compromised.Serial)
	}
	statsAfter, err := e.Statistics(month)
	if err != nil {
		t.Fatal(err)
	}
	if got := statsAfter["device-sign"][store.StatRevoked] - statsBefore["device-sign"][store.StatRevoked]; got != 1 {
		t.Errorf("revoked count grew by %d, want 1 (the sibling's reason change is not a second revocation)", got)
	}

	clk.set(base.Add(2 * time.Minute))
	der := mustCRL(t, e)
	crl := checkCRL(t, ca, der) // gmsm and OpenSSL verify its signature
	if l := listed(crl); l[hexOf(sibling.Serial)] != keyCompromise || l[hexOf(compromised.Serial)] != keyCompromise {
		t.Errorf("CRL reasons %v; want keyCompromise for %x and %x", l, sibling.Serial, compromised.Serial)
	}
	for _, entry := range crl.RevokedCertificateEntries {
		if entry.SerialNumber.Text(16) == hexOf(sibling.Serial) && !entry.RevocationTime.Equal(base) {
			t.Errorf("CRL dates the sibling %s, want %s", entry.RevocationTime, base)
		}
	}
	// OpenSSL reads the sibling's entry with reason Key Compromise.
	path := filepath.Join(t.TempDir(), "crl.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", path, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl crl -text: %v\n%s", err, out)
	}
	text := string(out)
	want := strings.ToUpper(hexOf(sibling.Serial))
	if len(want)%2 == 1 {
		want = "0" + want // OpenSSL prints whole bytes
	}
	i := strings.Index(text, "Serial Number: "+want+"\n")
	if i < 0 {
		t.Fatalf("openssl lists no entry for %x:\n%s", sibling.Serial, text)
	}
	entry := text[i:]
	if j := strings.Index(entry[1:], "Serial Number:"); j >= 0 {
		entry = entry[:j+1]
	}
	if !strings.Contains(entry, "Key Compromise") {
		t.Errorf("openssl reads the sibling's entry as:\n%s\nwant reason Key Compromise", entry)
	}
}
