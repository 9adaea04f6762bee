package ceremony

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/hsm/split"
	"signerd/issuance"
)

// prepareToken checks an hsm: section; without a PIN source the PIN is
// asked for on the terminal.
func prepareToken(dir string, t *hsm.TokenSpec) error {
	t.Module = os.ExpandEnv(t.Module) // module paths differ per machine
	if err := t.Resolve(true); err != nil {
		return fmtField("hsm", err)
	}
	resolvePaths(dir, &t.PINFile)
	for i := range t.PINShares {
		resolvePaths(dir, &t.PINShares[i])
	}
	return nil
}

func fmtField(field string, err error) error { return fmt.Errorf("%s: %w", field, err) }

// openToken logs in to the token the spec names.
func (r *runner) openToken(t hsm.TokenSpec) (*hsm.Module, error) {
	m, err := t.Open(1)
	if err != nil {
		return nil, err
	}
	how := "PIN file"
	switch {
	case len(t.PINShares) > 0:
		how = fmt.Sprintf("PIN rebuilt from %d custodians' shares", len(t.PINShares))
	case t.PINCred != "":
		how = "PIN credential"
	case t.PINFile == "":
		how = "PIN typed at the terminal"
	}
	r.step("logged in to token %s through %s (%s)", t.Name(), t.Module, how)
	return m, nil
}

func publicOf(s crypto.Signer) *ecdsa.PublicKey { return s.Public().(*ecdsa.PublicKey) }

// standIn is a throwaway key in place of one a dry run does not generate,
// so the certificates it would sign can still be linted.
func standIn(alg hsm.Algorithm) (*caKey, error) {
	tw, err := issuance.Throwaway(alg)
	if err != nil {
		return nil, err
	}
	return &caKey{Key: &hsm.Key{Label: "(throwaway)", Algorithm: alg, Public: publicOf(tw)}, signer: tw}, nil
}

// publicKeyFingerprint is the SHA-256 of the SubjectPublicKeyInfo, as
// `openssl pkey -pubin -outform DER | openssl dgst -sha256` prints it.
func publicKeyFingerprint(pub *ecdsa.PublicKey) string {
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "(unencodable)"
	}
	sum := sha256.Sum256(der)
	return "sha256 " + hex.EncodeToString(sum[:])
}

func (r *runner) writeKeyAndCert(pubPath string, pub *ecdsa.PublicKey, certPath string, cert *smx509.Certificate) error {
	if pubPath != "" {
		data, err := pemPublicKey(pub)
		if err != nil {
			return err
		}
		if err := r.write(pubPath, data, false); err != nil {
			return err
		}
	}
	return r.write(certPath, pemCertificate(cert), false)
}

// tokenInit initialises a token with a user PIN nobody chooses: it is
// drawn at random, split among custodians, and never shown whole.
type tokenInit struct {
	Header    `yaml:",inline"`
	Module    string    `yaml:"module"`
	Label     string    `yaml:"label"`
	SOPINFile string    `yaml:"so_pin_file"`
	PIN       SplitSpec `yaml:"pin"`
}

func (c *tokenInit) header() *Header { return &c.Header }
func (c *tokenInit) objects() string { return "token " + c.Label }

func (c *tokenInit) prepare(dir string) error {
	c.Module = os.ExpandEnv(c.Module)
	switch {
	case c.Module == "" || c.Label == "":
		return errors.New("module and label are required")
	case c.SOPINFile == "":
		return errors.New("so_pin_file is required (the SO PIN stays with the security officer)")
	}
	if err := c.PIN.check(); err != nil {
		return fmtField("pin", err)
	}
	resolvePaths(dir, &c.SOPINFile)
	c.PIN.resolve(dir)
	return nil
}

// pinBytes is the generated PIN's entropy: 128 bits, written as 32 hex
// digits, which every HSM we know accepts.
const pinBytes = 16

