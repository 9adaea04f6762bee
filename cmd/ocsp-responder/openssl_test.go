package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/publish"
	"signerd/revocation"
)

func opensslOCSP(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not installed: make deps installs it")
	}
	out, err := exec.Command("openssl", append([]string{"ocsp", "-no_nonce"}, args...)...).CombinedOutput()
	return string(out), err
}

var digestFlag = map[ocsp.HashAlg]string{ocsp.SHA1: "-sha1", ocsp.SHA256: "-sha256", ocsp.SM3: "-sm3"}

// OpenSSL asks the running responder about an SM2 CA's certificates, with
// a CertID of each hash, and reads good and revoked (with time and
// reason) from what it serves. OpenSSL cannot pass the SM2 ID to the
// response's signature check, so the bytes it fetched are checked with
// testdata/openssl-ocsp-verify.sh, OpenSSL over the tbsResponseData.
//
// Each hash's response is published over the previous one before it is
// asked for: the responder serves the file now on disk, not one cached.
func TestOpenSSLQueriesSM2(t *testing.T) {
	ca := newCA(t, hsm.SM2, "SM2 CA")
	pub := filepath.Join(t.TempDir(), "publish")
	goodSerial, revokedSerial := []byte{0x7a, 0x01, 0x02}, []byte{0x01, 0xff}
	goodPEM, revokedPEM := ca.leaf(t, goodSerial), ca.leaf(t, revokedSerial)
	revokedAt := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UTC()
	r := startResponder(t, dirConfig(pub, ca))

	for _, h := range ocsp.HashAlgs {
		t.Run(h.String(), func(t *testing.T) {
			rev := good(revokedSerial, 24*time.Hour)
			rev.Status, rev.RevokedAt, rev.Reason = ocsp.Revoked, revokedAt, revocation.KeyCompromise
			publishOCSP(t, pub,
				publish.OCSPResponse{Issuer: ca.id(), Serial: goodSerial, DER: ca.sign(t, good(goodSerial, 24*time.Hour), h)},
				publish.OCSPResponse{Issuer: ca.id(), Serial: revokedSerial, DER: ca.sign(t, rev, h)})
			for _, tc := range []struct {
				leaf string
				want []string
			}{
				{goodPEM, []string{goodPEM + ": good", "This Update: ", "Next Update: "}},
				{revokedPEM, []string{revokedPEM + ": revoked", "Reason: keyCompromise", "Revocation Time: " + revokedAt.Format("Jan _2 15:04:05 2006 GMT")}},
			} {
				respOut := filepath.Join(t.TempDir(), "resp.der")
				out, err := opensslOCSP(t, "-issuer", ca.pem, digestFlag[h], "-cert", tc.leaf, "-url", r.url(), "-noverify", "-respout", respOut)
				if err != nil {
					t.Fatalf("openssl ocsp: %v\n%s", err, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("openssl ocsp lacks %q:\n%s", w, out)
					}
				}
				v, err := exec.Command("../../testdata/openssl-ocsp-verify.sh", respOut, ca.pem).CombinedOutput()
				if err != nil || !strings.Contains(string(v), "Signature Verified Successfully") {
					t.Fatalf("openssl-ocsp-verify.sh: %v\n%s", err, v)
				}
			}
		})
	}
}

// An ECDSA CA's responses verify fully in OpenSSL, served over HTTP: the
// signature and the signer, trusted with -VAfile.
func TestOpenSSLVerifiesECDSA(t *testing.T) {
	ca := newCA(t, hsm.ECDSAP256, "ECDSA CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{0x42}
	leaf := ca.leaf(t, serial)
	r := startResponder(t, dirConfig(pub, ca))
	for _, h := range []ocsp.HashAlg{ocsp.SHA1, ocsp.SHA256} {
		publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: ca.sign(t, good(serial, time.Hour), h)})
		out, err := opensslOCSP(t, "-issuer", ca.pem, digestFlag[h], "-cert", leaf, "-url", r.url(), "-VAfile", ca.pem)
		if err != nil || !strings.Contains(out, "Response verify OK") || !strings.Contains(out, leaf+": good") {
			t.Fatalf("%v: openssl ocsp: %v\n%s", h, err, out)
		}
	}
}

// What OpenSSL says of the responder's refusals: an issuer it does not
// serve, a certificate with no response, two certificates in one
// request, a CertID hashed with MD5, and a response past its nextUpdate.
func TestOpenSSLRefusals(t *testing.T) {
	ca, other := newCA(t, hsm.SM2, "served CA"), newCA(t, hsm.SM2, "other CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial, unpublished, staleSerial := []byte{0x10}, []byte{0x11}, []byte{0x12}
	leaf, leafUnpublished, leafStale, otherLeaf := ca.leaf(t, serial), ca.leaf(t, unpublished), ca.leaf(t, staleSerial), other.leaf(t, serial)
	stale := good(staleSerial, time.Hour)
	stale.ThisUpdate, stale.NextUpdate = stale.ThisUpdate.Add(-2*time.Hour), stale.NextUpdate.Add(-2*time.Hour)
	publishOCSP(t, pub,
		publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: ca.sign(t, good(serial, time.Hour), ocsp.SHA1)},
		publish.OCSPResponse{Issuer: ca.id(), Serial: staleSerial, DER: ca.sign(t, stale, ocsp.SHA1)},
		// The other CA's response is on disk too: not served, as its issuer is not configured.
		publish.OCSPResponse{Issuer: other.id(), Serial: serial, DER: other.sign(t, good(serial, time.Hour), ocsp.SHA1)})
	r := startResponder(t, dirConfig(pub, ca))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"issuer not served", []string{"-issuer", other.pem, "-cert", otherLeaf}, "Responder Error: unauthorized (6)"},
		{"no response for the serial", []string{"-issuer", ca.pem, "-cert", leafUnpublished}, "Responder Error: unauthorized (6)"},
		{"two certificates", []string{"-issuer", ca.pem, "-cert", leaf, "-cert", leafUnpublished}, "Responder Error: malformedrequest (1)"},
		{"MD5 CertID", []string{"-issuer", ca.pem, "-md5", "-cert", leaf}, "Responder Error: unauthorized (6)"},
		{"stale", []string{"-issuer", ca.pem, "-cert", leafStale}, "Responder Error: trylater (3)"},
		{"the served one", []string{"-issuer", ca.pem, "-cert", leaf, "-noverify"}, leaf + ": good"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := opensslOCSP(t, append(tc.args, "-url", r.url())...)
			if !strings.Contains(out, tc.want) {
				t.Fatalf("openssl ocsp lacks %q:\n%s", tc.want, out)
			}
		})
	}
	if !strings.Contains(r.logText(), "stale response") {
		t.Errorf("the stale response is not in the log:\n%s", r.logText())
	}
}
