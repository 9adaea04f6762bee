package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"signerd/hsm/split"
)

// PINSource says where a PIN comes from (SPEC §3.8). Exactly one field is
// set. PINs are never taken from the command line.
type PINSource struct {
	// File holds the PIN; one trailing newline is ignored. It must be a
	// regular file that neither its group nor others may access (0600 or
	// 0400).
	File string
	// Credential names a systemd credential in $CREDENTIALS_DIRECTORY
	// (LoadCredential= in the unit).
	Credential string
	// Prompt asks on the controlling terminal without echo.
	Prompt string
	// Shares are files holding at least the threshold of custodians'
	// shares of the PIN (SPEC §4.3). A share sealed with its custodian's
	// passphrase is opened with a prompt on the terminal.
	Shares []string
}

// ReadPIN returns the PIN. The caller zeroes it with ZeroPIN when done.
func ReadPIN(src PINSource) ([]byte, error) {
	set := 0
	for _, v := range []string{src.File, src.Credential, src.Prompt} {
		if v != "" {
			set++
		}
	}
	if len(src.Shares) > 0 {
		set++
	}
	if set != 1 {
		return nil, errors.New("PIN source: set exactly one of file, credential, shares or prompt")
	}
	switch {
	case len(src.Shares) > 0:
		return ReadSecretShares(split.PIN, src.Shares)
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
	f, err := openPrivateFile(path, checkMode)
	if err != nil {
		return nil, fmt.Errorf("PIN file: %w", err)
	}
	defer f.Close()
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

// openPrivateFile opens a secret's file. With checkMode it must be a
// regular file that grants its group and others nothing: a PIN or share
// readable by a group is readable by everyone ever added to it. (systemd
// credentials are checked by systemd, which makes them.) The mode checked
// is that of the file opened, whatever symlink led to it; it is opened
// without blocking, so a FIFO planted in its place cannot hang the caller.
func openPrivateFile(path string, checkMode bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	switch {
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	case checkMode && fi.Mode().Perm()&0o077 != 0:
		f.Close()
		return nil, fmt.Errorf("%s has mode %04o (%v): its group or others may access it; chmod 600 it", path, fi.Mode().Perm(), fi.Mode().Perm())
	}
	return f, nil
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

// ReadSecretShares reads share files (each accessible to its owner
// alone) and combines them into the secret they were split from. Sealed
// shares are opened with their custodian's passphrase, asked for on the
// terminal. The caller zeroes the secret.
func ReadSecretShares(purpose string, paths []string) ([]byte, error) {
	shares := make([]split.Share, 0, len(paths))
	defer func() {
		for _, s := range shares {
			zero(s.Data)
		}
	}()
	for _, path := range paths {
		data, err := readPrivateFile(path, 4096)
		if err != nil {
			return nil, fmt.Errorf("share: %w", err)
		}
		s, err := split.Parse(data)
		zero(data)
		if err != nil {
			return nil, fmt.Errorf("share %s: %w", path, err)
		}
		if s.Sealed() {
			pass, err := promptPIN(fmt.Sprintf("Passphrase of %s for share %d of %d: ", s.Custodian, s.Index, s.Total))
			if err != nil {
				return nil, fmt.Errorf("share %s: %w", path, err)
			}
			err = s.Open(pass)
			zero(pass)
			if err != nil {
				return nil, fmt.Errorf("share %s: %w", path, err)
			}
		}
		shares = append(shares, s)
	}
	return split.Combine(purpose, shares)
}

// readPrivateFile reads a file of at most limit bytes that neither its
// group nor others may access.
func readPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := openPrivateFile(path, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		zero(data)
		return nil, fmt.Errorf("%s is longer than %d bytes", path, limit)
	}
	return data, nil
}
