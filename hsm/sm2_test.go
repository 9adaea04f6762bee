package hsm_test

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// sm2Key opens a fresh SM2-capable token and generates one SM2 key in it.
func sm2Key(t *testing.T) (*hsm.Module, *hsm.Key) {
	t.Helper()
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "sm2-test")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	k, err := m.GenerateKey(context.Background(), hsm.KeySpec{Label: "issuing", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	return m, k
}

// newSM2Signer generates an SM2 key labelled "k" in m and returns its signer.
func newSM2Signer(tb testing.TB, m *hsm.Module) (*hsm.Key, *hsm.SM2Signer) {
	tb.Helper()
	k, err := m.GenerateKey(context.Background(), hsm.KeySpec{Label: "k", Algorithm: hsm.SM2})
	if err != nil {
		tb.Fatal(err)
	}
	s, err := k.SM2Signer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return k, s
}

func TestSM2SignatureVerifiesWithGmsm(t *testing.T) {
	_, k := sm2Key(t)
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("to be signed")
	sig, err := s.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
	if err != nil {
		t.Fatal(err)
	}
	if !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
		t.Fatal("token signature does not verify with gmsm")
	}
	if sm2.VerifyASN1WithSM2(k.Public, nil, []byte("other message"), sig) {
		t.Fatal("signature verifies for another message")
	}
	// The pkcs7 path hands over e itself with a zero hash.
	sig, err = s.Sign(rand.Reader, s.Digest(msg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
		t.Fatal("digest-path signature does not verify")
	}
}

func TestSM2SignatureVerifiesWithOpenSSL(t *testing.T) {
	_, k := sm2Key(t)
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	msg := []byte("verified by an independent implementation")
	sig, err := s.SignMessage(rand.Reader, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := smx509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "msg"), msg)
	writeFile(t, filepath.Join(dir, "sig"), sig)
	writeFile(t, filepath.Join(dir, "pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	verify := func(msgFile string) error {
		return exec.Command("openssl", "pkeyutl", "-verify", "-rawin", "-digest", "sm3",
			"-pkeyopt", "distid:1234567812345678", "-pubin", "-inkey", filepath.Join(dir, "pub.pem"),
			"-in", msgFile, "-sigfile", filepath.Join(dir, "sig")).Run()
	}
	if err := verify(filepath.Join(dir, "msg")); err != nil {
		t.Fatalf("openssl rejects the token's SM2 signature: %v", err)
	}
	writeFile(t, filepath.Join(dir, "other"), []byte("another message"))
	if err := verify(filepath.Join(dir, "other")); err == nil {
		t.Fatal("openssl accepts the signature for another message")
	}
}

func TestSelfSignedSM2CertificatePassesOpenSSLVerify(t *testing.T) {
	_, k := sm2Key(t)
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &smx509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "signerd test root", Organization: []string{"signerd"}, Country: []string{"CN"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          k.ID,
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public, s)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("gmsm rejects the self-signed certificate: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "root.pem")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	out, err := exec.Command("openssl", "verify", "-CAfile", path, path).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// openssl verify does not check a trust anchor's own signature, so the
	// self-signature is checked with the README's openssl recipe.
	signed := filepath.Join(dir, "root.der")
	writeFile(t, signed, der)
	out, err = exec.Command(filepath.Join(hsmtest.RepoRoot(t), "testdata/openssl-sm2-verify.sh"), signed, path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl rejects the certificate's self-signature: %v\n%s", err, out)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
