package ceremony

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"github.com/emmansun/gmsm/sm2"

	"signerd/hsm"
	"signerd/hsm/split"
)

// backup wraps a CA key inside the HSM under a fresh AES-256 KEK that
// exists whole only for the ceremony: it is split among custodians, and the
// wrapped key is written with its public key and a MAC (SPEC §4.3).
type backup struct {
	Header    `yaml:",inline"`
	HSM       hsm.TokenSpec `yaml:"hsm"`
	SOPINFile string        `yaml:"so_pin_file"` // empty: asked at the terminal
	Key       string        `yaml:"key"`
	// PublicKey, if set, is what the key must be: a PEM public key,
	// request or certificate.
	PublicKey string    `yaml:"public_key"`
	KEK       SplitSpec `yaml:"kek"`
	Outputs   struct {
		Backup string `yaml:"backup"`
	} `yaml:"outputs"`
}

func (c *backup) header() *Header { return &c.Header }
func (c *backup) objects() string { return c.Key }

func (c *backup) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	switch {
	case c.Key == "":
		return errors.New("key (the label of the key to back up) is required")
	case c.Outputs.Backup == "":
		return errors.New("outputs.backup is required")
	}
	if err := c.KEK.check(); err != nil {
		return fmtField("kek", err)
	}
	resolvePaths(dir, &c.SOPINFile, &c.PublicKey, &c.Outputs.Backup)
	c.KEK.resolve(dir)
	return nil
}

func (c *backup) perform(r *runner) error {
	if err := r.outputsAbsent(append([]string{c.Outputs.Backup}, c.KEK.outputs()...)...); err != nil {
		return err
	}
	var want *ecdsa.PublicKey
	if c.PublicKey != "" {
		var err error
		if want, err = readPublicKey(c.PublicKey); err != nil {
			return fmt.Errorf("public_key: %w", err)
		}
	}
	pin, err := c.HSM.ReadPIN()
	if err != nil {
		return err
	}
	defer hsm.ZeroPIN(pin)
	cfg, err := c.HSM.Config(pin, 1)
	if err != nil {
		return err
	}
	if err := r.checkBackupKey(cfg, c.Key, want); err != nil {
		return err
	}
	src := hsm.PINSource{File: c.SOPINFile}
	if src.File == "" {
		src.Prompt = "SO PIN for token " + c.HSM.Name() + ": "
	}
	soPIN, err := hsm.ReadPIN(src)
	if err != nil {
		return fmt.Errorf("SO %w", err)
	}
	defer hsm.ZeroPIN(soPIN)
	passphrases, err := c.KEK.passphrases()
	if err != nil {
		return err
	}
	defer zeroAll(passphrases)
	if r.dryRun {
		r.step("would wrap key %q under a new AES-256 KEK split %d of %d", c.Key, c.KEK.Threshold, len(c.KEK.Custodians))
		return nil
	}

	kek := make([]byte, hsm.KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return err
	}
	defer clear(kek)
	shares, err := split.Split(split.KEK, kek, c.KEK.Threshold, c.KEK.names())
	if err != nil {
		return err
	}
	w, err := hsm.BackupKey(cfg, soPIN, c.Key, kek)
	if err != nil {
		return err
	}
	r.step("wrapped key %q inside the HSM under a trusted session KEK (%s, %d bytes)", c.Key, wrapMechanism, len(w.Blob))
	file := &backupFile{WrappedKey: *w, Set: shares[0].Set}
	if err := file.seal(kek); err != nil {
		return err
	}
	data, err := file.marshal()
	if err != nil {
		return err
	}
	if err := r.write(c.Outputs.Backup, data, false); err != nil {
		return err
	}
	if _, err := r.writeShares(c.KEK, shares, passphrases); err != nil {
		return err
	}
	// Prove the outputs as written: shares read back rebuild a KEK that
	// checks the backup file read back.
	rebuilt, err := r.readBackShares(split.KEK, c.KEK, passphrases)
	if err != nil {
		return err
	}
	defer clear(rebuilt)
	written, err := os.ReadFile(c.Outputs.Backup)
	if err != nil {
		return err
	}
	back, err := parseBackupFile(written)
	if err == nil {
		err = back.check(rebuilt)
	}
	if err != nil {
		return fmt.Errorf("read back %s: %w", c.Outputs.Backup, err)
	}
	r.step("checked: the KEK rebuilt from %d shares read back from their files checks the backup file read back", c.KEK.Threshold)
	return nil
}

