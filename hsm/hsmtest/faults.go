package hsmtest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FaultModule is testdata/pkcs11fault built for one test: a PKCS#11 module
// that passes every call to a real one, and fails, corrupts or disrupts
// them as its control file says, while the process using it runs.
type FaultModule struct {
	Path    string // the module to load in place of Real
	Real    string
	control string
	logins  string
}

// NewFaultModule builds the fault module around real with the machine's C
// compiler, against the PKCS#11 headers of the Go binding signerd uses.
func NewFaultModule(t testing.TB, real string) *FaultModule {
	t.Helper()
	root := RepoRoot(t)
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11")
	list.Dir = root
	headers, err := list.Output()
	if err != nil {
		t.Fatalf("locate the PKCS#11 headers: %v", err)
	}
	dir := t.TempDir()
	f := &FaultModule{Path: filepath.Join(dir, "libpkcs11fault.so"), Real: real, control: filepath.Join(dir, "control"),
		logins: filepath.Join(dir, "logins")}
	cc := exec.Command("cc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror",
		"-I", strings.TrimSpace(string(headers)), "-o", f.Path,
		filepath.Join(root, "testdata/pkcs11fault/pkcs11fault.c"), "-ldl", "-lpthread")
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("build the fault module: %v\n%s", err, out)
	}
	f.Set(t, "ok")
	return f
}

// Env is what a process loading Path needs in its environment.
func (f *FaultModule) Env() []string {
	return []string{"PKCS11FAULT_MODULE=" + f.Real, "PKCS11FAULT_CONTROL=" + f.control, "PKCS11FAULT_LOGINS=" + f.logins}
}

// Logins lists the C_Login calls made through the module so far, one
// "login user=<type> rv=<return value>" each, in hex.
func (f *FaultModule) Logins(t testing.TB) []string {
	t.Helper()
	raw, err := os.ReadFile(f.logins)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	text := strings.TrimSpace(string(raw))
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// Set makes fault the module's behaviour from its next intercepted call:
// ok, sign-error, sign-corrupt, pin-locked, or the one-shot close-sessions,
// logout and logout-locked (pin-locked from then on).
func (f *FaultModule) Set(t testing.TB, fault string) {
	t.Helper()
	if err := os.WriteFile(f.control, []byte(fault+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// AwaitDone waits until a one-shot fault has been carried out.
func (f *FaultModule) AwaitDone(t testing.TB, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if raw, _ := os.ReadFile(f.control); bytes.Equal(bytes.TrimSpace(raw), []byte("done")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fault module did not carry out its one-shot fault within %v", timeout)
		}
	}
}
