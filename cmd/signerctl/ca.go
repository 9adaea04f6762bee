package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
)

// caFlags describe a CA certificate to make with a token key.
type caFlags struct {
	tokenFlags
	label, subject, out string
	years               int
}

func (f *caFlags) register(fs *flag.FlagSet, years int) {
	f.tokenFlags.register(fs)
	fs.StringVar(&f.label, "label", "", "the CA's key `label` in the token")
	fs.StringVar(&f.subject, "subject", "", "the CA's subject `DN`")
	fs.StringVar(&f.out, "out", "", "write the certificate (PEM) to `file`; must not exist")
	fs.IntVar(&f.years, "years", years, "validity in `years`")
}

// template is a CA certificate template for key, valid from now, with a
// serial from the HSM's RNG.
func (f *caFlags) template(m *hsm.Module, key *hsm.Key, maxPathLen int) (*smx509.Certificate, error) {
	if f.label == "" || f.subject == "" || f.out == "" || f.years < 1 {
		return nil, usageError{"-label, -subject, -out and -years ≥ 1 are required"}
	}
	name, err := parseDN(f.subject)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	serial := make([]byte, 16)
	if _, err := io.ReadFull(m.Random(), serial); err != nil {
		return nil, err
	}
	serial[0] &= 0x7f
	now := time.Now().UTC().Truncate(time.Second)
	return &smx509.Certificate{
		SerialNumber: new(big.Int).SetBytes(serial), Subject: name,
		NotBefore: now, NotAfter: now.AddDate(f.years, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: maxPathLen, MaxPathLenZero: maxPathLen == 0,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: hsm.KeyID(key.Public),
	}, nil
}

// caRoot self-signs a root certificate with a token key.
func caRoot(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ca root", flag.ContinueOnError)
	var f caFlags
	f.register(fs, 20)
	if err := parse(fs, args); err != nil {
		return err
	}
	m, err := f.open()
	if err != nil {
		return err
	}
	defer m.Close()
	key, signer, err := sm2Key(m, f.label)
	if err != nil {
		return err
	}
	tmpl, err := f.template(m, key, 1)
	if err != nil {
		return err
	}
	return issueCA(tmpl, tmpl, key, signer, f.label, f.out, stdout)
}

// caIssuing has the root key certify an issuing CA's token key.
func caIssuing(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ca issuing", flag.ContinueOnError)
	var f caFlags
	f.register(fs, 10)
	rootLabel := fs.String("root-label", "", "the root key's `label` in the token")
	rootCert := fs.String("root-cert", "", "the root certificate `file` (PEM)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *rootLabel == "" || *rootCert == "" {
		return usageError{"-root-label and -root-cert are required"}
	}
	raw, err := os.ReadFile(*rootCert)
	if err != nil {
		return err
	}
	root, err := smx509.ParseCertificatePEM(raw)
	if err != nil {
		return fmt.Errorf("root certificate %s: %w", *rootCert, err)
	}
	m, err := f.open()
	if err != nil {
		return err
	}
	defer m.Close()
	_, rootSigner, err := sm2Key(m, *rootLabel)
	if err != nil {
		return err
	}
	if !rootSigner.Public().(*ecdsa.PublicKey).Equal(root.PublicKey) {
		return fmt.Errorf("key %q is not the key of %s", *rootLabel, *rootCert)
	}
	key, _, err := sm2Key(m, f.label)
	if err != nil {
		return err
	}
	tmpl, err := f.template(m, key, 0)
	if err != nil {
		return err
	}
	if tmpl.NotAfter.After(root.NotAfter) {
		return fmt.Errorf("issuing CA would outlive the root (%s); use fewer -years", root.NotAfter.Format(time.DateOnly))
	}
	return issueCA(tmpl, root, key, rootSigner, *rootLabel, f.out, stdout)
}

func sm2Key(m *hsm.Module, label string) (*hsm.Key, *hsm.SM2Signer, error) {
	key, err := m.FindKey(context.Background(), label)
	if err != nil {
		return nil, nil, err
	}
	signer, err := key.SM2Signer(nil)
	return key, signer, err
}

// issueCA signs tmpl under parent in the HSM, checks the signature and
// writes the certificate.
func issueCA(tmpl, parent *smx509.Certificate, key *hsm.Key, signer *hsm.SM2Signer, signerLabel, out string, stdout io.Writer) error {
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, key.Public, signer)
	if err != nil {
		return fmt.Errorf("sign certificate: %w", err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return err
	}
	issuer := c
	if parent != tmpl {
		issuer = parent
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("signed certificate does not verify: %w", err)
	}
	if err := writeNew(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s, serial %X, valid until %s, signed in the HSM by %q; written to %s\n",
		c.Subject.String(), c.SerialNumber, c.NotAfter.Format(time.DateOnly), signerLabel, out)
	return nil
}
