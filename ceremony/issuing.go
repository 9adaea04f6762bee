package ceremony

import (
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
)

// issuingKey generates an issuing CA's key and writes its public key and,
// if asked, a PKCS#10 request signed in the HSM.
type issuingKey struct {
	Header  `yaml:",inline"`
	HSM     hsm.TokenSpec `yaml:"hsm"`
	Key     NewKey        `yaml:"key"`
	Subject *Name         `yaml:"csr_subject"`
	Outputs struct {
		PublicKey string `yaml:"public_key"`
		CSR       string `yaml:"csr"`
	} `yaml:"outputs"`
}

func (c *issuingKey) header() *Header { return &c.Header }
func (c *issuingKey) objects() string { return c.Key.Label }

func (c *issuingKey) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	if _, err := c.Key.spec(); err != nil {
		return fmtField("key", err)
	}
	if c.Outputs.PublicKey == "" {
		return errors.New("outputs.public_key is required")
	}
	if (c.Outputs.CSR == "") != (c.Subject == nil) {
		return errors.New("outputs.csr and csr_subject go together")
	}
	if c.Subject != nil {
		if _, err := c.Subject.pkix(); err != nil {
			return fmtField("csr_subject", err)
		}
	}
	resolvePaths(dir, &c.Outputs.PublicKey, &c.Outputs.CSR)
	return nil
}

func (c *issuingKey) perform(r *runner) error {
	if err := r.outputsAbsent(c.Outputs.PublicKey, c.Outputs.CSR); err != nil {
		return err
	}
	m, err := r.openForNewKey(c.HSM, c.Key.Label)
	if err != nil {
		return err
	}
	defer m.Close()
	spec, _ := c.Key.spec()
	if r.dryRun {
		r.step("would generate %s key %q in the token (backup: %v)", spec.Algorithm, spec.Label, spec.Backup)
		return nil
	}
	k, err := r.generate(m, spec)
	if err != nil {
		return err
	}
	data, err := pemPublicKey(k.Public)
	if err != nil {
		return err
	}
	if err := r.write(c.Outputs.PublicKey, data, false); err != nil {
		return err
	}
	if c.Subject == nil {
		return nil
	}
	name, _ := c.Subject.pkix()
	der, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{Subject: name}, k.signer)
	if err != nil {
		return fmt.Errorf("sign the request in the HSM: %w", err)
	}
	csr, err := smx509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return fmt.Errorf("request signed in the HSM does not verify: %w", err)
	}
	r.step("signed a PKCS#10 request for %q in the HSM; its signature verifies", name.String())
	return r.write(c.Outputs.CSR, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), false)
}

// issuingCert has a root (or other CA) key certify an issuing CA's key.
type issuingCert struct {
	Header            `yaml:",inline"`
	HSM               hsm.TokenSpec `yaml:"hsm"`
	SigningKey        string        `yaml:"signing_key"`        // label of the issuer's key
	IssuerCertificate string        `yaml:"issuer_certificate"` // PEM
	// PublicKey is the issuing CA's public key (PEM) or its request (its
	// self-signature is checked).
	PublicKey   string    `yaml:"public_key"`
	Certificate CAProfile `yaml:"certificate"`
	Outputs     struct {
		Certificate string `yaml:"certificate"`
	} `yaml:"outputs"`
}

func (c *issuingCert) header() *Header { return &c.Header }
func (c *issuingCert) objects() string { return c.SigningKey }

func (c *issuingCert) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	switch {
	case c.SigningKey == "" || c.IssuerCertificate == "" || c.PublicKey == "":
		return errors.New("signing_key, issuer_certificate and public_key are required")
	case c.Outputs.Certificate == "":
		return errors.New("outputs.certificate is required")
	}
	if _, err := c.Certificate.template(); err != nil {
		return fmtField("certificate", err)
	}
	resolvePaths(dir, &c.IssuerCertificate, &c.PublicKey, &c.Outputs.Certificate)
	return nil
}

func (c *issuingCert) perform(r *runner) error {
	if err := r.outputsAbsent(c.Outputs.Certificate); err != nil {
		return err
	}
	issuer, err := issuance.ReadCertificate(c.IssuerCertificate)
	if err != nil {
		return fmt.Errorf("issuer certificate: %w", err)
	}
	pub, err := readPublicKey(c.PublicKey)
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	if pub.Equal(issuer.PublicKey) {
		return errors.New("public_key is the issuer's own key")
	}
	r.step("read the issuing CA's public key from %s: %s", c.PublicKey, publicKeyFingerprint(pub))
	tmpl, _ := c.Certificate.template()
	if err := within("certificate", tmpl.NotBefore, tmpl.NotAfter, issuer); err != nil {
		return err
	}
	r.step("checked: validity %s to %s is inside the issuer's", day(tmpl.NotBefore), day(tmpl.NotAfter))
	m, err := r.openToken(c.HSM)
	if err != nil {
		return err
	}
	defer m.Close()
	k, err := r.findKey(m, c.SigningKey, issuer)
	if err != nil {
		return err
	}
	if tmpl.SerialNumber, err = issuance.NewSerial(m.Random()); err != nil {
		return err
	}
	cert, err := r.signCA("issuing CA certificate", tmpl, pub, issuer, k)
	if err != nil || r.dryRun {
		return err
	}
	return r.write(c.Outputs.Certificate, pemCertificate(cert), false)
}
