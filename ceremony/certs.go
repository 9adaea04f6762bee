package ceremony

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/lint"
	"signerd/hsm"
)

// caKey is a key in the HSM and the signer a ceremony uses it through.
type caKey struct {
	*hsm.Key
	signer crypto.Signer
}

// findKey finds label in m; with cert set, the key must be cert's key.
func (r *runner) findKey(m *hsm.Module, label string, cert *smx509.Certificate) (*caKey, error) {
	k, err := m.FindKey(context.Background(), label)
	if err != nil {
		return nil, err
	}
	var s crypto.Signer
	if k.Algorithm == hsm.SM2 {
		s, err = k.SM2Signer(nil)
	} else {
		s, err = k.ECDSASigner()
	}
	if err != nil {
		return nil, err
	}
	if cert != nil {
		if !k.Public.Equal(cert.PublicKey) {
			return nil, fmt.Errorf("key %q is not the key of certificate %q", label, cert.Subject.CommonName)
		}
		r.step("checked: key %q (%s, CKA_ID %X) is the key of %q", label, k.Algorithm, k.ID, cert.Subject.String())
	} else {
		r.step("checked: key %q (%s, CKA_ID %X) is in the token", label, k.Algorithm, k.ID)
	}
	return &caKey{Key: k, signer: s}, nil
}

// openForNewKey logs in to the token and checks label is free there.
func (r *runner) openForNewKey(t hsm.TokenSpec, label string) (*hsm.Module, error) {
	m, err := r.openToken(t)
	if err != nil {
		return nil, err
	}
	if err := r.labelFree(m, label); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// labelFree checks that no object in the token has label.
func (r *runner) labelFree(m *hsm.Module, label string) error {
	objs, err := m.Objects(context.Background())
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.Label == label {
			return fmt.Errorf("the token already holds an object labelled %q: %w", label, hsm.ErrKeyExists)
		}
	}
	r.step("checked: no object in the token is labelled %q (%d objects present)", label, len(objs))
	return nil
}

// throwaway is a software key of alg's kind: it signs certificates only to
// lint them, and nothing it signs leaves the ceremony.
func throwaway(alg hsm.Algorithm) (crypto.Signer, error) {
	switch alg {
	case hsm.SM2:
		return sm2.GenerateKey(rand.Reader)
	case hsm.ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case hsm.ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("no throwaway key for %v", alg)
}

// newSerial draws a certificate serial from the HSM's RNG: 16 bytes, top
// bit clear, never zero.
func newSerial(m *hsm.Module) (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(m.Random(), b); err != nil {
			return nil, fmt.Errorf("draw serial: %w", err)
		}
		b[0] &= 0x7f
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

// signCA makes the CA certificate tmpl for pub, issued by issuer (nil: tmpl
// is self-signed) with signerKey. It lints the certificate signed by a
// throwaway key first; in a dry run it stops there and returns that linted
// draft, which must never be written. Then the HSM signs, and the result
// must have the linted TBS, lint clean again and verify under its issuer.
func (r *runner) signCA(what string, tmpl *smx509.Certificate, pub *ecdsa.PublicKey, issuer *smx509.Certificate, signerKey *caKey) (*smx509.Certificate, error) {
	if len(tmpl.SubjectKeyId) == 0 {
		tmpl.SubjectKeyId = hsm.KeyID(pub)
	}
	if issuer != nil {
		// Set here, not left to the encoder, which omits it when issuer and
		// subject names are equal, as in a rollover's link certificates.
		tmpl.AuthorityKeyId = issuer.SubjectKeyId
	}
	tw, err := throwaway(signerKey.Algorithm)
	if err != nil {
		return nil, err
	}
	parent := *tmpl
	if issuer != nil {
		parent = *issuer
	}
	parent.PublicKey = tw.Public()
	draft, err := smx509.CreateCertificate(rand.Reader, tmpl, &parent, pub, tw)
	if err != nil {
		return nil, fmt.Errorf("%s: build: %w", what, err)
	}
	if err := lint.CA(draft, issuer); err != nil {
		return nil, fmt.Errorf("%s fails lint: %w", what, err)
	}
	linted, err := smx509.ParseCertificate(draft)
	if err != nil {
		return nil, err
	}
	r.step("checked: %s for %q, valid %s to %s, lints clean (signed by a throwaway key)",
		what, linted.Subject.String(), day(tmpl.NotBefore), day(tmpl.NotAfter))
	if r.dryRun {
		return linted, nil
	}

	realParent := tmpl
	if issuer != nil {
		realParent = issuer
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, realParent, pub, signerKey.signer)
	if err != nil {
		return nil, fmt.Errorf("%s: sign in the HSM: %w", what, err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: parse what the HSM signed: %w", what, err)
	}
	if !bytes.Equal(c.RawTBSCertificate, linted.RawTBSCertificate) {
		return nil, fmt.Errorf("%s: the signed TBS differs from the linted one", what)
	}
	if err := lint.CA(der, issuer); err != nil {
		return nil, fmt.Errorf("%s as signed fails lint: %w", what, err)
	}
	verifier := c
	if issuer != nil {
		verifier = issuer
	}
	if err := c.CheckSignatureFrom(verifier); err != nil {
		return nil, fmt.Errorf("%s: signature does not verify under %q: %w", what, verifier.Subject.String(), err)
	}
	r.step("signed %s in the HSM with key %q: serial %X, certificate %s; TBS identical to the linted one; lints clean; signature verifies under %q",
		what, signerKey.Label, c.SerialNumber, fingerprints(c.Raw), verifier.Subject.String())
	return c, nil
}

func day(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// readCertificate reads one PEM or DER certificate.
func readCertificate(path string) (*smx509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q, want CERTIFICATE", path, b.Type)
		}
		data = b.Bytes
	}
	c, err := smx509.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// readPublicKey reads a PEM public key, the key of a certificate, or the
// key of a CSR after checking its self-signature (SM2 with the default ID).
func readPublicKey(path string) (*ecdsa.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: not PEM", path)
	}
	var pub any
	switch b.Type {
	case "PUBLIC KEY":
		pub, err = smx509.ParsePKIXPublicKey(b.Bytes)
	case "CERTIFICATE REQUEST":
		var csr *smx509.CertificateRequest
		if csr, err = smx509.ParseCertificateRequest(b.Bytes); err == nil {
			if err = csr.CheckSignature(); err != nil {
				err = fmt.Errorf("request's self-signature does not verify: %w", err)
			}
			pub = csr.PublicKey
		}
	case "CERTIFICATE":
		var c *smx509.Certificate
		if c, err = smx509.ParseCertificate(b.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		err = fmt.Errorf("PEM block %q, want PUBLIC KEY, CERTIFICATE REQUEST or CERTIFICATE", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: %T key; CA keys are SM2 or ECDSA", path, pub)
	}
	return ec, nil
}

func pemCertificate(c *smx509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// within checks that c's validity nests inside issuer's.
func within(what string, notBefore, notAfter time.Time, issuer *smx509.Certificate) error {
	if notBefore.Before(issuer.NotBefore) || notAfter.After(issuer.NotAfter) {
		return fmt.Errorf("%s validity %s to %s is not inside the issuer's %s to %s",
			what, day(notBefore), day(notAfter), day(issuer.NotBefore), day(issuer.NotAfter))
	}
	return nil
}
