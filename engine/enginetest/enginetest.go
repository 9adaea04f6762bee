// Package enginetest sets up a CA for tests: an SM2 SoftHSM2 token holding
// a root and an issuing key, the root self-signed and the issuing CA
// certified by it, all through the HSM, plus CSRs from software applicant
// keys, and stores on each engine the store runs on (a bbolt file, a
// PostgreSQL database), to reopen, and to cut back, edit or restore as an
// attacker or an operator would.
package enginetest

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	bolt "go.etcd.io/bbolt"

	"signerd/engine"
	"signerd/hsm"
	"signerd/hsm/hsmtest"
	"signerd/issuance"
	"signerd/store"
)

// CA is a root and an issuing CA with keys in one token.
type CA struct {
	Token  *hsmtest.Token
	Module *hsm.Module
	Root   *smx509.Certificate
	Cert   *smx509.Certificate // the issuing CA
	Signer *hsm.SM2Signer      // the issuing key
	Issuer *issuance.Issuer
}

// Key labels in the token.
const (
	RootLabel    = "root-2026"
	IssuingLabel = "issuing-2026"
)

// NewCA makes a token with a root and an issuing CA valid from an hour ago
// for ten years.
func NewCA(t testing.TB) *CA {
	t.Helper()
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "ca")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	rootKey, err := m.GenerateKey(ctx, hsm.KeySpec{Label: RootLabel, Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	issKey, err := m.GenerateKey(ctx, hsm.KeySpec{Label: IssuingLabel, Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	rootSigner := mustSigner(t, rootKey)
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	rootTmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signerd Test Root CA", Organization: []string{"signerd"}, Country: []string{"CN"}},
		NotBefore: start, NotAfter: start.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: hsm.KeyID(rootKey.Public),
	}
	root := mustCreate(t, rootTmpl, rootTmpl, rootKey.Public, rootSigner)
	issTmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "signerd Test Issuing CA", Organization: []string{"signerd"}, Country: []string{"CN"}},
		NotBefore: start, NotAfter: start.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: hsm.KeyID(issKey.Public),
	}
	cert := mustCreate(t, issTmpl, root, issKey.Public, rootSigner)
	signer := mustSigner(t, issKey)
	iss := MustIssuer(t, cert, issKey)
	return &CA{Token: tok, Module: m, Root: root, Cert: cert, Signer: signer, Issuer: iss}
}

