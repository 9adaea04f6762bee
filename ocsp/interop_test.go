package ocsp_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"
	xocsp "golang.org/x/crypto/ocsp"

	"signerd/hsm"
	"signerd/issuance"
	"signerd/ocsp"
	"signerd/revocation"
)

// pki is a software issuing CA and its delegated responder, behind the one
// issuance path, with a leaf certificate whose status they sign.
type pki struct {
	ca, responder *issuance.Issuer
	leaf          *smx509.Certificate
	dir           string
}

func newPKI(t testing.TB, alg hsm.Algorithm) *pki {
	t.Helper()
	caKey, responderKey, leafKey := throwaway(t, alg), throwaway(t, alg), throwaway(t, alg)
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "OCSP CA " + alg.String(), Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{0xca, byte(alg)}}
	caCert := create(t, tmpl, tmpl, caKey.Public(), caKey)
	ca, err := issuance.NewIssuer(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	responderCert := create(t, &smx509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "OCSP responder " + alg.String()},
		NotBefore: now.Add(-time.Minute), NotAfter: now.AddDate(0, 1, 0), KeyUsage: smx509.KeyUsageDigitalSignature,
		ExtKeyUsage: []smx509.ExtKeyUsage{smx509.ExtKeyUsageOCSPSigning}, SubjectKeyId: []byte{0x0c, byte(alg)},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}}}, caCert, responderKey.Public(), caKey)
	responder, err := issuance.NewOCSPResponder(responderCert, responderKey, caCert)
	if err != nil {
		t.Fatal(err)
	}
	leaf := create(t, &smx509.Certificate{SerialNumber: new(big.Int).SetBytes([]byte{0x7a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}),
		Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.AddDate(1, 0, 0), KeyUsage: smx509.KeyUsageDigitalSignature},
		caCert, leafKey.Public(), caKey)
	p := &pki{ca: ca, responder: responder, leaf: leaf, dir: t.TempDir()}
	p.write(t, "ca.pem", caCert.Raw)
	p.write(t, "responder.pem", responderCert.Raw)
	p.write(t, "leaf.pem", leaf.Raw)
	return p
}

