package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
)

func keyGenerate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("key generate", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	label := fs.String("label", "", "new key's `label`")
	algName := fs.String("algorithm", "sm2", "key `algorithm`: sm2, ecdsa-p256 or ecdsa-p384")
	backup := fs.Bool("backup", false, "make the key wrappable under a trusted KEK for split-control backup")
	out := fs.String("out", "", "write the public key (PEM) to `file`; must not exist")
	if err := parse(fs, args); err != nil {
		return err
	}
	alg, err := hsm.ParseAlgorithm(*algName)
	if err != nil {
		return usageError{err.Error()}
	}
	if *label == "" || *out == "" {
		return usageError{"-label and -out are required"}
	}
	m, err := tf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	k, err := m.GenerateKey(context.Background(), hsm.KeySpec{Label: *label, Algorithm: alg, Backup: *backup})
	if err != nil {
		return err
	}
	der, err := smx509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	if err := writeNew(*out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "generated %s key %q in the token, CKA_ID %X\npublic key written to %s\n", alg, k.Label, k.ID, *out)
	return nil
}

func keyCSR(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("key csr", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	label := fs.String("label", "", "token key `label`")
	subject := fs.String("subject", "", "subject `DN`, e.g. \"CN=Example Root CA,O=Example,C=CN\"")
	out := fs.String("out", "", "write the request (PEM) to `file`; must not exist")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *label == "" || *subject == "" || *out == "" {
		return usageError{"-label, -subject and -out are required"}
	}
	name, err := parseDN(*subject)
	if err != nil {
		return usageError{err.Error()}
	}
	m, err := tf.open()
	if err != nil {
		return err
	}
	defer m.Close()
	k, err := m.FindKey(context.Background(), *label)
	if err != nil {
		return err
	}
	var signer crypto.Signer
	if k.Algorithm == hsm.SM2 {
		signer, err = k.SM2Signer(nil)
	} else {
		signer, err = k.ECDSASigner()
	}
	if err != nil {
		return err
	}
	der, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{Subject: name}, signer)
	if err != nil {
		return fmt.Errorf("create request: %w", err)
	}
	// Check our own output before handing it over.
	csr, err := smx509.ParseCertificateRequest(der)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return fmt.Errorf("request signed in the HSM does not verify: %w", err)
	}
	if err := writeNew(*out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "request for %q (%s) signed in the HSM and verified, written to %s\n", k.Label, csr.Subject, *out)
	return nil
}

// writeNew creates path exclusively: outputs are never overwritten.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
