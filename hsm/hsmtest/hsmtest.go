// Package hsmtest makes throwaway SoftHSM2 tokens for tests: a token folder
// and softhsm2.conf in a temporary folder, tokens initialised through PKCS#11
// (so PINs never appear on a command line), and the paths of the two
// modules signerd is tested against.
package hsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"signerd/hsm"
)

// StockModule is Debian's SoftHSM2 (ECDSA, no SM2).
func StockModule(t testing.TB) string {
	t.Helper()
	path := os.Getenv("SIGNERD_SOFTHSM_STOCK")
	if path == "" {
		path = "/usr/lib/softhsm/libsofthsm2.so"
	}
	requireFile(t, path, "install Debian's softhsm2 (make deps)")
	return path
}

// SM2Module is the SoftHSM2 build with the vendor SM2 mechanism
// (testdata/softhsm), from $SIGNERD_SOFTHSM_SM2 or the build cache.
func SM2Module(t testing.TB) string {
	t.Helper()
	path := os.Getenv("SIGNERD_SOFTHSM_SM2")
	if path == "" {
		root := RepoRoot(t)
		out, err := exec.Command(filepath.Join(root, "testdata/softhsm/build.sh"), "--prefix").Output()
		if err != nil {
			t.Fatalf("locate SM2 SoftHSM2 build: %v", err)
		}
		path = filepath.Join(strings.TrimSpace(string(out)), "lib/softhsm/libsofthsm2.so")
	}
	requireFile(t, path, "build it with 'make softhsm'")
	return path
}

func requireFile(t testing.TB, path, hint string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("PKCS#11 module %s missing: %v (%s)", path, err, hint)
	}
}

// RepoRoot is the folder holding go.mod, found upwards from the test's folder.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's folder")
		}
		dir = parent
	}
}

// Dir is a SoftHSM2 token folder with its own softhsm2.conf, selected for
// this test through SOFTHSM2_CONF (so tests using it cannot run in parallel).
// The module reads SOFTHSM2_CONF when it is initialised, so every module
// opened in the test must be closed by its end.
type Dir struct {
	Path string
	Conf string
}

// NewDir makes a token folder, removed when the test ends, and points
// SOFTHSM2_CONF at it.
func NewDir(t testing.TB) *Dir {
	t.Helper()
	// Not t.TempDir(): test names may hold '=', which softhsm2.conf cannot.
	base, err := os.MkdirTemp("", "signerd-softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d := &Dir{Path: filepath.Join(base, "tokens")}
	if err := os.Mkdir(d.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	d.Conf = filepath.Join(filepath.Dir(d.Path), "softhsm2.conf")
	conf := "directories.tokendir = " + d.Path + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(d.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", d.Conf)
	return d
}

// Token is an initialised token with random PINs.
type Token struct {
	Dir    string // the token folder it lives in
	Module string
	Label  string
	Serial string
	PIN    []byte
	SOPIN  []byte
}

// NewToken initialises a token labelled label in d with module.
func (d *Dir) NewToken(t testing.TB, module, label string) *Token {
	t.Helper()
	tok := &Token{Dir: d.Path, Module: module, Label: label, PIN: randomPIN(t), SOPIN: randomPIN(t)}
	serial, err := hsm.InitToken(module, label, tok.SOPIN, tok.PIN)
	if err != nil {
		t.Fatalf("init token: %v", err)
	}
	tok.Serial = serial
	return tok
}

// NewToken is NewDir(t).NewToken(t, module, label).
func NewToken(t testing.TB, module, label string) *Token {
	t.Helper()
	return NewDir(t).NewToken(t, module, label)
}

// Config is an hsm.Config for the token with the default SM2 profile when
// the module is the SM2 build (profile nil otherwise).
func (tok *Token) Config(sm2 *hsm.MechanismProfile) hsm.Config {
	return hsm.Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, SM2: sm2}
}

// Open opens the token and closes it when the test ends.
func (tok *Token) Open(t testing.TB, cfg hsm.Config) *hsm.Module {
	t.Helper()
	m, err := hsm.Open(cfg)
	if err != nil {
		t.Fatalf("open token: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close token: %v", err)
		}
	})
	return m
}

// SoftHSMProfile is the SM2 profile of the testdata/softhsm build.
func SoftHSMProfile(t testing.TB) *hsm.MechanismProfile {
	t.Helper()
	p, err := hsm.Profile(hsm.DefaultProfile)
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

func randomPIN(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return []byte(hex.EncodeToString(b))
}

// BehindTheBack is a second handle on tok's module, which the test
// process already initialised (and keeps logged in), and tok's slot: it
// acts on the token as another part of the process would, behind the
// back of a Module.
func (tok *Token) BehindTheBack(t testing.TB) (*pkcs11.Ctx, uint) {
	t.Helper()
	p11 := pkcs11.New(tok.Module)
	if p11 == nil {
		t.Fatal("load module")
	}
	slots, err := p11.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		if ti, err := p11.GetTokenInfo(slot); err == nil && ti.Label == tok.Label {
			return p11, slot
		}
	}
	t.Fatal("token not found")
	return nil, 0
}

// PutDataObject creates a token data object under label holding value
// (private or public) through a session of its own on BehindTheBack, as
// another process with a session on the token could; extra attributes
// join the template.
func (tok *Token) PutDataObject(t testing.TB, label string, private bool, value []byte, extra ...*pkcs11.Attribute) {
	t.Helper()
	p11, slot := tok.BehindTheBack(t)
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p11.CloseSession(h)
	if _, err := p11.CreateObject(h, append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, private), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}, extra...)); err != nil {
		t.Fatal(err)
	}
}
