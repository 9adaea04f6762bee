package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"
)

// PINSource says where a PIN comes from (SPEC §3.8). Exactly one field is
// set. PINs are never taken from the command line.
type PINSource struct {
	// File holds the PIN; one trailing newline is ignored. It must not be
	// readable by others.
	File string
	// Credential names a systemd credential in $CREDENTIALS_DIRECTORY
	// (LoadCredential= in the unit).
	Credential string
	// Prompt asks on the controlling terminal without echo.
	Prompt string
}

// ReadPIN returns the PIN. The caller zeroes it with ZeroPIN when done.
func ReadPIN(src PINSource) ([]byte, error) {
	set := 0
	for _, v := range []string{src.File, src.Credential, src.Prompt} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return nil, errors.New("PIN source: set exactly one of file, credential or prompt")
	}
	switch {
	case src.File != "":
		return readPINFile(src.File, true)
	case src.Credential != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("PIN credential %q: $CREDENTIALS_DIRECTORY is not set (LoadCredential= missing?)", src.Credential)
		}
		if strings.ContainsRune(src.Credential, '/') || src.Credential == ".." {
			return nil, fmt.Errorf("PIN credential %q: not a credential name", src.Credential)
		}
		// systemd owns the folder's permissions.
		return readPINFile(filepath.Join(dir, src.Credential), false)
	default:
		return promptPIN(src.Prompt)
	}
}

// ZeroPIN overwrites a PIN in memory.
func ZeroPIN(pin []byte) { zero(pin) }

// maxPINFile bounds a PIN file; a longer one is not a PIN.
const maxPINFile = 256

func readPINFile(path string, checkMode bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("PIN file: %w", err)
	}
	defer f.Close()
	if checkMode {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("PIN file: %w", err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			return nil, fmt.Errorf("PIN file %s is accessible to others (mode %v); chmod o-rwx it", path, fi.Mode().Perm())
		}
	}
	buf := make([]byte, maxPINFile+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF {
		zero(buf)
		if err == io.EOF {
			return nil, fmt.Errorf("PIN file %s is empty", path)
		}
		return nil, fmt.Errorf("PIN file %s: %w", path, err)
	}
	if n > maxPINFile {
		zero(buf)
		return nil, fmt.Errorf("PIN file %s is longer than %d bytes", path, maxPINFile)
	}
	pin := trimNewline(buf[:n])
	out := append([]byte(nil), pin...)
	zero(buf)
	if len(out) == 0 {
		return nil, fmt.Errorf("PIN file %s is empty", path)
	}
	return out, nil
}

func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

func promptPIN(prompt string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("PIN prompt: no terminal: %w", err)
	}
	defer tty.Close()
	fmt.Fprint(tty, prompt)
	pin, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return nil, fmt.Errorf("PIN prompt: %w", err)
	}
	if len(pin) == 0 {
		return nil, errors.New("PIN prompt: empty PIN")
	}
	return pin, nil
}
