package main

import (
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/engine/enginetest"
	"signerd/store/pgtest"
)

// bins are signerctl and signerd built for the test.
var bins struct{ signerctl, signerd string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signerctl-bin-")
	if err != nil {
		panic(err)
	}
	bins.signerctl, bins.signerd = filepath.Join(dir, "signerctl"), filepath.Join(dir, "signerd")
	for pkg, out := range map[string]string{".": bins.signerctl, "../signerd": bins.signerd} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	// pgtest.Main runs the tests and stops the PostgreSQL server they share.
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// startSignerd runs signerd for a fresh CA with the test process in the
// RA and auditor roles, and returns its socket and the CA.
func startSignerd(t *testing.T) (string, *enginetest.CA) {
	t.Helper()
	ca := enginetest.NewCA(t)
	dir := t.TempDir()
	ca.Save(t, dir)
	issuing := enginetest.WritePEM(t, dir, "issuing.pem", "CERTIFICATE", ca.Cert.Raw)
	sock := filepath.Join(dir, "s.sock")
	cfg := fmt.Sprintf("hsm: {module: %s, token: %s, pin_file: %s}\nissuers: [{key: %s, certificate: %s}]\nstore: %s\nsocket: {path: %s}\nroles:\n  ra: {uids: [%d]}\n  auditor: {uids: [%[8]d]}\naudit: {seal_every: 5}\n",
		ca.Token.Module, ca.Token.Label, filepath.Join(dir, "pin"), enginetest.IssuingLabel, issuing,
		filepath.Join(dir, "db"), sock, os.Getuid())
	cfgPath := filepath.Join(dir, "signerd.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	cmd := exec.Command(bins.signerd, "--config", cfgPath)
	log := new(strings.Builder)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	// The socket is bound with no access and opened up to 0660 after;
	// root connects in between, so ready is both.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fi, statErr := os.Stat(sock)
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			if statErr == nil && fi.Mode().Perm() == 0o660 {
				return sock, ca
			}
		}
		if time.Now().After(deadline) {
			mode := "none"
			if statErr == nil {
				mode = fi.Mode().Perm().String()
			}
			t.Fatalf("signerd not serving on a 0660 socket (mode %s):\n%s", mode, log)
		}
	}
}

// signerctl runs the command and returns stdout, stderr and exit code.
func signerctl(t *testing.T, sock string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bins.signerctl, args...)
	cmd.Env = append(os.Environ(), "SIGNERD_SOCKET="+sock)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

func TestClientCommands(t *testing.T) {
	sock, ca := startSignerd(t)
	dir := t.TempDir()
	_, csr := enginetest.NewCSR(t)
	csrPath := enginetest.WritePEM(t, dir, "req.pem", "CERTIFICATE REQUEST", csr)
	certPath := filepath.Join(dir, "cert.pem")

	_, stderr, code := signerctl(t, sock, "issue", "-request-id", "cli-1", "-profile", "person-sign",
		"-subject", "CN=张三,C=CN", "-csr", csrPath, "-identity", "resident-id=11010519491231002X", "-out", certPath)
	if code != 0 {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	serial, _, _ := strings.Cut(strings.TrimPrefix(stderr, "serial "), ",")
	raw, err := os.ReadFile(certPath)
	if err != nil || !strings.Contains(string(raw), "BEGIN CERTIFICATE") {
		t.Fatalf("no certificate written: %v", err)
	}
	out, _ := enginetest.OpenSSL(t, "x509", "-in", certPath, "-noout", "-serial")
	if !strings.EqualFold(strings.TrimSpace(out), "serial="+serial) {
		t.Fatalf("stderr names serial %q, certificate has %q", serial, out)
	}

	tests := []struct {
		name string
		args []string
		code int
		want string // in stdout or stderr
	}{
		{"status", []string{"status", "-serial", serial}, 0, `"status": "good"`},
		{"hold", []string{"hold", "-serial", serial}, 0, `"status": "on-hold"`},
		{"restore", []string{"restore", "-serial", serial}, 0, `"status": "good"`},
		{"revoke", []string{"revoke", "-serial", serial, "-reason", "keyCompromise"}, 0, `"status": "revoked"`},
		{"revoke again", []string{"revoke", "-serial", serial}, 1, "invalid_state"},
		{"renew revoked", []string{"renew", "-serial", serial, "-request-id", "cli-2", "-profile", "person-sign", "-subject", "CN=x", "-csr", csrPath}, 1, "invalid_state"},
		{"renew without serial", []string{"renew", "-request-id", "cli-2", "-profile", "person-sign", "-subject", "CN=x", "-csr", csrPath}, 2, "-serial is required"},
		{"conflicting retry", []string{"issue", "-request-id", "cli-1", "-profile", "device-sign", "-subject", "CN=x", "-csr", csrPath}, 1, "request_conflict"},
		{"CRL needs the operator role", []string{"crl", "-sign"}, 1, "forbidden"},
		{"statistics, with the audit key's certificate", []string{"stats"}, 0, `"signerd-audit-key": {
      "issued": 1`},
		{"missing flags", []string{"issue", "-profile", "person-sign"}, 2, "required"},
		{"positional argument", []string{"status", serial}, 2, "unexpected arguments"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"no signerd", []string{"status", "-serial", serial, "-socket", filepath.Join(dir, "none.sock")}, 3, "cannot reach signerd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := signerctl(t, sock, tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tt.code, tt.want, stdout, stderr)
			}
		})
	}
	ca.OpenSSLVerify(t, decodePEM(t, raw))
}

func decodePEM(t *testing.T, raw []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatal("not PEM")
	}
	return b.Bytes
}

func TestClientSignsRequests(t *testing.T) {
	sock, _ := startSignerd(t)
	dir := t.TempDir()
	writeKey := func(name string) (string, []byte) {
		key, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := smx509.MarshalPKCS8PrivateKey(key)
		path := enginetest.WritePEM(t, dir, name, "PRIVATE KEY", der)
		csr, _ := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{}, key)
		return path, csr
	}
	raKey, raCSR := writeKey("ra.key")
	otherKey, _ := writeKey("other.key")
	csrPath := enginetest.WritePEM(t, dir, "ra.csr", "CERTIFICATE REQUEST", raCSR)
	_, stderr, code := signerctl(t, sock, "issue", "-request-id", "ra-cert", "-profile", "ra-sign",
		"-subject", "CN=RA 01,O=某单位", "-csr", csrPath, "-out", filepath.Join(dir, "ra.pem"))
	if code != 0 {
		t.Fatalf("issue RA certificate: %s", stderr)
	}
	raSerial, _, _ := strings.Cut(strings.TrimPrefix(stderr, "serial "), ",")

	// signerd checks any signature it is sent, required or not.
	if _, stderr, code := signerctl(t, sock, "status", "-serial", raSerial, "-sign-key", otherKey, "-sign-cert", raSerial); code != 1 || !strings.Contains(stderr, "bad_signature") {
		t.Fatalf("signed with the wrong key: exit %d: %s", code, stderr)
	}
	for range 2 { // each signed with a nonce of its own, so neither is a replay
		if stdout, stderr, code := signerctl(t, sock, "status", "-serial", raSerial, "-sign-key", raKey, "-sign-cert", raSerial); code != 0 || !strings.Contains(stdout, `"status": "good"`) {
			t.Fatalf("signed with the RA key: exit %d: %s%s", code, stdout, stderr)
		}
	}
	if _, stderr, code := signerctl(t, sock, "status", "-serial", raSerial, "-sign-key", raKey); code != 2 {
		t.Fatalf("-sign-key without -sign-cert: exit %d: %s", code, stderr)
	}
}