func throwaway(t testing.TB, alg hsm.Algorithm) issuance.Signer {
	t.Helper()
	k, err := issuance.Throwaway(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func create(t testing.TB, tmpl, parent *smx509.Certificate, pub crypto.PublicKey, key crypto.Signer) *smx509.Certificate {
	t.Helper()
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	return smCert(t, der)
}

func (p *pki) write(t testing.TB, name string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sign has signer (the CA or its responder) sign the response s of the
// leaf, hashed with h.
func (p *pki) sign(t testing.TB, signer *issuance.Issuer, s ocsp.Single, h ocsp.HashAlg) []byte {
	t.Helper()
	s.Serial = p.leaf.SerialNumber.Bytes()
	tok, err := signer.PrepareOCSP(s, time.Now(), h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := signer.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return out.DER
}

func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err
}

func statuses(now time.Time) []struct {
	name string
	s    ocsp.Single
	want []string
} {
	revokedAt := now.Add(-time.Hour).Truncate(time.Second).UTC()
	return []struct {
		name string
		s    ocsp.Single
		want []string
	}{
		{"good", ocsp.Single{Status: ocsp.Good}, []string{"Cert Status: good"}},
		{"revoked", ocsp.Single{Status: ocsp.Revoked, RevokedAt: revokedAt, Reason: revocation.KeyCompromise},
			[]string{"Cert Status: revoked", "Revocation Time: " + revokedAt.Format("Jan _2 15:04:05 2006 GMT"), "Revocation Reason: keyCompromise (0x1)"}},
		{"revoked, no reason", ocsp.Single{Status: ocsp.Revoked, RevokedAt: revokedAt}, []string{"Cert Status: revoked"}},
		{"unknown", ocsp.Single{Status: ocsp.Unknown}, []string{"Cert Status: unknown"}},
	}
}

// OpenSSL reads SM2 responses, signed by the CA and by its delegated
// responder, with their statuses and CertIDs of each hash, and verifies
// their signatures over the tbsResponseData, apart from gmsm.
func TestOpenSSLReadsSM2Responses(t *testing.T) {
	p := newPKI(t, hsm.SM2)
	now := time.Now()
	for _, signer := range []struct {
		name string
		iss  *issuance.Issuer
		cert string
	}{{"delegated", p.responder, "responder.pem"}, {"issuer", p.ca, "ca.pem"}} {
		for _, h := range ocsp.HashAlgs {
			for _, st := range statuses(now) {
				t.Run(signer.name+"/"+h.String()+"/"+st.name, func(t *testing.T) {
					s := st.s
					s.ThisUpdate, s.NextUpdate = now, now.Add(24*time.Hour)
					path := filepath.Join(p.dir, "resp.der")
					os.WriteFile(path, p.sign(t, signer.iss, s, h), 0o600)
					out, err := openssl(t, "ocsp", "-respin", path, "-resp_text", "-noverify")
					if err != nil {
						t.Fatalf("openssl ocsp: %v\n%s", err, out)
					}
					want := append([]string{"Response Status: successful (0x0)", "Responder Id: ",
						"Hash Algorithm: " + map[ocsp.HashAlg]string{ocsp.SHA1: "sha1", ocsp.SHA256: "sha256", ocsp.SM3: "sm3"}[h],
						"Serial Number: " + strings.ToUpper(p.leaf.SerialNumber.Text(16)), "Signature Algorithm: SM2-with-SM3"}, st.want...)
					if signer.name == "delegated" {
						want = append(want, "OCSP Signing", "OCSP No Check")
					}
					for _, w := range want {
						if !strings.Contains(out, w) {
							t.Errorf("openssl ocsp -resp_text lacks %q:\n%s", w, out)
						}
					}
					if st.s.Reason == revocation.Unspecified && strings.Contains(out, "Revocation Reason") {
						t.Errorf("a reason where none was given:\n%s", out)
					}
					out2, err := exec.Command("../testdata/openssl-ocsp-verify.sh", path, filepath.Join(p.dir, signer.cert)).CombinedOutput()
					if err != nil || !strings.Contains(string(out2), "Signature Verified Successfully") {
						t.Fatalf("openssl-ocsp-verify.sh: %v\n%s", err, out2)
					}
				})
			}
		}
	}
}

// The verification script is not a rubber stamp: it refuses a response
// checked against the wrong signer and one with a changed ResponseData.
func TestOpenSSLOCSPVerifyRefuses(t *testing.T) {
	p := newPKI(t, hsm.SM2)
	now := time.Now()
	der := p.sign(t, p.responder, ocsp.Single{Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, ocsp.SM3)
	tampered := bytes.Clone(der)
	serial := p.leaf.SerialNumber.Bytes()
	i := bytes.Index(tampered, serial)
	tampered[i+len(serial)-1] ^= 1
	for _, tc := range []struct {
		name, cert string
		der        []byte
	}{{"signed by another key", "ca.pem", der}, {"serial changed", "responder.pem", tampered}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath("openssl"); err != nil {
				t.Skip("openssl not installed")
			}
			path := filepath.Join(p.dir, "resp.der")
			os.WriteFile(path, tc.der, 0o600)
			out, err := exec.Command("../testdata/openssl-ocsp-verify.sh", path, filepath.Join(p.dir, tc.cert)).CombinedOutput()
			if err == nil || strings.Contains(string(out), "Signature Verified Successfully") {
				t.Fatalf("verified:\n%s", out)
			}
		})
	}
}

// OpenSSL verifies ECDSA responses fully: the signature, the delegated
// responder's certificate (trusted directly, or chained to the CA with
// its OCSP signing purpose), and the status of the certificate asked
// about, which matches only a response with the request's hash.
func TestOpenSSLVerifiesECDSAResponses(t *testing.T) {
	p := newPKI(t, hsm.ECDSAP256)
	now := time.Now()
	ca, responder, leaf := filepath.Join(p.dir, "ca.pem"), filepath.Join(p.dir, "responder.pem"), filepath.Join(p.dir, "leaf.pem")
	for _, st := range statuses(now) {
		for _, h := range []ocsp.HashAlg{ocsp.SHA1, ocsp.SHA256} {
			t.Run(st.name+"/"+h.String(), func(t *testing.T) {
				s := st.s
				s.ThisUpdate, s.NextUpdate = now, now.Add(24*time.Hour)
				der := p.sign(t, p.responder, s, h)
				path := filepath.Join(p.dir, "resp.der")
				os.WriteFile(path, der, 0o600)
				status := strings.TrimPrefix(st.want[0], "Cert Status: ")
				digest, other := "-sha1", "-sha256" // before -cert, which it applies to
				if h == ocsp.SHA256 {
					digest, other = other, digest
				}
				for _, trust := range [][]string{{"-VAfile", responder}, {"-CAfile", ca}} {
					args := append([]string{"ocsp", "-respin", path, "-issuer", ca, digest, "-cert", leaf}, trust...)
					out, err := openssl(t, args...)
					if err != nil || !strings.Contains(out, "Response verify OK") || !strings.Contains(out, leaf+": "+status) {
						t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
					}
					if st.s.Reason == revocation.KeyCompromise && !strings.Contains(out, "Reason: keyCompromise") {
						t.Fatalf("no reason:\n%s", out)
					}
				}
				// The same request under the other hash finds no status
				// in this response: a response per accepted hash.
				args := []string{"ocsp", "-respin", path, "-issuer", ca, other, "-cert", leaf, "-VAfile", responder}
				if out, _ := openssl(t, args...); !strings.Contains(out, "No Status found") {
					t.Fatalf("a %v response answered a request of the other hash:\n%s", h, out)
				}
				// x/crypto/ocsp checks the signature and the responder's
				// certificate too.
				xca, _ := x509.ParseCertificate(p.ca.Cert.Raw)
				xleaf, _ := x509.ParseCertificate(p.leaf.Raw)
				r, err := xocsp.ParseResponseForCert(der, xleaf, xca)
				if err != nil || r.Status != int(s.Status) || r.Certificate == nil {
					t.Fatalf("x/crypto/ocsp: %v, %+v", err, r)
				}
			})
		}
	}
}

// ParseRequest reads the requests `openssl ocsp -reqout` makes, with each
// hash, as CertIDFor names the certificate, and their GET form too; the
// nonce OpenSSL adds by default is read past.
func TestParseOpenSSLRequests(t *testing.T) {
	p := newPKI(t, hsm.SM2)
	for _, h := range ocsp.HashAlgs {
		t.Run(h.String(), func(t *testing.T) {
			path := filepath.Join(p.dir, "req.der")
			digest := map[ocsp.HashAlg]string{ocsp.SHA1: "-sha1", ocsp.SHA256: "-sha256", ocsp.SM3: "-sm3"}[h]
			args := []string{"ocsp", "-issuer", filepath.Join(p.dir, "ca.pem"), digest, "-cert", filepath.Join(p.dir, "leaf.pem"), "-reqout", path}
			if out, err := openssl(t, args...); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
			der, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ocsp.CertIDFor(p.ca.Cert, p.leaf.SerialNumber.Bytes(), h)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := ocsp.ParseRequest(der)
			if err != nil || len(ids) != 1 || !equalID(ids[0], want) {
				t.Fatalf("ParseRequest: %+v, %v; want %+v", ids, err, want)
			}
			// The GET form, as `openssl ocsp -url` would send it with -method GET.
			get, err := ocsp.DecodeGET(strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(base64.StdEncoding.EncodeToString(der)))
			if err != nil || !bytes.Equal(get, der) {
				t.Fatalf("DecodeGET: %v", err)
			}
		})
	}
}

// TestOneResponseAnswersEveryHash: a response carrying a SingleResponse
// per hash (as signerd pre-signs them) answers a client asking under any
// of them, with one signature; OpenSSL verifies it in full (ECDSA) and
// finds the status whichever hash its request used.
func TestOneResponseAnswersEveryHash(t *testing.T) {
	p := newPKI(t, hsm.ECDSAP256)
	now := time.Now()
	ca, responder, leaf := filepath.Join(p.dir, "ca.pem"), filepath.Join(p.dir, "responder.pem"), filepath.Join(p.dir, "leaf.pem")
	s := ocsp.Single{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour), Reason: revocation.KeyCompromise,
		ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Serial: p.leaf.SerialNumber.Bytes()}
	tok, err := p.responder.PrepareOCSP(s, now, ocsp.HashAlgs...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.responder.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.dir, "resp.der")
	os.WriteFile(path, out.DER, 0o600)
	for _, digest := range []string{"-sha1", "-sha256", "-sm3"} {
		args := []string{"ocsp", "-respin", path, "-issuer", ca, digest, "-cert", leaf, "-VAfile", responder}
		got, err := openssl(t, args...)
		if err != nil || !strings.Contains(got, "Response verify OK") || !strings.Contains(got, leaf+": revoked") {
			t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, got)
		}
	}
	xca, _ := x509.ParseCertificate(p.ca.Cert.Raw)
	xleaf, _ := x509.ParseCertificate(p.leaf.Raw)
	if r, err := xocsp.ParseResponseForCert(out.DER, xleaf, xca); err != nil || r.Status != xocsp.Revoked {
		t.Fatalf("x/crypto/ocsp: %v, %+v", err, r)
	}
	if _, err := p.responder.PrepareOCSP(s, now, ocsp.SHA1, ocsp.SHA1); err == nil {
		t.Error("a response naming one hash twice was built")
	}
}
