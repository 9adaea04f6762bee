package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSocketActivationAndNotify starts signerd the way systemd does: with
// a listening socket as fd 3 (LISTEN_FDS, LISTEN_PID set by the exec'ing
// shell to its own pid, which signerd inherits), a NOTIFY_SOCKET the test
// reads, and a watchdog interval.
func TestSocketActivationAndNotify(t *testing.T) {
	d := newDaemonProc(t, "")
	lf := activationSocket(t, d.socket)
	notifyPath, notices := listenNotify(t, d.dir)

	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, signerdBin, d.config)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=signerd.socket", "NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=300000")
	log := new(strings.Builder)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var seen []string
	await := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case n := <-notices:
				seen = append(seen, n.text)
				if strings.Contains(n.text, want) {
					return
				}
			case err := <-exited:
				t.Fatalf("signerd exited waiting for %s: %v\n%s", want, err, log)
			case <-deadline:
				t.Fatalf("no %s from signerd; got %q\n%s", want, seen, log)
			}
		}
	}
	await("READY=1")
	if !strings.Contains(strings.Join(seen, "\n"), "STATUS=power-on self-test") {
		t.Errorf("no self-test STATUS before READY: %q", seen)
	}
	await("WATCHDOG=1")
	want(t, "request on the activated socket", d.call(t, "POST", "/v1/certificates", issueBody(t, "act-1", "person-sign")), 201, "")

	cmd.Process.Signal(syscall.SIGTERM)
	await("STOPPING=1")
	if err := <-exited; err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, log)
	}
	if _, err := os.Stat(d.socket); err != nil {
		t.Errorf("signerd removed the socket systemd owns: %v", err)
	}
}

// TestUnitFiles runs systemd's own checks on the units in systemd/.
func TestUnitFiles(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not installed: make deps installs it (Debian package systemd)")
	}
	dir := t.TempDir()
	for _, unit := range []string{"signerd.service", "signerd.socket"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		// verify wants ExecStart's binary to exist.
		text := strings.ReplaceAll(string(raw), "/usr/local/bin/signerd", signerdBin)
		if err := os.WriteFile(filepath.Join(dir, unit), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	service, socket := filepath.Join(dir, "signerd.service"), filepath.Join(dir, "signerd.socket")
	out, err := exec.Command("systemd-analyze", "verify", service, socket).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", service).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for signerd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure level %.1f", level)
	// 0.4 as the README explains it, exposure by exposure.
	if level > 0.4 {
		t.Errorf("exposure level %.1f, want at most 0.4:\n%s", level, out)
	}
}

// activationSocket listens at path as signerd.socket does and returns the
// file systemd would pass signerd as fd 3 (LISTEN_FDS=1); the listener and
// the file close when the test ends.
func activationSocket(t *testing.T, path string) *os.File {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	lf, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	return lf
}
