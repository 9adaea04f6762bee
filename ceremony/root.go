package ceremony

import (
	"context"
	"errors"

	"signerd/hsm"
	"signerd/issuance"
)

// root generates the root key and self-signs the root certificate.
type root struct {
	Header      `yaml:",inline"`
	HSM         hsm.TokenSpec `yaml:"hsm"`
	Key         NewKey        `yaml:"key"`
	Certificate CAProfile     `yaml:"certificate"`
	Outputs     struct {
		PublicKey   string `yaml:"public_key"`
		Certificate string `yaml:"certificate"`
	} `yaml:"outputs"`
}

func (c *root) header() *Header { return &c.Header }
func (c *root) objects() string { return c.Key.Label }

func (c *root) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	if _, err := c.Key.spec(); err != nil {
		return fmtField("key", err)
	}
	if _, err := c.Certificate.template(); err != nil {
		return fmtField("certificate", err)
	}
	if c.Outputs.Certificate == "" {
		return errors.New("outputs.certificate is required")
	}
	resolvePaths(dir, &c.Outputs.PublicKey, &c.Outputs.Certificate)
	return nil
}

func (c *root) perform(r *runner) error {
	if err := r.outputsAbsent(c.Outputs.PublicKey, c.Outputs.Certificate); err != nil {
		return err
	}
	m, err := r.openForNewKey(c.HSM, c.Key.Label)
	if err != nil {
		return err
	}
	defer m.Close()
	spec, _ := c.Key.spec()
	tmpl, _ := c.Certificate.template()
	if tmpl.SerialNumber, err = issuance.NewSerial(m.Random()); err != nil {
		return err
	}
	if r.dryRun {
		stand, err := standIn(spec.Algorithm)
		if err != nil {
			return err
		}
		_, err = r.signCA("root certificate", tmpl, stand.Public, nil, stand)
		r.step("would generate %s key %q in the token and sign the root certificate with it", spec.Algorithm, spec.Label)
		return err
	}
	k, err := r.generate(m, spec)
	if err != nil {
		return err
	}
	cert, err := r.signCA("root certificate", tmpl, k.Public, nil, k)
	if err != nil {
		return err
	}
	return r.writeKeyAndCert(c.Outputs.PublicKey, k.Public, c.Outputs.Certificate, cert)
}

// generate makes a key in the token and reads it back as a signer.
func (r *runner) generate(m *hsm.Module, spec hsm.KeySpec) (*caKey, error) {
	k, err := m.GenerateKey(context.Background(), spec)
	if err != nil {
		return nil, err
	}
	backup := ""
	if spec.Backup {
		backup = ", wrappable only under a trusted KEK for backup"
	}
	r.step("generated %s key %q in the token: CKA_ID %X, public key %s%s", spec.Algorithm, spec.Label, k.ID, publicKeyFingerprint(k.Public), backup)
	return r.findKey(m, spec.Label, nil)
}
