package engine_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/hsm/hsmtest"
	"signerd/issuance"
	"signerd/publish"
	"signerd/revocation"
	"signerd/store"
)

// ocspEngine is an engine over a new CA that pre-signs OCSP responses
// (valid an hour) with a delegated responder whose key it generates in
// the CA's token, on the clock clk, publishing into the returned dir.
func ocspEngine(t *testing.T, clk *settableClock) (*engine.Engine, *enginetest.CA, string) {
	t.Helper()
	ca := enginetest.NewCA(t)
	k, err := ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "ocsp-responder", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.KeySigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, err := publish.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := ca.Engine(t, enginetest.OpenStore(t), engine.Config{Now: clk.read, Publish: pub,
		OCSP: engine.OCSP{Validity: time.Hour, ResponderKey: signer, ResponderValidity: 48 * time.Hour, Poll: 20 * time.Millisecond}})
	e.StartOCSP()
	return e, ca, dir
}

// ocspText is `openssl ocsp -resp_text` of der, for a certificate of ca
// named with a SHA-1 CertID (OpenSSL's default); the signature is checked
// apart (testdata/openssl-ocsp-verify.sh).
func ocspText(t *testing.T, ca *enginetest.CA, der []byte, leaf []byte) string {
	t.Helper()
	dir := t.TempDir()
	resp := filepath.Join(dir, "resp.der")
	os.WriteFile(resp, der, 0o600)
	issuer := enginetest.WritePEM(t, dir, "issuer.pem", "CERTIFICATE", ca.Cert.Raw)
	cert := enginetest.WritePEM(t, dir, "leaf.pem", "CERTIFICATE", leaf)
	out, err := enginetest.OpenSSL(t, "ocsp", "-respin", resp, "-resp_text", "-noverify", "-issuer", issuer, "-cert", cert)
	if err != nil {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
	return out
}

// responderOf is the delegated responder certificate a response carries:
// OCSPResponse { status, [0] { SEQUENCE { type, OCTET STRING {
// BasicOCSPResponse { tbs, algorithm, signature, [0] { SEQUENCE OF
// Certificate } } } } } }.
func responderOf(t *testing.T, der []byte) *smx509.Certificate {
	t.Helper()
	in := cryptobyte.String(der)
	var resp, bytesField, rb, basicOctets, basic, certs, seq, cert cryptobyte.String
	ok := in.ReadASN1(&resp, casn1.SEQUENCE) && resp.SkipASN1(casn1.ENUM) &&
		resp.ReadASN1(&bytesField, casn1.Tag(0).Constructed().ContextSpecific()) && bytesField.ReadASN1(&rb, casn1.SEQUENCE) &&
		rb.SkipASN1(casn1.OBJECT_IDENTIFIER) && rb.ReadASN1(&basicOctets, casn1.OCTET_STRING) &&
		basicOctets.ReadASN1(&basic, casn1.SEQUENCE) && basic.SkipASN1(casn1.SEQUENCE) && basic.SkipASN1(casn1.SEQUENCE) &&
		basic.SkipASN1(casn1.BIT_STRING) && basic.ReadASN1(&certs, casn1.Tag(0).Constructed().ContextSpecific()) &&
		certs.ReadASN1(&seq, casn1.SEQUENCE) && seq.ReadASN1Element(&cert, casn1.SEQUENCE)
	if !ok {
		t.Fatal("the response carries no certificate")
	}
	c, err := smx509.ParseCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitResponse(t *testing.T, e *engine.Engine, serial []byte, cond func(*store.OCSPResponse) bool) *store.OCSPResponse {
	t.Helper()
	var r *store.OCSPResponse
	waitFor(t, "the OCSP response", func() bool {
		var err error
		r, err = e.OCSPResponse("", serial)
		return err == nil && cond(r)
	})
	return r
}

// TestOCSPResponsesFollowStatus: with no operator action, a certificate
// has a good response once issued, a revoked one (time, reason) soon
// after its revocation, and a fresh one at half the validity; each is
// signed by a delegated responder certified for it, checked by OpenSSL
// (contents, and the signature over the tbsResponseData), and published.
func TestOCSPResponsesFollowStatus(t *testing.T) {
	clk, now := clockNow()
	e, ca, dir := ocspEngine(t, clk)
	c := issue(t, e, request(t, "ocsp-1"))

	good := waitResponse(t, e, c.Serial, func(*store.OCSPResponse) bool { return true })
	if out := ocspText(t, ca, good.DER, c.DER); !strings.Contains(out, "Cert Status: good") {
		t.Fatalf("first response:\n%s", out)
	}
	responder := responderOf(t, good.DER)
	verifyOCSPSignature(t, good.DER, responder)
	if !good.ThisUpdate.Equal(now) || !good.NextUpdate.Equal(now.Add(time.Hour)) {
		t.Errorf("thisUpdate %v nextUpdate %v, want %v and an hour later", good.ThisUpdate, good.NextUpdate, now)
	}
	waitFor(t, "publication", func() bool {
		got, err := os.ReadFile(filepath.Join(dir, "ocsp", ca.Issuer.ID(), strings.ToLower(store.HexSerial(c.Serial))+".der"))
		return err == nil && bytes.Equal(got, good.DER)
	})

	clk.set(now.Add(time.Minute))
	if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	revoked := waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return !bytes.Equal(r.DER, good.DER) })
	out := ocspText(t, ca, revoked.DER, c.DER)
	if !strings.Contains(out, "Cert Status: revoked") || !strings.Contains(out, "Reason: keyCompromise") {
		t.Fatalf("after revocation:\n%s", out)
	}

	// Half the validity later the response is made again.
	clk.set(now.Add(31 * time.Minute))
	fresh := waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return r.ThisUpdate.After(revoked.ThisUpdate) })
	if !strings.Contains(ocspText(t, ca, fresh.DER, c.DER), "Cert Status: revoked") {
		t.Error("the refreshed response lost the revocation")
	}

	// With a third of its validity left, the responder is certified anew,
	// and responses name the new certificate.
	// (A response made in the pass that notices may still be the old
	// certificate's, valid no longer than it; the one after is the new's.)
	clk.set(now.Add(33 * time.Hour))
	waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return r.ThisUpdate.After(fresh.ThisUpdate) })
	clk.set(now.Add(34 * time.Hour))
	renewed := waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return !r.ThisUpdate.Before(now.Add(34 * time.Hour)) })
	next := responderOf(t, renewed.DER)
	if next.SerialNumber.Cmp(responder.SerialNumber) == 0 || !next.NotAfter.After(responder.NotAfter) {
		t.Fatalf("responder certificate %x (until %v) not replaced by a later one (%x until %v)",
			responder.SerialNumber, responder.NotAfter, next.SerialNumber, next.NotAfter)
	}
	verifyOCSPSignature(t, renewed.DER, next)
}

// verifyOCSPSignature has OpenSSL check a response's SM2 signature over
// its tbsResponseData (testdata/openssl-ocsp-verify.sh).
func verifyOCSPSignature(t *testing.T, der []byte, signer *smx509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	resp := filepath.Join(dir, "resp.der")
	os.WriteFile(resp, der, 0o600)
	cert := enginetest.WritePEM(t, dir, "signer.pem", "CERTIFICATE", signer.Raw)
	out, err := exec.Command(filepath.Join(hsmtest.RepoRoot(t), "testdata/openssl-ocsp-verify.sh"), resp, cert).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl-ocsp-verify.sh: %v\n%s", err, out)
	}
}