// MustIssuer is the issuer of cert and key as signerd loads it.
func MustIssuer(t testing.TB, cert *smx509.Certificate, key *hsm.Key) *issuance.Issuer {
	t.Helper()
	signer, err := issuance.KeySigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuance.NewIssuer(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func mustSigner(t testing.TB, k *hsm.Key) *hsm.SM2Signer {
	t.Helper()
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCreate(t testing.TB, tmpl, parent *smx509.Certificate, pub any, signer *hsm.SM2Signer) *smx509.Certificate {
	t.Helper()
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// OpenStore opens a store in a temporary folder, closed when the test ends.
func OpenStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "signerd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Engine starts an engine over st issuing with the CA, with the HSM's RNG;
// cfg's zero fields take the engine's defaults. It is closed when the test
// ends.
func (ca *CA) Engine(t testing.TB, st *store.Store, cfg engine.Config) *engine.Engine {
	t.Helper()
	cfg.Store = st
	if cfg.Issuers == nil {
		cfg.Issuers = []*issuance.Issuer{ca.Issuer}
	}
	if cfg.Random == nil {
		cfg.Random = ca.Module.Random()
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// NewCSR makes an applicant key and a CSR for it signed with the default
// SM2 ID. The CSR's subject is deliberately not what the RA vets.
func NewCSR(t testing.TB) (*sm2.PrivateKey, []byte) {
	t.Helper()
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{
		Subject: pkix.Name{CommonName: "applicant-typed name"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// WritePEM writes DER blocks of type typ to a file in dir and returns its
// path.
func WritePEM(t testing.TB, dir, name, typ string, ders ...[]byte) string {
	t.Helper()
	var b strings.Builder
	for _, der := range ders {
		pem.Encode(&b, &pem.Block{Type: typ, Bytes: der})
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// OpenSSL runs openssl and returns its combined output; it fails the test
// if openssl is missing, not if the command fails.
func OpenSSL(t testing.TB, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not installed (make deps)")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return string(out), err
}

// SM2ID is the GM/T 0009 default signer ID, as openssl options want it.
const SM2ID = "distid:1234567812345678"

// OpenSSLVerify has openssl verify leaf up to the CA's root. OpenSSL 3
// computes Z with an empty ID unless given one (-vfyopt), and gives it only
// to the certificate named on the command line (openssl/openssl#23471), so
// each link is checked on its own: the issuing CA under the root, then the
// leaf under the issuing CA as a partial chain.
func (ca *CA) OpenSSLVerify(t testing.TB, leaf []byte) {
	t.Helper()
	dir := t.TempDir()
	root := WritePEM(t, dir, "root.pem", "CERTIFICATE", ca.Root.Raw)
	iss := WritePEM(t, dir, "issuing.pem", "CERTIFICATE", ca.Cert.Raw)
	path := WritePEM(t, dir, "leaf.pem", "CERTIFICATE", leaf)
	for _, args := range [][]string{
		{"-CAfile", root, iss},
		{"-partial_chain", "-CAfile", iss, path},
	} {
		out, err := OpenSSL(t, append([]string{"verify", "-vfyopt", SM2ID}, args...)...)
		if err != nil || !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify %v: %v\n%s", args, err, out)
		}
	}
}

// OpenSSLVerifySigned has openssl check the SM2 signature on a DER
// certificate or CRL against signer's certificate, with
// testdata/openssl-sm2-verify.sh, the recipe the README gives relying
// parties. (OpenSSL 3's crl -verify cannot be given an SM2 ID, and verify
// skips a trust anchor's own signature.)
func OpenSSLVerifySigned(t testing.TB, signer *smx509.Certificate, der []byte) {
	t.Helper()
	dir := t.TempDir()
	signed := filepath.Join(dir, "signed.der")
	os.WriteFile(signed, der, 0o600)
	cert := WritePEM(t, dir, "signer.pem", "CERTIFICATE", signer.Raw)
	out, err := exec.Command(filepath.Join(hsmtest.RepoRoot(t), "testdata/openssl-sm2-verify.sh"), signed, cert).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl-sm2-verify.sh: %v\n%s", err, out)
	}
}

// Saved is what a child process needs to act as the CA: the token and
// where the issuing CA's certificate is.
type Saved struct {
	Module     string `json:"module"`
	TokenLabel string `json:"token_label"`
	PINFile    string `json:"pin_file"`
	CertFile   string `json:"cert_file"`
}

// Save writes the CA's token details, PIN file and certificate to dir.
func (ca *CA) Save(t testing.TB, dir string) string {
	t.Helper()
	s := Saved{Module: ca.Token.Module, TokenLabel: ca.Token.Label,
		PINFile: filepath.Join(dir, "pin"), CertFile: filepath.Join(dir, "issuing.der")}
	if err := os.WriteFile(s.PINFile, ca.Token.PIN, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.CertFile, ca.Cert.Raw, 0o600); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(s)
	path := filepath.Join(dir, "ca.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// LoadIssuer opens the token a saved CA describes (SOFTHSM2_CONF must be
// inherited) and returns the module and the issuer.
func LoadIssuer(path string) (*hsm.Module, *issuance.Issuer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var s Saved
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, err
	}
	pin, err := hsm.ReadPIN(hsm.PINSource{File: s.PINFile})
	if err != nil {
		return nil, nil, err
	}
	prof, _ := hsm.Profile(hsm.DefaultProfile)
	m, err := hsm.Open(hsm.Config{ModulePath: s.Module, TokenLabel: s.TokenLabel, PIN: pin, SM2: &prof})
	if err != nil {
		return nil, nil, err
	}
	iss, _, err := issuance.LoadIssuer(context.Background(), m, IssuingLabel, s.CertFile, nil)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, iss, nil
}

// SoftwareRoot is a root CA certificate of a software key: a root that is
// not the CA's, for tests that must refuse it.
func SoftwareRoot(t testing.TB) *smx509.Certificate {
	t.Helper()
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signerd Test Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(20, 0, 0), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// CutAuditLog cuts the audit log of the store file at path back to the
// seal seq as someone who can write the file would: later events deleted,
// head and last-seal pointer rewritten, so the shorter log is well formed
// and sealed. Only the token's audit anchor can tell.
func CutAuditLog(t testing.TB, path string, seq uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := binary.BigEndian.AppendUint64(nil, seq)
	if err := db.Update(func(tx *bolt.Tx) error {
		b, meta := tx.Bucket([]byte("audit")), tx.Bucket([]byte("meta"))
		for {
			k, _ := b.Cursor().Last()
			if k == nil || binary.BigEndian.Uint64(k) <= seq {
				break
			}
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		stored := b.Get(key)
		if stored == nil {
			return fmt.Errorf("no event %d", seq)
		}
		head, _ := json.Marshal(map[string]any{"seq": seq, "hash": store.ChainHash(stored)})
		if err := meta.Put([]byte("audit-head"), head); err != nil {
			return err
		}
		return meta.Put([]byte("audit-last-seal"), key)
	}); err != nil {
		t.Fatal(err)
	}
}
