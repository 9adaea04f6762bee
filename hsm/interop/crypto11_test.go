// Package interop checks that keys signerd generates are ordinary PKCS#11
// keys that another client can find and use. The other client, crypto11,
// initialises and finalises the module itself, so it runs in a child
// process of its own, after signerd's hsm package has closed the module.
package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ThalesGroup/crypto11"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

const childEnv = "SIGNERD_CRYPTO11_CHILD"

func TestECDSAKeyIsUsableByCrypto11(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.StockModule(t), "interop")
	m, err := hsm.Open(tok.Config(nil))
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.GenerateKey(context.Background(), hsm.KeySpec{Label: "issuing-ecdsa", Algorithm: hsm.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pin"), tok.PIN, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrypto11Child$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, "CHILD_MODULE="+tok.Module, "CHILD_TOKEN="+tok.Label)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crypto11 child: %v\n%s", err, out)
	}

	pubDER, err := os.ReadFile(filepath.Join(dir, "pub.der"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Public.Equal(pub) {
		t.Fatal("crypto11 found a different public key under our label")
	}
	sig, err := os.ReadFile(filepath.Join(dir, "sig"))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("signed by crypto11"))
	if !ecdsa.VerifyASN1(k.Public, digest[:], sig) {
		t.Fatal("crypto11's signature with our key does not verify")
	}
}

// TestCrypto11Child runs only as the child: it finds the key by label with
// crypto11, signs with it, and writes the public key and signature.
func TestCrypto11Child(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestECDSAKeyIsUsableByCrypto11")
	}
	pin, err := os.ReadFile(filepath.Join(dir, "pin"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := crypto11.Configure(&crypto11.Config{
		Path: os.Getenv("CHILD_MODULE"), TokenLabel: os.Getenv("CHILD_TOKEN"), Pin: string(pin),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	signer, err := ctx.FindKeyPair(nil, []byte("issuing-ecdsa"))
	if err != nil || signer == nil {
		t.Fatalf("crypto11 did not find the key by label: %v", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("signed by crypto11"))
	sig, err := signer.Sign(nil, digest[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"pub.der": pubDER, "sig": sig} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
