package ceremony

import (
	"context"
	"crypto/ecdsa"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
)

// caKey is a key in the HSM and the signer a ceremony uses it through.
type caKey struct {
	*hsm.Key
	signer issuance.Signer
}

// findKey finds label in m; with cert set, the key must be cert's key.
func (r *runner) findKey(m *hsm.Module, label string, cert *smx509.Certificate) (*caKey, error) {
	k, err := m.FindKey(context.Background(), label)
	if err != nil {
		return nil, err
	}
	s, err := issuance.KeySigner(k, nil)
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

// signCA makes the CA certificate tmpl for pub, issued by issuer (nil: tmpl
// is self-signed) with k. issuance lints its TBS first; in a dry run it
// stops there and returns that linted draft (with an empty signature),
// which must never be written. Then the HSM signs, and issuance checks the
// signature, the TBS and the lints again.
func (r *runner) signCA(what string, tmpl *smx509.Certificate, pub *ecdsa.PublicKey, issuer *smx509.Certificate, k *caKey) (*smx509.Certificate, error) {
	iss, err := caIssuer(issuer, k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tok, err := iss.PrepareCA(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("%s %w", what, err)
	}
	linted, err := smx509.ParseCertificate(tok.Draft())
	if err != nil {
		return nil, err
	}
	r.step("checked: %s for %q, valid %s to %s, lints clean (its TBS, before any signature)",
		what, linted.Subject.String(), day(tmpl.NotBefore), day(tmpl.NotAfter))
	if r.dryRun {
		return linted, nil
	}
	out, err := iss.SignAndIssue(context.Background(), tok)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	c, under := out.Certificate, "itself"
	if issuer != nil {
		under = fmt.Sprintf("%q", issuer.Subject.String())
	}
	r.step("signed %s in the HSM with key %q: serial %X, certificate %s; signature verifies under %s; TBS identical to the linted one; lints clean",
		what, k.Label, c.SerialNumber, fingerprints(c.Raw), under)
	return c, nil
}

// caIssuer is k as the issuer its certificate issuer names, or as the
// issuer of its own certificate if issuer is nil.
func caIssuer(issuer *smx509.Certificate, k *caKey) (*issuance.Issuer, error) {
	if issuer == nil {
		return issuance.SelfIssuer(k.signer)
	}
	return issuance.NewIssuer(issuer, k.signer)
}

func day(t time.Time) string { return t.UTC().Format(time.RFC3339) }

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
