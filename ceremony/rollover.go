package ceremony

import (
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
)

// rollover replaces the root key (RFC 4210 §4.4 root CA key update): a new
// root key under the old root's name self-signs the new root certificate,
// and two link certificates let each generation of relying parties reach
// the other: new-with-old (the new key, signed by the old key) and
// old-with-new (the old key, signed by the new one). The name stays the
// same so the link certificates are self-issued and do not use up the path
// length the roots allow.
type rollover struct {
	Header         `yaml:",inline"`
	HSM            hsm.TokenSpec `yaml:"hsm"`
	OldKey         string        `yaml:"old_key"`
	OldCertificate string        `yaml:"old_certificate"`
	NewKey         NewKey        `yaml:"new_key"`
	// Certificate is the new root's profile; its subject is the old root's.
	Certificate CAProfile `yaml:"certificate"`
	Outputs     struct {
		PublicKey   string `yaml:"public_key"`
		Certificate string `yaml:"certificate"`
		NewWithOld  string `yaml:"new_with_old"`
		OldWithNew  string `yaml:"old_with_new"`
	} `yaml:"outputs"`
}

func (c *rollover) header() *Header { return &c.Header }
func (c *rollover) objects() string { return c.OldKey + " -> " + c.NewKey.Label }

func (c *rollover) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	if _, err := c.NewKey.spec(); err != nil {
		return fmtField("new_key", err)
	}
	switch {
	case c.OldKey == "" || c.OldCertificate == "":
		return errors.New("old_key and old_certificate are required")
	case c.Certificate.Subject != (Name{}):
		return errors.New("certificate.subject must be absent: the new root keeps the old root's name")
	case c.Outputs.Certificate == "" || c.Outputs.NewWithOld == "" || c.Outputs.OldWithNew == "":
		return errors.New("outputs.certificate, outputs.new_with_old and outputs.old_with_new are required")
	}
	if _, err := c.Certificate.body(); err != nil {
		return fmtField("certificate", err)
	}
	resolvePaths(dir, &c.OldCertificate, &c.Outputs.PublicKey, &c.Outputs.Certificate, &c.Outputs.NewWithOld, &c.Outputs.OldWithNew)
	return nil
}

func (c *rollover) perform(r *runner) error {
	o := c.Outputs
	if err := r.outputsAbsent(o.PublicKey, o.Certificate, o.NewWithOld, o.OldWithNew); err != nil {
		return err
	}
	old, err := issuance.ReadCertificate(c.OldCertificate)
	if err != nil {
		return fmt.Errorf("old root: %w", err)
	}
	if !old.IsCA || old.CheckSignatureFrom(old) != nil {
		return fmt.Errorf("old root %s is not a self-signed CA certificate", c.OldCertificate)
	}
	newTmpl, _ := c.Certificate.body()
	newTmpl.RawSubject = old.RawSubject
	if !newTmpl.NotAfter.After(old.NotAfter) {
		return fmt.Errorf("the new root ends %s, not after the old root's %s", day(newTmpl.NotAfter), day(old.NotAfter))
	}
	if !newTmpl.NotBefore.Before(old.NotAfter) {
		return fmt.Errorf("the new root starts %s, after the old root ends %s: the link certificates need an overlap", day(newTmpl.NotBefore), day(old.NotAfter))
	}

	m, err := r.openToken(c.HSM)
	if err != nil {
		return err
	}
	defer m.Close()
	oldKey, err := r.findKey(m, c.OldKey, old)
	if err != nil {
		return err
	}
	if err := r.labelFree(m, c.NewKey.Label); err != nil {
		return err
	}
	spec, _ := c.NewKey.spec()
	var newKey *caKey
	if r.dryRun {
		if newKey, err = standIn(spec.Algorithm); err != nil {
			return err
		}
		r.step("would generate %s key %q in the token; checking the certificates with a throwaway key in its place", spec.Algorithm, spec.Label)
	} else if newKey, err = r.generate(m, spec); err != nil {
		return err
	}
	if newTmpl.SerialNumber, err = issuance.NewSerial(m.Random()); err != nil {
		return err
	}
	newRoot, err := r.signCA("new root certificate", newTmpl, newKey.Public, nil, newKey)
	if err != nil {
		return err
	}

	// new-with-old: the new key, certified by the old root.
	nwo := linkTemplate(newRoot, old)
	if nwo.SerialNumber, err = issuance.NewSerial(m.Random()); err != nil {
		return err
	}
	newWithOld, err := r.signCA("link certificate new-with-old", nwo, newKey.Public, old, oldKey)
	if err != nil {
		return err
	}
	// old-with-new: the old key, certified by the new root.
	own := linkTemplate(old, newRoot)
	if own.SerialNumber, err = issuance.NewSerial(m.Random()); err != nil {
		return err
	}
	oldWithNew, err := r.signCA("link certificate old-with-new", own, oldKey.Public, newRoot, newKey)
	if err != nil || r.dryRun {
		return err
	}
	if err := r.writeKeyAndCert(o.PublicKey, newKey.Public, o.Certificate, newRoot); err != nil {
		return err
	}
	if err := r.write(o.NewWithOld, pemCertificate(newWithOld), false); err != nil {
		return err
	}
	return r.write(o.OldWithNew, pemCertificate(oldWithNew), false)
}

// linkTemplate certifies subject's key (name, key identifier, path length,
// policies) under issuer, for the time both roots are valid.
func linkTemplate(subject, issuer *smx509.Certificate) *smx509.Certificate {
	return &smx509.Certificate{
		RawSubject:            subject.RawSubject,
		NotBefore:             later(subject.NotBefore, issuer.NotBefore),
		NotAfter:              earlier(subject.NotAfter, issuer.NotAfter),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            subject.MaxPathLen,
		MaxPathLenZero:        subject.MaxPathLen == 0,
		KeyUsage:              smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
		SubjectKeyId:          subject.SubjectKeyId,
		Policies:              subject.Policies,
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
