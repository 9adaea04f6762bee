package lint_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/lint"
)

func newKey(t *testing.T) *sm2.PrivateKey {
	t.Helper()
	k, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issuer is a software SM2 CA valid for ten years from an hour ago.
func issuer(t *testing.T, key *sm2.PrivateKey) *smx509.Certificate {
	t.Helper()
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"},
		NotBefore: start, NotAfter: start.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4}}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := smx509.ParseCertificate(der)
	return c
}

func TestCertificateLints(t *testing.T) {
	caKey, leafKey := newKey(t), newKey(t)
	ca := issuer(t, caKey)
	good := func() *smx509.Certificate {
		now := time.Now().Truncate(time.Second)
		return &smx509.Certificate{SerialNumber: big.NewInt(0x1234), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: now, NotAfter: now.AddDate(1, 0, 0), BasicConstraintsValid: true,
			KeyUsage: lint.Signing.KeyUsage(), SubjectKeyId: []byte{9, 9}}
	}
	tests := []struct {
		name   string
		modify func(*smx509.Certificate)
		usage  lint.Usage
		want   string
	}{
		{"good signing certificate", func(*smx509.Certificate) {}, lint.Signing, ""},
		{"good encryption certificate", func(c *smx509.Certificate) { c.KeyUsage = lint.Encryption.KeyUsage() }, lint.Encryption, ""},
		{"signing usage on encryption certificate", func(*smx509.Certificate) {}, lint.Encryption, "keyUsage"},
		{"good audit key certificate", func(c *smx509.Certificate) { c.KeyUsage = lint.AuditLog.KeyUsage() }, lint.AuditLog, ""},
		{"signing usage passed off as audit key", func(*smx509.Certificate) {}, lint.AuditLog, "keyUsage"},
		{"keyCertSign on end entity", func(c *smx509.Certificate) { c.KeyUsage |= smx509.KeyUsageCertSign }, lint.Signing, "keyUsage"},
		{"marked CA", func(c *smx509.Certificate) { c.IsCA = true }, lint.Signing, "marked CA"},
		{"serial of 21 octets", func(c *smx509.Certificate) {
			c.SerialNumber = new(big.Int).SetBytes(append([]byte{1}, make([]byte, 20)...))
		}, lint.Signing, "21 octets"},
		{"validity beyond issuer", func(c *smx509.Certificate) { c.NotAfter = ca.NotAfter.Add(time.Hour) }, lint.Signing, "outside the issuer"},
		{"starts before issuer", func(c *smx509.Certificate) { c.NotBefore = ca.NotBefore.Add(-time.Hour) }, lint.Signing, "outside the issuer"},
		{"no SKI", func(c *smx509.Certificate) { c.SubjectKeyId = nil }, lint.Signing, "subjectKeyIdentifier missing"},
		{"empty subject", func(c *smx509.Certificate) { c.Subject = pkix.Name{}; c.DNSNames = []string{"a.cn"} }, lint.Signing, "subject is empty"},
		{"wrong AKI", func(c *smx509.Certificate) { c.AuthorityKeyId = []byte{7} }, lint.Signing, "authorityKeyIdentifier"},
		{"subject is the issuer's", func(c *smx509.Certificate) { c.Subject = pkix.Name{CommonName: "CA"} }, lint.Signing, "subject equals the issuer's name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := good()
			tt.modify(tmpl)
			parent := ca
			if tt.name == "wrong AKI" {
				p := *ca
				p.SubjectKeyId = nil // so the template's AKI is used
				parent = &p
			}
			der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, &leafKey.PublicKey, caKey)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.Certificate(der, ca, tt.usage), tt.want)
			c, err := lint.ParsedCertificate(der, ca, tt.usage)
			wantLint(t, err, tt.want)
			if c == nil || !bytes.Equal(c.Raw, der) {
				t.Fatalf("ParsedCertificate returned %v, want the certificate linted", c)
			}
			wantLint(t, lint.CertificateTBS(c.RawTBSCertificate, ca, tt.usage), tt.want)
			// The signed certificate linted on its TBS's parse before
			// signing: the same verdict, and the same certificate as a
			// parse of the signed bytes.
			draft, err := lint.CertificateDraft(c.RawTBSCertificate, ca, tt.usage)
			wantLint(t, err, tt.want)
			signed, err := lint.SignedCertificate(der, draft, ca, tt.usage)
			wantLint(t, err, tt.want)
			if !reflect.DeepEqual(signed, c) {
				t.Fatalf("SignedCertificate returned\n%+v\nwant the parse of the signed certificate\n%+v", signed, c)
			}
		})
	}
	for _, junk := range [][]byte{[]byte("junk"), {0x30, 0x03, 0x02, 0x01, 0x01}} {
		if err := lint.Certificate(junk, ca, lint.Signing); err == nil {
			t.Fatalf("%x passed lint", junk)
		}
		if err := lint.CertificateTBS(junk, ca, lint.Signing); err == nil {
			t.Fatalf("%x passed lint as a TBS", junk)
		}
	}
}

