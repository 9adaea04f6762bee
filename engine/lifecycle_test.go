package engine_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/revocation"
	"signerd/store"
)

// checkCRL parses der, checks it with gmsm and (signature and contents)
// with openssl, and returns it.
func checkCRL(t *testing.T, ca *enginetest.CA, der []byte) *smx509.RevocationList {
	t.Helper()
	crl, err := smx509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("gmsm: CRL signature: %v", err)
	}
	if !bytes.Equal(crl.AuthorityKeyId, ca.Cert.SubjectKeyId) {
		t.Errorf("CRL AKI %x, want issuer SKI %x", crl.AuthorityKeyId, ca.Cert.SubjectKeyId)
	}
	enginetest.OpenSSLVerifySigned(t, ca.Cert, der)
	path := enginetest.WritePEM(t, t.TempDir(), "crl.pem", "X509 CRL", der)
	out, err := enginetest.OpenSSL(t, "crl", "-in", path, "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl -text: %v\n%s", err, out)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if !strings.Contains(strings.ToUpper(out), strings.ToUpper(e.SerialNumber.Text(16))) {
			t.Errorf("openssl does not list serial %x:\n%s", e.SerialNumber, out)
		}
	}
	return crl
}

func listed(crl *smx509.RevocationList) map[string]int {
	out := map[string]int{}
	for _, e := range crl.RevokedCertificateEntries {
		out[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	return out
}

func hexOf(serial []byte) string { return new(big.Int).SetBytes(serial).Text(16) }

func TestRevokeHoldRestoreAndCRL(t *testing.T) { onEachStore(t, testRevokeHoldRestoreAndCRL) }

func testRevokeHoldRestoreAndCRL(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	e := ca.Engine(t, st, engine.Config{CRLValidity: 6 * time.Hour})
	var certs []*store.Certificate
	for _, id := range []string{"a", "b", "c"} {
		_, csr := enginetest.NewCSR(t)
		certs = append(certs, issue(t, e, engine.Request{ID: id, Profile: "person-sign", Subject: engine.Subject{CommonName: id}, CSR: csr}))
	}
	a, b, c := certs[0].Serial, certs[1].Serial, certs[2].Serial
	if _, err := e.LatestCRL(engine.CRLName{}); engine.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("LatestCRL before any: %v", err)
	}
	first := checkCRL(t, ca, mustCRL(t, e))
	// A CRL is numbered by its signing time in Unix nanoseconds (at least
	// its thisUpdate's), one more than the last if that is larger.
	if len(first.RevokedCertificateEntries) != 0 || first.Number.Cmp(big.NewInt(first.ThisUpdate.UnixNano())) < 0 {
		t.Fatalf("first CRL: number %v, %d entries", first.Number, len(first.RevokedCertificateEntries))
	}
	if got := first.NextUpdate.Sub(first.ThisUpdate); got != 6*time.Hour {
		t.Errorf("nextUpdate − thisUpdate = %v, want 6h", got)
	}

	if _, err := e.Revoke(ra, a, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Hold(ra, b); err != nil {
		t.Fatal(err)
	}
	second := checkCRL(t, ca, mustCRL(t, e))
	want := map[string]int{hexOf(a): 1, hexOf(b): 6}
	if got := listed(second); !mapsEqual(got, want) || second.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("CRL #%v lists %v, want %v", second.Number, got, want)
	}
	if second.ThisUpdate.Before(first.ThisUpdate) {
		t.Error("thisUpdate went backwards")
	}

	if _, err := e.Restore(ra, b); err != nil {
		t.Fatal(err)
	}
	third := checkCRL(t, ca, mustCRL(t, e))
	if got := listed(third); !mapsEqual(got, map[string]int{hexOf(a): 1}) || third.Number.Cmp(second.Number) <= 0 {
		t.Fatalf("after restore CRL #%v lists %v", third.Number, got)
	}
	latest, err := e.LatestCRL(engine.CRLName{})
	if err != nil || !bytes.Equal(latest, third.Raw) {
		t.Fatalf("LatestCRL is not the last signed: %v", err)
	}

	refusals := []struct {
		name string
		do   func() error
		want api.Code
	}{
		{"revoke twice", func() error { _, err := e.Revoke(ra, a, 0); return err }, api.CodeInvalidState},
		{"hold revoked", func() error { _, err := e.Hold(ra, a); return err }, api.CodeInvalidState},
		{"restore good", func() error { _, err := e.Restore(ra, c); return err }, api.CodeInvalidState},
		{"revoke with certificateHold", func() error { _, err := e.Revoke(ra, c, 6); return err }, api.CodeBadRequest},
		{"unknown serial", func() error { _, err := e.Revoke(ra, []byte{1, 2, 3}, 0); return err }, api.CodeNotFound},
	}
	for _, r := range refusals {
		if err := r.do(); engine.CodeOf(err) != r.want {
			t.Errorf("%s: %v, want %s", r.name, err, r.want)
		}
	}
	// A hold can turn into a revocation.
	if _, err := e.Hold(ra, c); err != nil {
		t.Fatal(err)
	}
	if rec, err := e.Revoke(ra, c, 5); err != nil || rec.Status != store.StatusRevoked || rec.Reason != 5 {
		t.Fatalf("revoke held certificate: %+v, %v", rec, err)
	}

	stats, err := e.Statistics(store.Month(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if got := stats["person-sign"]; got[store.StatIssued] != 3 || got[store.StatRevoked] != 2 {
		t.Errorf("statistics %v, want 3 issued, 2 revoked", got)
	}
	var actions []string
	if err := st.View(func(tx *store.Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			t.Error(err)
		}
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			actions = append(actions, ev.Action+"/"+ev.Outcome)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"certificate.issue/ok", "certificate.revoke/ok", "certificate.hold/ok",
		"certificate.restore/ok", "crl.sign/ok", "certificate.revoke/refused"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit log lacks %s: %v", want, actions)
		}
	}
}

func mustCRL(t *testing.T, e *engine.Engine) []byte {
	t.Helper()
	der, err := e.SignCRL(context.Background(), store.Actor{Role: "operator"}, engine.CRLName{})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestRenewAndExtend(t *testing.T) { onEachStore(t, testRenewAndExtend) }

func testRenewAndExtend(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	e := ca.Engine(t, se.Open(t), engine.Config{})
	ctx := context.Background()
	_, csr := enginetest.NewCSR(t)
	subject := engine.Subject{CommonName: "赵六"}
	orig := issue(t, e, engine.Request{ID: "orig", Profile: "person-sign", Subject: subject, CSR: csr,
		Identity: map[string]string{"passport": "E12345678"}})

	newKey, newCSR := enginetest.NewCSR(t)
	renewReq := engine.Request{ID: "renew-1", Profile: "person-sign", Subject: subject, CSR: newCSR}
	renewed, err := e.Renew(ctx, ra, orig.Serial, renewReq)
	if err != nil {
		t.Fatal(err)
	}
	if old, _ := e.Status(orig.Serial); old.Status != store.StatusSuperseded || !bytes.Equal(old.SupersededBy, renewed.Serial) {
		t.Fatalf("renewed certificate's predecessor: %+v", old)
	}
	rc, _ := smx509.ParseCertificate(renewed.DER)
	if !rc.PublicKey.(*ecdsa.PublicKey).Equal(&newKey.PublicKey) || !bytes.Equal(renewed.Replaces, orig.Serial) {
		t.Fatal("renewal does not certify the new key or name its predecessor")
	}
	again, err := e.Renew(ctx, ra, orig.Serial, renewReq)
	if err != nil || !bytes.Equal(again.DER, renewed.DER) {
		t.Fatalf("retried renewal: %v", err)
	}
	if _, err := e.Renew(ctx, ra, orig.Serial, engine.Request{ID: "renew-2", Profile: "person-sign", Subject: subject, CSR: newCSR}); engine.CodeOf(err) != api.CodeAlreadySuperseded {
		t.Fatalf("renewing a superseded certificate: %v", err)
	}

	extended, err := e.Extend(ctx, ra, "extend-1", renewed.Serial, 90)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := smx509.ParseCertificate(extended.DER)
	if !bytes.Equal(ec.RawSubjectPublicKeyInfo, rc.RawSubjectPublicKeyInfo) || !bytes.Equal(ec.RawSubject, rc.RawSubject) {
		t.Fatal("extension changed the key or subject")
	}
	if days := ec.NotAfter.Sub(ec.NotBefore).Hours() / 24; days < 89.9 || days > 90 {
		t.Errorf("extended validity %.2f days, want 90", days)
	}
	if _, err := e.Extend(ctx, ra, "extend-2", renewed.Serial, 500); engine.CodeOf(err) != api.CodeValidityTooLong {
		t.Fatalf("extend beyond profile: %v", err)
	}
	verifyChain(t, ca, orig.DER, renewed.DER, extended.DER)
	stats, _ := e.Statistics(store.Month(time.Now()))
	if got := stats["person-sign"]; got[store.StatIssued] != 1 || got[store.StatRenewed] != 1 || got[store.StatExtended] != 1 {
		t.Errorf("statistics %v", got)
	}
}
