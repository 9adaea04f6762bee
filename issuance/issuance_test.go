package issuance_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/lint"
	"signerd/ocsp"
	"signerd/revocation"
)

// fixture is an SM2 issuing CA in a SoftHSM2 token, loaded as signerd
// loads it, and a subject key.
type fixture struct {
	ca  *enginetest.CA
	iss *issuance.Issuer
	pub *ecdsa.PublicKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ca := enginetest.NewCA(t)
	iss := loadIssuer(t, ca, enginetest.IssuingLabel, ca.Cert)
	subject, err := issuance.Throwaway(hsm.SM2)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, iss: iss, pub: subject.Public().(*ecdsa.PublicKey)}
}

func loadIssuer(t testing.TB, ca *enginetest.CA, label string, cert *smx509.Certificate) *issuance.Issuer {
	t.Helper()
	key, err := ca.Module.FindKey(context.Background(), label)
	if err != nil {
		t.Fatal(err)
	}
	return enginetest.MustIssuer(t, cert, key)
}

// leaf is an end-entity template that lints clean under f's issuer.
func (f *fixture) leaf(serial int64) *smx509.Certificate {
	now := time.Now().Truncate(time.Second)
	return &smx509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: now, NotAfter: now.AddDate(1, 0, 0), KeyUsage: lint.Signing.KeyUsage(),
		BasicConstraintsValid: true, SubjectKeyId: hsm.KeyID(f.pub),
	}
}