// TestTBSLintsAsSigned: a TBS linted alone passes or fails as the signed
// certificate does, and what only the signed object can get wrong (an
// outer algorithm other than the TBS's) is still caught on the signed one.
func TestTBSLintsAsSigned(t *testing.T) {
	caKey, leafKey := newKey(t), newKey(t)
	ca := issuer(t, caKey)
	now := time.Now().Truncate(time.Second)
	der, err := smx509.CreateCertificate(rand.Reader, &smx509.Certificate{SerialNumber: big.NewInt(0x1234),
		Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.AddDate(1, 0, 0), BasicConstraintsValid: true,
		KeyUsage: lint.Signing.KeyUsage(), SubjectKeyId: []byte{9, 9}}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := smx509.ParseCertificate(der)
	if err := lint.CertificateTBS(c.RawTBSCertificate, ca, lint.Signing); err != nil {
		t.Fatalf("TBS of a good certificate: %v", err)
	}
	// The same TBS under another outer algorithm (ECDSA with SHA-256).
	ecdsaSHA256 := []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawTBSCertificate)
		b.AddBytes(ecdsaSHA256)
		b.AddASN1BitString(c.Signature)
	})
	swapped, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wantLint(t, lint.Certificate(swapped, ca, lint.Signing), "signature algorithm")
	draft, err := lint.CertificateDraft(c.RawTBSCertificate, ca, lint.Signing)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lint.SignedCertificate(swapped, draft, ca, lint.Signing)
	wantLint(t, err, "signature algorithm")

	// Linted on the draft's parse, a signed certificate must carry the
	// draft's TBS and a well-formed signature.
	other, err := smx509.CreateCertificate(rand.Reader, &smx509.Certificate{SerialNumber: big.NewInt(0x1235),
		Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.AddDate(1, 0, 0), BasicConstraintsValid: true,
		KeyUsage: lint.Signing.KeyUsage(), SubjectKeyId: []byte{9, 9}}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lint.SignedCertificate(other, draft, ca, lint.Signing)
	wantLint(t, err, "not the one linted")
	tbsAlg, err := lint.SignatureAlgorithm(c.RawTBSCertificate)
	if err != nil {
		t.Fatal(err)
	}
	var bad cryptobyte.Builder
	bad.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawTBSCertificate)
		b.AddBytes(tbsAlg)
		b.AddASN1(casn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{8, 0xff}) }) // 8 unused bits
	})
	badSig, err := bad.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	_, err = lint.SignedCertificate(badSig, draft, ca, lint.Signing)
	wantLint(t, err, "signatureValue")
	if _, err := lint.SignedCertificate(der, nil, ca, lint.Signing); err == nil {
		t.Fatal("a signed certificate passed lint without a draft")
	}
	if s, err := lint.SignedCertificate(der, draft, ca, lint.Signing); err != nil || !reflect.DeepEqual(s, c) {
		t.Fatalf("SignedCertificate = %v, %v; want the certificate as parsed", s, err)
	}
	if err := lint.CertificateTBS(append(bytes.Clone(c.RawTBSCertificate), 0), ca, lint.Signing); err == nil {
		t.Fatal("a TBS with a trailing byte passed lint")
	}
}

