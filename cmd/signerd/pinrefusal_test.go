package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A PIN the token refuses (wrong, locked) or that cannot be read (missing,
// readable by the file's group) ends signerd with exitPINRefused, after at
// most one C_Login, counted by the fault-injecting module signerd loads in
// place of SoftHSM2, and leaves the refusal marker (pinmarker_test.go).
// Any other start-up failure keeps exit status 1, which systemd may retry.
func TestPINRefusalExitsWithItsOwnStatus(t *testing.T) {
	d := newDaemonProc(t, "")
	faults := d.useFaultModule(t)
	pinFile := filepath.Join(d.dir, "pin")
	marker := filepath.Join(d.dir, pinRefusedMarkerName)
	writePIN := func(t *testing.T, pin []byte, mode os.FileMode) {
		t.Helper()
		os.Remove(pinFile)
		if err := os.WriteFile(pinFile, pin, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(pinFile, mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T)
		status  int
		logins  []string // C_Login calls: user type 1 (CKU_USER) and what the token said
		log     string
	}{
		{"wrong PIN", func(t *testing.T) { writePIN(t, []byte("wrong-pin-4711"), 0o600) },
			exitPINRefused, []string{"login user=1 rv=a0"}, "PIN incorrect"}, // CKR_PIN_INCORRECT
		{"locked PIN", func(t *testing.T) { faults.Set(t, "pin-locked") },
			exitPINRefused, []string{"login user=1 rv=a4"}, "PIN locked"}, // CKR_PIN_LOCKED
		{"PIN file readable by its group", func(t *testing.T) { writePIN(t, d.ca.Token.PIN, 0o640) },
			exitPINRefused, nil, "mode 0640"},
		{"PIN file missing", func(t *testing.T) { os.Remove(pinFile) },
			exitPINRefused, nil, "no such file"},
		{"no such token (not a PIN refusal)", func(t *testing.T) {
			d.editConfig(t, "  token: "+d.ca.Token.Label+"\n", "  token: no-such-token\n")
		}, exitFailure, nil, "token not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			writePIN(t, d.ca.Token.PIN, 0o600)
			faults.Set(t, "ok")
			os.Remove(marker) // the previous case's refusal
			before := len(faults.Logins(t))
			tt.prepare(t)
			cmd := exec.Command(signerdBin, "--config", d.config)
			cmd.Env = append(os.Environ(), faults.Env()...)
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			err := runUntilExit(t, cmd, d.socket)
			if got := exitCode(err); got != tt.status {
				t.Errorf("exit status %d (%v), want %d\n%s", got, err, tt.status, &log)
			}
			if got := faults.Logins(t)[before:]; strings.Join(got, "\n") != strings.Join(tt.logins, "\n") {
				t.Errorf("C_Login calls %q, want %q", got, tt.logins)
			}
			if _, err := os.Lstat(marker); (err == nil) != (tt.status == exitPINRefused) {
				t.Errorf("exit status %d, marker %s: %v", tt.status, marker, err)
			}
			if !strings.Contains(log.String(), tt.log) {
				t.Errorf("log does not say %q:\n%s", tt.log, &log)
			}
			if bytes.Contains(log.Bytes(), d.ca.Token.PIN) || strings.Contains(log.String(), "wrong-pin-4711") {
				t.Errorf("log holds a PIN:\n%s", &log)
			}
		})
	}
}

// A PIN locked (or changed) behind a running signerd's back is refused
// when signerd logs in again after losing its login. signerd then stops
// with exitPINRefused, having presented the PIN once more in all, instead
// of serving on unable to sign until the watchdog restarts it into
// another C_Login.
func TestPINRefusedWhileServingStopsSignerd(t *testing.T) {
	d := newDaemonProc(t, "")
	faults := d.useFaultModule(t)
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  probe_interval: 100ms\n")
	d.env = faults.Env()
	d.start(t)
	if got := faults.Logins(t); len(got) != 1 || got[0] != "login user=1 rv=0" {
		t.Fatalf("C_Login calls at start %q, want one that succeeded", got)
	}
	// The next HSM call (the health probe's, at the latest) logs the user
	// out; the login that follows is refused.
	faults.Set(t, "logout-locked")
	var err error
	select {
	case err = <-d.exited:
		d.exited <- err
	case <-time.After(60 * time.Second):
		t.Fatalf("signerd still running 60s after its PIN was refused; C_Login calls %q\n%s", faults.Logins(t), d.log)
	}
	if got := exitCode(err); got != exitPINRefused {
		t.Fatalf("exit status %d (%v), want %d\n%s", got, err, exitPINRefused, d.log)
	}
	if got := faults.Logins(t); strings.Join(got, "\n") != "login user=1 rv=0\nlogin user=1 rv=a4" {
		t.Fatalf("C_Login calls %q, want the start-up login and one refused", got)
	}
	if _, err := os.Lstat(filepath.Join(d.dir, pinRefusedMarkerName)); err != nil {
		t.Errorf("no PIN refusal marker after the refusal while serving: %v", err)
	}
	var stops []string
	for _, ev := range d.storeEvents(t, "signerd.stop") {
		stops = append(stops, ev.Reason)
	}
	if len(stops) != 1 || stops[0] != "PIN refused" {
		t.Errorf("signerd.stop events %q, want one for the refused PIN", stops)
	}
}

// The unit does not restart signerd after exitPINRefused, and restarts it
// after other failures.
func TestUnitDoesNotRestartAfterPINRefusal(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "systemd", "signerd.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	if !regexp.MustCompile(`(?m)^Restart=on-failure$`).MatchString(unit) {
		t.Errorf("the unit does not restart signerd on failure")
	}
	m := regexp.MustCompile(`(?m)^RestartPreventExitStatus=(.*)$`).FindStringSubmatch(unit)
	if m == nil || !contains(strings.Fields(m[1]), strconv.Itoa(exitPINRefused)) {
		t.Errorf("RestartPreventExitStatus= %q does not name exit status %d", m, exitPINRefused)
	}
	if m != nil && contains(strings.Fields(m[1]), strconv.Itoa(exitFailure)) {
		t.Errorf("RestartPreventExitStatus= names %d: other failures are no longer retried", exitFailure)
	}
}
