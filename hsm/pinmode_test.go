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

// A PIN file or share file is taken only when its owner alone may access
// it: any group or other permission bit is refused with the file's name
// and mode. systemd credentials are taken as systemd made them.
func TestSecretFileModes(t *testing.T) {
	const pin = "mode-test-pin"
	shares, err := split.Split(split.PIN, []byte(pin), 2, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(t *testing.T, name string, data []byte, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true},
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

// systemd makes credential files itself (often 0440 or 0400, owned by
// root or the service); their mode is not second-guessed.
func TestCredentialModeIsSystemds(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hsm-pin"), []byte("cred-pin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "hsm-pin"), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if pin, err := hsm.ReadPIN(hsm.PINSource{Credential: "hsm-pin"}); err != nil || string(pin) != "cred-pin" {
		t.Fatalf("credential: %q, %v", pin, err)
	}
}