func (f *fixture) prepareLeaf(t *testing.T, serial int64) *issuance.Token {
	t.Helper()
	tok, err := f.iss.PrepareCertificate(f.leaf(serial), f.pub, lint.Signing)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) prepareCRL(t *testing.T, number int64) *issuance.Token {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	tok, err := f.iss.PrepareCRL(f.crl(t, crl.Scope{Number: uint64(number), ThisUpdate: now, NextUpdate: now.Add(time.Hour)},
		crl.Entry{Serial: []byte{7}, RevokedAt: now, Reason: revocation.KeyCompromise}))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// crl begins the CRL s with entries.
func (f *fixture) crl(t *testing.T, s crl.Scope, entries ...crl.Entry) *crl.TBS {
	t.Helper()
	b, err := f.iss.NewCRL(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := b.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (f *fixture) sign(t *testing.T, digest []byte) []byte {
	t.Helper()
	sig, err := f.iss.Signer.SignDigest(context.Background(), digest)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// What Issue returns carries the prepared TBS, verifies under the issuer
// in another implementation (openssl) and passes the lints.
func TestIssueSignedObjects(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		prepare func(t *testing.T) *issuance.Token
		check   func(t *testing.T, tok *issuance.Token, out *issuance.Issued)
	}{
		{"certificate", func(t *testing.T) *issuance.Token { return f.prepareLeaf(t, 1) },
			func(t *testing.T, tok *issuance.Token, out *issuance.Issued) {
				if out.Certificate == nil || !bytes.Equal(out.Certificate.RawTBSCertificate, tok.TBS()) {
					t.Fatal("the certificate does not carry the prepared TBS")
				}
				if err := lint.Certificate(out.DER, f.ca.Cert, lint.Signing); err != nil {
					t.Fatal(err)
				}
				f.ca.OpenSSLVerify(t, out.DER)
			}},
		{"CRL", func(t *testing.T) *issuance.Token { return f.prepareCRL(t, 1) },
			func(t *testing.T, tok *issuance.Token, out *issuance.Issued) {
				l, err := smx509.ParseRevocationList(out.DER)
				if err != nil || !bytes.Equal(l.RawTBSRevocationList, tok.TBS()) {
					t.Fatalf("the CRL does not carry the prepared TBS: %v", err)
				}
				if err := lint.CRL(out.DER, f.ca.Cert); err != nil {
					t.Fatal(err)
				}
				enginetest.OpenSSLVerifySigned(t, f.ca.Cert, out.DER)
			}},
		{"TBS parsed back", func(t *testing.T) *issuance.Token { return f.prepareLeaf(t, 2) },
			func(t *testing.T, tok *issuance.Token, out *issuance.Issued) {
				c, err := issuance.ParseTBSCertificate(tok.TBS())
				if err != nil || !c.PublicKey.(*ecdsa.PublicKey).Equal(f.pub) || c.SerialNumber.Cmp(big.NewInt(2)) != 0 {
					t.Fatalf("parse the recorded TBS: %v", err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.prepare(t)
			out, err := f.iss.Issue(tok, f.sign(t, tok.Digest()))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, tok, out)
		})
	}
}

// Issue refuses whatever is not a first use of a token with the issuer's
// signature over the TBS prepared and linted, and returns nothing then.
func TestIssueRefuses(t *testing.T) {
	f := newFixture(t)
	// other is the root, an issuer with another key in the same token.
	other := &fixture{ca: f.ca, pub: f.pub, iss: loadIssuer(t, f.ca, enginetest.RootLabel, f.ca.Root)}
	tests := []struct {
		name string
		// issue prepares with f (or not) and calls Issue as the case needs.
		issue func(t *testing.T) (*issuance.Issued, error)
		want  error // nil: any error
	}{
		{"token used twice", func(t *testing.T) (*issuance.Issued, error) {
			tok := f.prepareLeaf(t, 1)
			sig := f.sign(t, tok.Digest())
			if _, err := f.iss.Issue(tok, sig); err != nil {
				t.Fatal(err)
			}
			return f.iss.Issue(tok, sig)
		}, issuance.ErrTokenUsed},
		{"token used twice after a refusal", func(t *testing.T) (*issuance.Issued, error) {
			tok := f.prepareLeaf(t, 1)
			f.iss.Issue(tok, []byte("not a signature"))
			return f.iss.Issue(tok, f.sign(t, tok.Digest()))
		}, issuance.ErrTokenUsed},
		{"signature over another certificate's TBS", func(t *testing.T) (*issuance.Issued, error) {
			tok, another := f.prepareLeaf(t, 1), f.prepareLeaf(t, 2)
			return f.iss.Issue(tok, f.sign(t, another.Digest()))
		}, hsm.ErrBadSignature},
		{"signature over a CRL's TBS", func(t *testing.T) (*issuance.Issued, error) {
			tok, crl := f.prepareLeaf(t, 1), f.prepareCRL(t, 1)
			return f.iss.Issue(tok, f.sign(t, crl.Digest()))
		}, hsm.ErrBadSignature},
		{"signature by another key", func(t *testing.T) (*issuance.Issued, error) {
			tok := f.prepareLeaf(t, 1)
			sig, err := other.iss.Signer.SignDigest(context.Background(), tok.Digest())
			if err != nil {
				t.Fatal(err)
			}
			return f.iss.Issue(tok, sig)
		}, hsm.ErrBadSignature},
		{"TBS swapped for another linted one between prepare and issue", func(t *testing.T) (*issuance.Issued, error) {
			tok, another := f.prepareLeaf(t, 1), f.prepareLeaf(t, 2)
			if len(tok.TBS()) != len(another.TBS()) {
				t.Fatalf("TBS lengths %d and %d: the swap needs equal ones", len(tok.TBS()), len(another.TBS()))
			}
			sig := f.sign(t, tok.Digest())
			copy(tok.TBS(), another.TBS())
			return f.iss.Issue(tok, sig)
		}, nil},
		{"TBS swapped, signature over the new TBS", func(t *testing.T) (*issuance.Issued, error) {
			tok, another := f.prepareLeaf(t, 1), f.prepareLeaf(t, 2)
			copy(tok.TBS(), another.TBS())
			return f.iss.Issue(tok, f.sign(t, another.Digest()))
		}, nil},
		{"one TBS byte changed after prepare", func(t *testing.T) (*issuance.Issued, error) {
			tok := f.prepareLeaf(t, 1)
			sig := f.sign(t, tok.Digest())
			tok.TBS()[len(tok.TBS())-1] ^= 1
			return f.iss.Issue(tok, sig)
		}, nil},
		{"token of another issuer", func(t *testing.T) (*issuance.Issued, error) {
			tok := other.prepareLeaf(t, 1)
			sig, err := other.iss.Signer.SignDigest(context.Background(), tok.Digest())
			if err != nil {
				t.Fatal(err)
			}
			return f.iss.Issue(tok, sig)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.issue(t)
			switch {
			case out != nil || err == nil:
				t.Fatalf("issued: %v", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// Prepare lints before anything is signed: what fails a lint yields no
// token, with ErrLint.
func TestPrepareRefusesWhatFailsLint(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name    string
		prepare func() (*issuance.Token, error)
	}{
		{"validity past the issuer's", func() (*issuance.Token, error) {
			tmpl := f.leaf(1)
			tmpl.NotAfter = f.ca.Cert.NotAfter.Add(time.Hour)
			return f.iss.PrepareCertificate(tmpl, f.pub, lint.Signing)
		}},
		{"key usage of another use", func() (*issuance.Token, error) {
			return f.iss.PrepareCertificate(f.leaf(1), f.pub, lint.Encryption)
		}},
		{"end-entity certificate as a CA", func() (*issuance.Token, error) {
			return f.iss.PrepareCA(f.leaf(1), f.pub)
		}},
		{"CRL entry revoked after thisUpdate", func() (*issuance.Token, error) {
			return f.iss.PrepareCRL(f.crl(t, crl.Scope{Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour)},
				crl.Entry{Serial: []byte{7}, RevokedAt: now.Add(time.Minute)}))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.prepare()
			if tok != nil || !errors.Is(err, issuance.ErrLint) {
				t.Fatalf("token %v, error %v: want ErrLint", tok != nil, err)
			}
		})
	}
}

// A self-issuer makes a root: its certificate verifies under its own key
// and its TBS is the linted one.
func TestSelfIssuedRoot(t *testing.T) {
	f := newFixture(t)
	key, err := f.ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "root-next", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.KeySigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	self, err := issuance.SelfIssuer(signer)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tok, err := self.PrepareCA(&smx509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "next root"},
		NotBefore: now, NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign}, key.Public)
	if err != nil {
		t.Fatal(err)
	}
	out, err := self.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Certificate.CheckSignatureFrom(out.Certificate); err != nil || !bytes.Equal(out.Certificate.RawTBSCertificate, tok.TBS()) {
		t.Fatalf("root: %v", err)
	}
	if _, err := self.NewCRL(crl.Scope{Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}); err == nil {
		t.Fatal("a self-issuer without a certificate prepared a CRL")
	}
}

// An OCSP response takes the one path: the issuing key in the HSM signs
// it, Issue checks and lints it, OpenSSL verifies its signature; a
// signature over another response's TBS is refused.
func TestIssueOCSPResponse(t *testing.T) {
	f := newFixture(t)
	now := time.Now().Truncate(time.Second)
	prepare := func(serial byte) *issuance.Token {
		tok, err := f.iss.PrepareOCSP(ocsp.Single{Serial: []byte{serial}, Status: ocsp.Revoked, RevokedAt: now, Reason: revocation.Superseded,
			ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, now, ocsp.SM3)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := prepare(7)
	if err := lint.OCSPResponse(tok.Draft(), nil, f.ca.Cert); err != nil {
		t.Fatalf("draft: %v", err)
	}
	if _, err := f.iss.Issue(prepare(8), f.sign(t, tok.Digest())); !errors.Is(err, hsm.ErrBadSignature) {
		t.Fatalf("signature over another response: %v", err)
	}
	out, err := f.iss.Issue(tok, f.sign(t, tok.Digest()))
	if err != nil {
		t.Fatal(err)
	}
	if tbs, err := lint.OCSPResponseData(out.DER); err != nil || !bytes.Equal(tbs, tok.TBS()) {
		t.Fatalf("the response does not carry the prepared TBS: %v", err)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	resp, ca := filepath.Join(dir, "resp.der"), filepath.Join(dir, "ca.pem")
	os.WriteFile(resp, out.DER, 0o600)
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ca.Cert.Raw}), 0o600)
	if out, err := exec.Command("../testdata/openssl-ocsp-verify.sh", resp, ca).CombinedOutput(); err != nil {
		t.Fatalf("openssl-ocsp-verify.sh: %v\n%s", err, out)
	}
}

// A delegated responder signs OCSP responses and nothing else; one the
// CA did not certify for OCSP signing is refused.
func TestOCSPResponderSignsResponsesOnly(t *testing.T) {
	f := newFixture(t)
	key, err := f.ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "ocsp-responder", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.KeySigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "OCSP responder"},
		NotBefore: now, NotAfter: now.AddDate(0, 1, 0), KeyUsage: smx509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		ExtKeyUsage: []smx509.ExtKeyUsage{smx509.ExtKeyUsageOCSPSigning}, SubjectKeyId: hsm.KeyID(key.Public),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, Value: []byte{5, 0}}}}
	certify := func(tmpl *smx509.Certificate) *smx509.Certificate {
		tok, err := f.iss.PrepareCertificate(tmpl, key.Public, lint.AuditLog)
		if err != nil {
			t.Fatal(err)
		}
		out, err := f.iss.SignAndIssue(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		return out.Certificate
	}
	responder, err := issuance.NewOCSPResponder(certify(tmpl), signer, f.ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := responder.PrepareOCSP(ocsp.Single{Serial: []byte{7}, Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, now, ocsp.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := responder.SignAndIssue(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if _, err := responder.PrepareCertificate(f.leaf(1), f.pub, lint.Signing); err == nil {
		t.Fatal("the responder prepared a certificate")
	}
	if _, err := responder.NewCRL(crl.Scope{Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}); err == nil {
		t.Fatal("the responder began a CRL")
	}
	plain := *tmpl
	plain.SerialNumber, plain.ExtraExtensions = big.NewInt(100), nil
	if _, err := issuance.NewOCSPResponder(certify(&plain), signer, f.ca.Cert); err == nil {
		t.Fatal("a responder without ocsp-nocheck")
	}
}

// ParseTBSKey reads the key and keyUsage a TBS certifies as a whole parse
// of it does, for each usage and for a TBS without keyUsage, and refuses a
// TBS that is not one.
func TestParseTBSKey(t *testing.T) {
	f := newFixture(t)
	tbsOf := func(t *testing.T, tmpl *smx509.Certificate) []byte {
		t.Helper()
		k, err := issuance.Throwaway(hsm.SM2)
		if err != nil {
			t.Fatal(err)
		}
		parent := *f.ca.Cert
		parent.PublicKey = nil // the throwaway signs: only the TBS counts
		der, err := smx509.CreateCertificate(rand.Reader, tmpl, &parent, f.pub, k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := smx509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c.RawTBSCertificate
	}
	tests := []struct {
		name   string
		modify func(*smx509.Certificate)
	}{
		{"signing", func(*smx509.Certificate) {}},
		{"encryption", func(c *smx509.Certificate) { c.KeyUsage = lint.Encryption.KeyUsage() }},
		{"audit log", func(c *smx509.Certificate) { c.KeyUsage = lint.AuditLog.KeyUsage() }},
		{"decipherOnly, the ninth bit", func(c *smx509.Certificate) {
			c.KeyUsage = smx509.KeyUsageKeyAgreement | smx509.KeyUsageDecipherOnly
		}},
		{"no keyUsage", func(c *smx509.Certificate) { c.KeyUsage = 0 }},
		{"names and a CRL distribution point", func(c *smx509.Certificate) {
			c.DNSNames, c.CRLDistributionPoints = []string{"a.example.cn"}, []string{"http://crl.example.cn/1.crl"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := f.leaf(5)
			tt.modify(tmpl)
			tbs := tbsOf(t, tmpl)
			want, err := issuance.ParseTBSCertificate(tbs)
			if err != nil {
				t.Fatal(err)
			}
			pub, usage, err := issuance.ParseTBSKey(tbs)
			if err != nil {
				t.Fatal(err)
			}
			if !want.PublicKey.(*ecdsa.PublicKey).Equal(pub) || usage != want.KeyUsage {
				t.Fatalf("ParseTBSKey = %v, %b; the whole parse says %v, %b", pub, usage, want.PublicKey, want.KeyUsage)
			}
		})
	}
	good := tbsOf(t, f.leaf(6))
	for name, tbs := range map[string][]byte{
		"empty":         nil,
		"trailing byte": append(bytes.Clone(good), 0),
		"cut short":     good[:len(good)-3],
		"not a TBS":     {0x30, 0x03, 0x02, 0x01, 0x01},
	} {
		if _, _, err := issuance.ParseTBSKey(tbs); err == nil {
			t.Errorf("%s: ParseTBSKey took it", name)
		}
	}
}
