package hsm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"signerd/hsm"
	"signerd/hsm/split"
)

// A PIN file or share file is taken only when it is a regular file of
// signerd's own (effective) uid whose permission bits are within 0600: any
// group or other bit, an execute bit, setuid, setgid or sticky is refused
// with the file's name and mode. systemd credentials are taken as systemd
// made them (TestCredentialFileChecks).
func TestSecretFileModes(t *testing.T) {
	const pin = "mode-test-pin"
	shares, err := split.Split(split.PIN, []byte(pin), 2, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(t *testing.T, name string, data []byte, mode uint32) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, mode); err != nil { // past the umask, special bits too
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		mode uint32
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, false},
		{0o500, false},
		{0o100, false},
		{0o4600, false},
		{0o2600, false},
		{0o1600, false},
		{0o4400, false},
		{0o640, false},
		{0o620, false},
		{0o610, false},
		{0o660, false},
		{0o604, false},
		{0o602, false},
		{0o601, false},
		{0o644, false},
		{0o440, false},
		{0o666, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			pinFile := write(t, fmt.Sprintf("pin-%o", tt.mode), []byte(pin+"\n"), tt.mode)
			share := write(t, fmt.Sprintf("share-%o", tt.mode), shares[0].Marshal(), tt.mode)
			other := write(t, fmt.Sprintf("share2-%o", tt.mode), shares[1].Marshal(), 0o600)
			for _, c := range []struct {
				what, path string
				read       func() ([]byte, error)
			}{
				{"PIN file", pinFile, func() ([]byte, error) { return hsm.ReadPIN(hsm.PINSource{File: pinFile}) }},
				{"share file", share, func() ([]byte, error) { return hsm.ReadPIN(hsm.PINSource{Shares: []string{other, share}}) }},
			} {
				got, err := c.read()
				switch {
				case tt.ok && (err != nil || string(got) != pin):
					t.Errorf("%s mode %04o: %q, %v; want the PIN", c.what, tt.mode, got, err)
				case !tt.ok && err == nil:
					t.Errorf("%s mode %04o accepted", c.what, tt.mode)
				case !tt.ok && !strings.Contains(err.Error(), c.path) ||
					!tt.ok && !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", tt.mode)):
					t.Errorf("%s mode %04o: error %q does not name the file and its mode", c.what, tt.mode, err)
				}
			}
		})
	}
}

// A PIN or share file owned by another uid is refused, whatever its mode:
// its owner can change it, or give it to anyone. (Creating it needs root.)
func TestSecretFileOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another uid needs root")
	}
	const otherUID = 1003
	dir := t.TempDir()
	shares, err := split.Split(split.PIN, []byte("owner-test-pin"), 2, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"pin": []byte("owner-test-pin\n"), "share": shares[0].Marshal(),
		"share2": shares[1].Marshal()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"pin", "share"} {
		if err := os.Chown(filepath.Join(dir, name), otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	}
	pinFile, share, other := filepath.Join(dir, "pin"), filepath.Join(dir, "share"), filepath.Join(dir, "share2")
	for what, read := range map[string]func() ([]byte, error){
		"PIN file":   func() ([]byte, error) { return hsm.ReadPIN(hsm.PINSource{File: pinFile}) },
		"share file": func() ([]byte, error) { return hsm.ReadPIN(hsm.PINSource{Shares: []string{other, share}}) },
	} {
		got, err := read()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("owned by uid %d", otherUID)) {
			t.Errorf("%s owned by uid %d, mode 0600: %q, %v; want refused naming the owner", what, otherUID, got, err)
		}
	}
}

// Only regular files are secrets: a FIFO planted in a PIN file's place is
// refused at once rather than waited on, and so is a folder.
func TestSecretFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "folder")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, sub} {
		if _, err := hsm.ReadPIN(hsm.PINSource{File: p}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v, want not a regular file", p, err)
		}
		if _, err := hsm.ReadPIN(hsm.PINSource{Shares: []string{p}}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("share %s: %v, want not a regular file", p, err)
		}
	}
}

// systemd makes credential files itself: mode 0400 with an ACL giving
// the service user read access (shown as 0440: the ACL mask sits in the
// group bits), owned by root, or chowned to the service user where ACLs
// are not supported. Their owner and group bits are not second-guessed;
// a credential that others may read, or with setuid, setgid or sticky
// set, is no credential systemd made and is refused.
func TestCredentialFileChecks(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for _, tc := range []struct {
		mode  uint32
		owner int // -1: the test's own uid
		ok    bool
	}{
		{0o440, -1, true},
		{0o400, -1, true},
		{0o440, 1003, true},
		{0o444, -1, false},
		{0o404, -1, false},
		{0o4400, -1, false},
		{0o1440, -1, false},
	} {
		t.Run(fmt.Sprintf("%04o uid %d", tc.mode, tc.owner), func(t *testing.T) {
			p := filepath.Join(dir, "hsm-pin")
			os.Remove(p)
			if err := os.WriteFile(p, []byte("cred-pin\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.owner >= 0 {
				if os.Geteuid() != 0 {
					t.Skip("giving a file to another uid needs root")
				}
				if err := os.Chown(p, tc.owner, tc.owner); err != nil {
					t.Fatal(err)
				}
			}
			pin, err := hsm.ReadPIN(hsm.PINSource{Credential: "hsm-pin"})
			switch {
			case tc.ok && (err != nil || string(pin) != "cred-pin"):
				t.Errorf("credential: %q, %v; want the PIN", pin, err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("mode %04o", tc.mode))):
				t.Errorf("credential: %q, %v; want refused naming its mode", pin, err)
			}
		})
	}
}