func TestCRLLints(t *testing.T) {
	caKey := newKey(t)
	ca := issuer(t, caKey)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name string
		tmpl smx509.RevocationList
		want string
	}{
		{"good", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, ""},
		{"no nextUpdate gap", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: now, NextUpdate: now}, "nextUpdate"},
		{"entry after thisUpdate", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			RevokedCertificateEntries: []smx509.RevocationListEntry{{SerialNumber: big.NewInt(9), RevocationTime: now.Add(time.Minute)}}}, "after thisUpdate"},
		{"CRL number of Unix nanoseconds", smx509.RevocationList{Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, ""},
		{"CRL number of 20 octets", smx509.RevocationList{Number: new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, ""},
		{"zero CRL number", smx509.RevocationList{Number: big.NewInt(0), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, "cRLNumber"},
		{"thisUpdate after the issuer's notAfter", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: ca.NotAfter.Add(time.Second),
			NextUpdate: ca.NotAfter.Add(time.Hour)}, "outside the issuer's validity"},
		{"thisUpdate before the issuer's notBefore", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: ca.NotBefore.Add(-time.Second),
			NextUpdate: now}, "outside the issuer's validity"},
		{"last CRL: nextUpdate past the issuer's notAfter", smx509.RevocationList{Number: big.NewInt(5), ThisUpdate: ca.NotAfter.Add(-time.Hour),
			NextUpdate: ca.NotAfter.Add(24 * time.Hour)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, err := smx509.CreateRevocationList(rand.Reader, &tt.tmpl, ca, caKey)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.CRL(der, ca), tt.want)
			crl, err := smx509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.CRLTBS(crl.RawTBSRevocationList, ca), tt.want)
		})
	}
}

// wantLint checks err is nil when want is empty, else mentions want.
func wantLint(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("lint: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("lint = %v, want %q", err, want)
	}
}

func TestCALints(t *testing.T) {
	rootKey, subKey := newKey(t), newKey(t)
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	caTemplate := func(name string, pathLen int) *smx509.Certificate {
		return &smx509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
			NotBefore: start, NotAfter: start.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
			MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
			KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{5, 5}}
	}
	rootTmpl := caTemplate("Root", 1)
	rootTmpl.SubjectKeyId = []byte{1, 1}
	rootDER, err := smx509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := smx509.ParseCertificate(rootDER)
	if err := lint.CA(rootDER, nil); err != nil {
		t.Fatalf("good root: %v", err)
	}
	leafOnly := *root
	leafOnly.MaxPathLen, leafOnly.MaxPathLenZero = 0, true

	tests := []struct {
		name   string
		modify func(*smx509.Certificate)
		issuer *smx509.Certificate
		want   string
	}{
		{"good issuing CA", func(*smx509.Certificate) {}, root, ""},
		{"good with digitalSignature", func(c *smx509.Certificate) { c.KeyUsage |= smx509.KeyUsageDigitalSignature }, root, ""},
		{"not a CA", func(c *smx509.Certificate) { c.IsCA, c.MaxPathLenZero, c.MaxPathLen = false, false, -1 }, root, "basicConstraints"},
		{"encipherment", func(c *smx509.Certificate) { c.KeyUsage |= smx509.KeyUsageKeyEncipherment }, root, "keyUsage"},
		{"no cRLSign", func(c *smx509.Certificate) { c.KeyUsage = smx509.KeyUsageCertSign }, root, "keyUsage"},
		{"extKeyUsage", func(c *smx509.Certificate) { c.ExtKeyUsage = []smx509.ExtKeyUsage{smx509.ExtKeyUsageServerAuth} }, root, "extKeyUsage"},
		{"path length not below the issuer's", func(c *smx509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 1, false }, root, "below the issuer's"},
		{"unconstrained under a constrained issuer", func(c *smx509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = -1, false }, root, "below the issuer's"},
		{"issuer allows no CA", func(*smx509.Certificate) {}, &leafOnly, "may not certify a CA"},
		{"outlives the issuer", func(c *smx509.Certificate) { c.NotAfter = root.NotAfter.Add(time.Second) }, root, "outside the issuer"},
		{"self-issued link keeps the path length", func(c *smx509.Certificate) {
			c.Subject, c.MaxPathLen, c.MaxPathLenZero = root.Subject, 1, false
			c.AuthorityKeyId = root.SubjectKeyId // the encoder leaves it to the template when names match
		}, root, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := caTemplate("Issuing", 0)
			tt.modify(tmpl)
			der, err := smx509.CreateCertificate(rand.Reader, tmpl, root, &subKey.PublicKey, rootKey)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.CA(der, tt.issuer), tt.want)
			c, err := smx509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.CATBS(c.RawTBSCertificate, tt.issuer), tt.want)
		})
	}
}
