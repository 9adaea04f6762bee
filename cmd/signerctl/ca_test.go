package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine/enginetest"
	"signerd/hsm/hsmtest"
)

func TestCARootAndIssuing(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "ceremony")
	dir := t.TempDir()
	pin := filepath.Join(dir, "pin")
	os.WriteFile(pin, tok.PIN, 0o600)
	token := []string{"-module", tok.Module, "-token", tok.Label, "-pin-file", pin}
	run := func(code int, args ...string) string {
		t.Helper()
		stdout, stderr, got := signerctl(t, "", append(args, token...)...)
		if got != code {
			t.Fatalf("signerctl %v: exit %d, want %d\n%s%s", args, got, code, stdout, stderr)
		}
		return stdout + stderr
	}
	run(0, "key", "generate", "-label", "root", "-out", filepath.Join(dir, "root.pub"))
	run(0, "key", "generate", "-label", "issuing", "-out", filepath.Join(dir, "issuing.pub"))
	rootPEM, issPEM := filepath.Join(dir, "root.pem"), filepath.Join(dir, "issuing.pem")
	run(0, "ca", "root", "-label", "root", "-subject", "CN=Test Root,O=signerd,C=CN", "-out", rootPEM)
	run(1, "ca", "issuing", "-root-label", "issuing", "-root-cert", rootPEM, "-label", "issuing",
		"-subject", "CN=Test Issuing,O=signerd,C=CN", "-out", issPEM) // wrong root key
	if out := run(1, "ca", "issuing", "-root-label", "root", "-root-cert", rootPEM, "-label", "issuing",
		"-subject", "CN=Test Issuing,O=signerd,C=CN", "-years", "30", "-out", issPEM); !strings.Contains(out, "outlive the root") {
		t.Fatalf("issuing CA outliving the root: %s", out)
	}
	run(0, "ca", "issuing", "-root-label", "root", "-root-cert", rootPEM, "-label", "issuing",
		"-subject", "CN=Test Issuing,O=signerd,C=CN", "-out", issPEM)

	root, iss := readCert(t, rootPEM), readCert(t, issPEM)
	if err := iss.CheckSignatureFrom(root); err != nil {
		t.Fatal(err)
	}
	if !iss.IsCA || iss.MaxPathLen != 0 || !iss.MaxPathLenZero || iss.KeyUsage != smx509.KeyUsageCertSign|smx509.KeyUsageCRLSign {
		t.Errorf("issuing CA constraints: CA %v pathlen %d usage %b", iss.IsCA, iss.MaxPathLen, iss.KeyUsage)
	}
	out, err := enginetest.OpenSSL(t, "verify", "-vfyopt", enginetest.SM2ID, "-CAfile", rootPEM, issPEM)
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	enginetest.OpenSSLVerifySigned(t, root, root.Raw)

	// A request for a token key, signed in the HSM, as an external root would certify.
	csr := filepath.Join(dir, "issuing.csr")
	run(0, "key", "csr", "-label", "issuing", "-subject", "CN=Test Issuing,O=signerd,C=CN", "-out", csr)
	out, err = enginetest.OpenSSL(t, "req", "-in", csr, "-noout", "-verify", "-vfyopt", enginetest.SM2ID)
	if err != nil || !strings.Contains(out, "verify OK") {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
}

func readCert(t *testing.T, path string) *smx509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smx509.ParseCertificatePEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
