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
	// regular file of the reading process's effective uid, with permission
	// bits within 0600 (0600 or 0400).
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
		return readPINFile(src.File, ownSecret)
	case src.Credential != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("PIN credential %q: $CREDENTIALS_DIRECTORY is not set (LoadCredential= missing?)", src.Credential)
		}
		if strings.ContainsRune(src.Credential, '/') || src.Credential == ".." {
			return nil, fmt.Errorf("PIN credential %q: not a credential name", src.Credential)
		}
		return readPINFile(filepath.Join(dir, src.Credential), systemdCredential)
	default:
		return promptPIN(src.Prompt)
	}
}

// ZeroPIN overwrites a PIN in memory.
func ZeroPIN(pin []byte) { zero(pin) }

// maxPINFile bounds a PIN file; a longer one is not a PIN.
const maxPINFile = 256

func readPINFile(path string, kind secretFile) ([]byte, error) {
	f, err := openPrivateFile(path, kind)
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

// secretFile says which checks a secret's file must pass.
type secretFile int

const (
	// ownSecret is a PIN or share file an operator made: a regular file
	// owned by the process's effective uid with permission bits within
	// 0600 (0400 is fine). A group or other bit gives the secret to
	// everyone ever added to the group; an execute, setuid, setgid or
	// sticky bit is no secret's mode; another uid's file is that uid's to
	// change or give away.
	ownSecret secretFile = iota
	// systemdCredential is a file systemd made in $CREDENTIALS_DIRECTORY:
	// mode 0400 with an ACL giving the service user read access (shown as
	// 0440, the ACL mask in the group bits), owned by root, or chowned to
	// the service user where ACLs are not supported. Owner and group bits
	// are systemd's; a credential others may access, or with a special
	// bit, systemd did not make.
	systemdCredential
)

// openPrivateFile opens a secret's file and checks it (secretFile). The
// file checked is the one opened, whatever symlink led to it; it is opened
// without blocking, so a FIFO planted in its place cannot hang the caller.
func openPrivateFile(path string, kind secretFile) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkSecretFile(path, &st, kind); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkSecretFile(path string, st *syscall.Stat_t, kind secretFile) error {
	mode := st.Mode & 0o7777
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG:
		return fmt.Errorf("%s is not a regular file (%v)", path, fileType(st.Mode))
	case kind == ownSecret && mode&^0o600 != 0:
		return fmt.Errorf("%s has mode %04o: a PIN or share file must have permission bits within 0600 (none for group or others, no execute, setuid, setgid or sticky); chmod 600 it", path, mode)
	case kind == ownSecret && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is owned by uid %d, not by uid %d which reads it; chown it", path, st.Uid, os.Geteuid())
	case kind == systemdCredential && mode&0o7007 != 0:
		return fmt.Errorf("%s has mode %04o: others may access it or a special bit is set; not a credential systemd made", path, mode)
	}
	return nil
}

// fileType names a non-regular file's type for an error.
func fileType(m uint32) os.FileMode {
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return os.ModeDir
	case syscall.S_IFIFO:
		return os.ModeNamedPipe
	case syscall.S_IFSOCK:
		return os.ModeSocket
	case syscall.S_IFCHR:
		return os.ModeDevice | os.ModeCharDevice
	case syscall.S_IFBLK:
		return os.ModeDevice
	case syscall.S_IFLNK:
		return os.ModeSymlink
	}
	return os.ModeIrregular
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

// ReadSecretShares reads share files (each checked as a PIN file is) and combines them into the secret they were split from. Sealed
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

// readPrivateFile reads a secret file of at most limit bytes that passes
// the checks of an operator's PIN file (ownSecret).
func readPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := openPrivateFile(path, ownSecret)
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