// checkBackupKey finds the key as the user and checks that the token will
// let it out only under a trusted KEK.
func (r *runner) checkBackupKey(cfg hsm.Config, label string, want *ecdsa.PublicKey) error {
	m, err := hsm.Open(cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	k, err := m.FindKey(context.Background(), label)
	if err != nil {
		return err
	}
	if want != nil && !want.Equal(k.Public) {
		return fmt.Errorf("key %q is not the key given in public_key", label)
	}
	a, err := k.Attributes(context.Background())
	if err != nil {
		return err
	}
	if !a.Extractable || !a.WrapWithTrusted || !a.Sensitive {
		return fmt.Errorf("key %q: %w", label, hsm.ErrNotBackupKey)
	}
	r.step("checked: key %q (%s, public key %s) is sensitive and wrappable only under a trusted KEK", label, k.Algorithm, publicKeyFingerprint(k.Public))
	return nil
}

// restore rebuilds the KEK from custodians' shares, checks the backup file
// with it, unwraps the key into a token as sensitive and non-extractable,
// and proves it by signing.
type restore struct {
	Header    `yaml:",inline"`
	HSM       hsm.TokenSpec `yaml:"hsm"`
	Backup    string        `yaml:"backup"`
	KEKShares []string      `yaml:"kek_shares"`
	Label     string        `yaml:"label"` // default: the label the key was backed up under
	Outputs   struct {
		PublicKey string `yaml:"public_key"`
	} `yaml:"outputs"`
}

func (c *restore) header() *Header { return &c.Header }
func (c *restore) objects() string { return c.Label }

func (c *restore) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	switch {
	case c.Backup == "":
		return errors.New("backup (the wrapped key file) is required")
	case len(c.KEKShares) < 2:
		return errors.New("kek_shares: list the share files the custodians brought")
	}
	resolvePaths(dir, &c.Backup, &c.Outputs.PublicKey)
	for i := range c.KEKShares {
		resolvePaths(dir, &c.KEKShares[i])
	}
	return nil
}

func (c *restore) perform(r *runner) error {
	if err := r.outputsAbsent(c.Outputs.PublicKey); err != nil {
		return err
	}
	data, err := os.ReadFile(c.Backup)
	if err != nil {
		return err
	}
	file, err := parseBackupFile(data)
	if err != nil {
		return fmt.Errorf("backup %s: %w", c.Backup, err)
	}
	if c.Label == "" {
		c.Label = file.Label
	}
	kek, err := hsm.ReadSecretShares(split.KEK, c.KEKShares)
	if err != nil {
		return err
	}
	defer clear(kek)
	if err := file.check(kek); err != nil {
		return err
	}
	r.step("checked: %d shares rebuild the KEK, and it checks backup %s of %s key %q (public key %s)",
		len(c.KEKShares), c.Backup, file.Algorithm, file.Label, publicKeyFingerprint(file.Public))
	m, err := r.openToken(c.HSM)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := r.labelFree(m, c.Label); err != nil {
		return err
	}
	if r.dryRun {
		r.step("would unwrap the key into the token as %q", c.Label)
		return nil
	}
	ctx := context.Background()
	if _, err := m.RestoreKey(ctx, &file.WrappedKey, c.Label, kek); err != nil {
		return err
	}
	if err := r.proveRestored(m, c.Label, file.Public); err != nil {
		if derr := m.DestroyKey(ctx, c.Label); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove the failed restore: %w", derr))
		}
		return err
	}
	if c.Outputs.PublicKey == "" {
		return nil
	}
	pemKey, err := pemPublicKey(file.Public)
	if err != nil {
		return err
	}
	return r.write(c.Outputs.PublicKey, pemKey, false)
}

// proveRestored finds the restored key afresh, checks its attributes, and
// signs with it; the signature must verify under the recorded public key.
func (r *runner) proveRestored(m *hsm.Module, label string, pub *ecdsa.PublicKey) error {
	ctx := context.Background()
	k, err := r.findKey(m, label, nil)
	if err != nil {
		return err
	}
	if !k.Public.Equal(pub) {
		return errors.New("the restored key's public half differs from the backup's")
	}
	a, err := k.Attributes(ctx)
	if err != nil {
		return err
	}
	if !a.Sensitive || a.Extractable || !a.Sign || a.Decrypt || a.Unwrap || a.Derive {
		return fmt.Errorf("restored key attributes are not sensitive, non-extractable and sign-only: %+v", a)
	}
	msg := []byte("signerd restore proof for " + label)
	var ok bool
	if k.Algorithm == hsm.SM2 {
		sig, err := k.signer.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
		if err != nil {
			return fmt.Errorf("sign with the restored key: %w", err)
		}
		ok = sm2.VerifyASN1WithSM2(pub, nil, msg, sig)
	} else {
		digest := sha256.Sum256(msg)
		sig, err := k.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return fmt.Errorf("sign with the restored key: %w", err)
		}
		ok = ecdsa.VerifyASN1(pub, digest[:], sig)
	}
	if !ok {
		return errors.New("a signature by the restored key does not verify under the backup's public key")
	}
	r.step("checked: restored key %q is sensitive, non-extractable and sign-only; its signature verifies under the backed-up public key", label)
	return nil
}