func (c *tokenInit) perform(r *runner) error {
	if err := r.outputsAbsent(c.PIN.outputs()...); err != nil {
		if present, perr := hsm.TokenPresent(c.Module, c.Label); perr == nil && !present {
			// Shares are written before the token; a run stopped between
			// the two (a crash) leaves shares of a PIN no token has. They
			// are not removed here: they may be another token's.
			return fmt.Errorf("%w (no token labelled %q exists: if a run of this ceremony stopped "+
				"before initialising it, its shares hold a PIN no token has; remove them and run it again)", err, c.Label)
		}
		return err
	}
	present, err := hsm.TokenPresent(c.Module, c.Label)
	if err != nil {
		return err
	}
	if present {
		return fmt.Errorf("a token labelled %q exists; token-init never reinitialises one", c.Label)
	}
	r.step("checked: module %s has no token labelled %q", c.Module, c.Label)
	soPIN, err := hsm.ReadPIN(hsm.PINSource{File: c.SOPINFile})
	if err != nil {
		return fmt.Errorf("SO %w", err)
	}
	defer hsm.ZeroPIN(soPIN)
	passphrases, err := c.PIN.passphrases()
	if err != nil {
		return err
	}
	defer zeroAll(passphrases)
	if r.dryRun {
		r.step("would initialise token %q and split a random user PIN %d of %d", c.Label, c.PIN.Threshold, len(c.PIN.Custodians))
		return nil
	}

	raw := make([]byte, pinBytes)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	pin := []byte(hex.EncodeToString(raw))
	clear(raw)
	defer hsm.ZeroPIN(pin)
	shares, err := split.Split(split.PIN, pin, c.PIN.Threshold, c.PIN.names())
	if err != nil {
		return err
	}
	// The shares are the only copy of the PIN: every one is written, synced
	// and read back before the token is touched. If that fails, the files
	// are taken back and the token is as it was, so the ceremony can run
	// again once the fault is fixed.
	written, err := r.writeShares(c.PIN, shares, passphrases)
	if err == nil {
		err = r.checkSharesWritten(split.PIN, c.PIN, passphrases, pin)
	}
	if err != nil {
		r.step("token %q left untouched: the PIN shares could not all be written and read back", c.Label)
		r.removeShares(written)
		return err
	}
	serial, err := hsm.InitToken(c.Module, c.Label, soPIN, pin)
	if err != nil {
		if present, perr := hsm.TokenPresent(c.Module, c.Label); perr == nil && !present {
			r.step("token %q was not initialised", c.Label)
			r.removeShares(written)
			return err
		}
		return fmt.Errorf("%w; token %q exists but may lack its user PIN: the security officer "+
			"reinitialises it, or sets the PIN the shares hold", err, c.Label)
	}
	r.step("initialised token %q (serial %s) with the random user PIN the shares hold", c.Label, serial)
	// Prove the shares as written: the first threshold of them, read back
	// from their files, must rebuild a PIN that logs in.
	rebuilt, err := r.readBackShares(split.PIN, c.PIN, passphrases)
	if err != nil {
		return err
	}
	defer hsm.ZeroPIN(rebuilt)
	cfg, err := hsm.TokenSpec{Module: c.Module, Token: c.Label, SM2Profile: "none"}.Config(rebuilt, 1)
	if err != nil {
		return err
	}
	return r.proveLogin(cfg, fmt.Sprintf("%d shares read back from their files", c.PIN.Threshold))
}

func (r *runner) proveLogin(cfg hsm.Config, how string) error {
	m, err := hsm.Open(cfg)
	if err != nil {
		return fmt.Errorf("log in with the PIN rebuilt from %s: %w", how, err)
	}
	defer m.Close()
	objs, err := m.Objects(context.Background())
	if err != nil {
		return err
	}
	r.step("checked: the PIN rebuilt from %s logs in (%d objects in the token)", how, len(objs))
	return nil
}

func zeroAll(secrets [][]byte) {
	for _, s := range secrets {
		clear(s)
	}
}
