package main

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Socket activation starts signerd whatever RestartPreventExitStatus=
// says: with Accept=no systemd starts the service whenever its listening
// socket is readable and the service is not running, up to StartLimitBurst
// (5) starts per StartLimitIntervalSec (10 s). signerd refuses the PIN
// before it accepts anything, so the connection that activated it is still
// waiting when it exits 3, and it is started again at once. This test plays
// systemd's part (start while readable and not running, at most 5 times)
// with the token's PIN locked: the PIN is presented once (C_Login counted
// by testdata/pkcs11fault), every later start exits 3 without opening the
// HSM and says what to do, and once the marker is removed signerd logs in
// again and answers the connection that waited.
func TestRefusedPINNotPresentedAgainBySocketActivation(t *testing.T) {
	d := newDaemonProc(t, "")
	faults := d.useFaultModule(t)
	faults.Set(t, "pin-locked")
	marker := filepath.Join(filepath.Dir(d.store), pinRefusedMarkerName)

	lf := activationSocket(t, d.socket)
	// An RA connects (signerctl, a metrics scrape): this activates signerd.
	ra, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	readable := func() bool {
		fds := []unix.PollFd{{Fd: int32(lf.Fd()), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0 && fds[0].Revents&unix.POLLIN != 0
	}
	activate := func() *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, signerdBin, d.config)
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Env = append(append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=signerd.socket"), faults.Env()...)
		return cmd
	}

	var logs []string
	for len(logs) < 5 && readable() {
		cmd := activate()
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		err := cmd.Run()
		logs = append(logs, log.String())
		if code := exitCode(err); code != exitPINRefused {
			t.Fatalf("start %d: exit status %d (%v), want %d\n%s", len(logs), code, err, exitPINRefused, &log)
		}
	}
	if len(logs) != 5 {
		t.Fatalf("%d starts: the activating connection was taken before signerd exited", len(logs))
	}
	if got := faults.Logins(t); len(got) != 1 || got[0] != "login user=1 rv=a4" {
		t.Fatalf("C_Login calls over 5 activated starts %q, want one, refused (CKR_PIN_LOCKED)", got)
	}

	fi, err := os.Lstat(marker)
	if err != nil {
		t.Fatalf("no marker after the refusal: %v\n%s", err, logs[0])
	}
	if fi.Mode() != 0o600 {
		t.Errorf("marker mode %v, want -rw-------", fi.Mode())
	}
	says, _ := os.ReadFile(marker)
	for _, want := range []string{"time: ", "reason: ", "PIN locked", "rm " + marker} {
		if !bytes.Contains(says, []byte(want)) {
			t.Errorf("marker does not say %q:\n%s", want, says)
		}
	}
	for i, log := range logs[1:] {
		for _, want := range []string{"a PIN refusal is recorded", "the HSM was not opened", "rm " + marker, "PIN locked"} {
			if !strings.Contains(log, want) {
				t.Errorf("start %d: log does not say %q:\n%s", i+2, want, log)
			}
		}
	}
	for i, log := range logs {
		if strings.Contains(log, string(d.ca.Token.PIN)) {
			t.Errorf("start %d: log holds the PIN:\n%s", i+1, log)
		}
	}

	// The operator fixes the PIN (here: the token unlocks) and removes the
	// marker; the next activation logs in and serves the RA that waited.
	faults.Set(t, "ok")
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	cmd := activate()
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("signerd exit after serving: %v\n%s", err, &log)
		}
	}()
	if _, err := ra.Write([]byte("GET /v1/health HTTP/1.1\r\nHost: signerd\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(ra), nil)
	if err != nil {
		t.Fatalf("the connection that waited got no answer: %v\n%s", err, &log)
	}
	resp.Body.Close()
	if got := faults.Logins(t); len(got) != 2 || got[1] != "login user=1 rv=0" {
		t.Errorf("C_Login calls %q, want the refused one and one that succeeded after the marker went", got)
	}
}

// Every way signerd ends with exitPINRefused leaves the marker, at
// hsm.pin_refused_marker when configured; a start that finds it there
// reads no PIN and opens no HSM. A failure that is not a PIN refusal
// leaves none.
func TestPINRefusedMarkerConfigured(t *testing.T) {
	d := newDaemonProc(t, "")
	faults := d.useFaultModule(t)
	marker := filepath.Join(d.dir, "elsewhere", "refused")
	if err := os.Mkdir(filepath.Dir(marker), 0o700); err != nil {
		t.Fatal(err)
	}
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  pin_refused_marker: "+marker+"\n")
	pinFile := filepath.Join(d.dir, "pin")
	run := func(t *testing.T) (int, string) {
		t.Helper()
		cmd := exec.Command(signerdBin, "--config", d.config)
		cmd.Env = append(os.Environ(), faults.Env()...)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		return exitCode(runUntilExit(t, cmd, d.socket)), log.String()
	}

	faults.Set(t, "pin-locked")
	if code, log := run(t); code != exitPINRefused {
		t.Fatalf("exit status %d, want %d\n%s", code, exitPINRefused, log)
	}
	if _, err := os.Lstat(marker); err != nil {
		t.Fatalf("no marker at the configured path: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(d.dir, pinRefusedMarkerName)); !os.IsNotExist(err) {
		t.Errorf("a marker at the default path too: %v", err)
	}
	// With the marker there, not even the PIN file is read: an unreadable
	// one is not reported, a fixed token is not tried.
	faults.Set(t, "ok")
	if err := os.Chmod(pinFile, 0o644); err != nil {
		t.Fatal(err)
	}
	code, log := run(t)
	if code != exitPINRefused || !strings.Contains(log, "a PIN refusal is recorded") || strings.Contains(log, "mode 0644") {
		t.Errorf("start with the marker: exit status %d, want %d, the marker named and no PIN read\n%s", code, exitPINRefused, log)
	}
	if got := faults.Logins(t); len(got) != 1 {
		t.Errorf("C_Login calls %q, want the one refused", got)
	}

	// The PIN file readable by others is a refusal too, and is recorded.
	os.Remove(marker)
	if code, log := run(t); code != exitPINRefused || !strings.Contains(log, "mode 0644") {
		t.Errorf("exit status %d, want %d for a PIN file readable by others\n%s", code, exitPINRefused, log)
	}
	if says, err := os.ReadFile(marker); err != nil || !bytes.Contains(says, []byte("mode 0644")) {
		t.Errorf("marker after an unreadable PIN: %q, %v", says, err)
	}

	// A failure that is not about the PIN is retried by the unit, and
	// leaves no marker.
	os.Remove(marker)
	if err := os.Chmod(pinFile, 0o600); err != nil {
		t.Fatal(err)
	}
	d.editConfig(t, "  token: "+d.ca.Token.Label+"\n", "  token: no-such-token\n")
	if code, log := run(t); code != exitFailure {
		t.Errorf("exit status %d, want %d\n%s", code, exitFailure, log)
	}
	if _, err := os.Lstat(marker); !os.IsNotExist(err) {
		t.Errorf("a marker after a failure that is not a PIN refusal: %v", err)
	}
}

// A marker whose folder does not exist could not be written when the PIN
// is refused, and every later start would present it again: signerd
// refuses to start, before it reads the PIN, and says why.
func TestPINRefusedMarkerFolderMustExist(t *testing.T) {
	d := newDaemonProc(t, "")
	marker := filepath.Join(d.dir, "no-such-folder", "refused")
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  pin_refused_marker: "+marker+"\n")
	// An unreadable PIN would be refused and named if signerd read it.
	if err := os.Chmod(filepath.Join(d.dir, "pin"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := refusedStart(t, d)
	if code != exitFailure || !strings.Contains(out, "its folder "+filepath.Dir(marker)) ||
		!strings.Contains(out, "a PIN refusal could not be recorded") || strings.Contains(out, "mode 0644") {
		t.Fatalf("start with the marker's folder missing: exit %d, want %d, the folder named and no PIN read\n%s", code, exitFailure, out)
	}
}
