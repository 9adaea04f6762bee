package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// pinRefusedMarkerName is the marker's file name in the store file's
// folder, or for a database store in the unit's state directory
// (/var/lib/signerd/hsm-pin-refused with the unit's StateDirectory=
// either way), the default of hsm.pin_refused_marker.
// systemd/signerd.service names the same path in ConditionPathExists=!.
const pinRefusedMarkerName = "hsm-pin-refused"

// defaultPINRefusedMarker is the marker beside the store file.
func defaultPINRefusedMarker(storePath string) string {
	return filepath.Join(filepath.Dir(storePath), pinRefusedMarkerName)
}

// pinRefusedMarkerFor is hsm.pin_refused_marker's default for the store:
// beside a store file; for a database, in the state directory systemd
// made for the unit (StateDirectory=, passed as $STATE_DIRECTORY), which
// is the folder a store file has under the shipped unit, so the marker is
// at the path its ConditionPathExists= names whichever store signerd
// runs on. Outside such a unit a database store has no folder of
// signerd's own to default to: the marker must then be configured, since
// one that cannot be written would let every later start present a
// refused PIN again.
func pinRefusedMarkerFor(s storeConfig) (string, error) {
	if s.Postgres == nil {
		return defaultPINRefusedMarker(s.Path), nil
	}
	// systemd joins several state directories with ':'; the unit's first
	// is signerd's own.
	if dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); filepath.IsAbs(dir) {
		return filepath.Join(dir, pinRefusedMarkerName), nil
	}
	return "", errors.New("hsm.pin_refused_marker is required with store.postgres when signerd does not run under a unit " +
		"with StateDirectory= (no $STATE_DIRECTORY): a file path in a folder only signerd writes, such as " +
		"/var/lib/signerd/" + pinRefusedMarkerName + ", which systemd/signerd.service names in ConditionPathExists=")
}

// checkMarkerFolder fails if the marker's folder is not a directory: a
// PIN refusal could then not be recorded, and the next start would
// present the refused PIN again.
func checkMarkerFolder(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return fmt.Errorf("hsm.pin_refused_marker %s: its folder %s: %w; a PIN refusal could not be recorded there", path, dir, err)
	}
	return nil
}

// A PIN refusal is remembered in a marker file, because exit status 3
// stops only the unit's Restart=: under socket activation (Accept=no) the
// connection that started signerd is still waiting when it exits, so
// systemd starts it again at once, and each start would present the
// refused PIN to a token that locks it after a few tries. While the marker
// exists signerd neither reads the PIN nor opens the HSM; an operator
// fixes the PIN, then removes the marker.

// maxMarkerShown bounds how much of a marker is quoted in the log.
const maxMarkerShown = 1024

// pinRefusedEarlier reports whether the marker exists, with what it says
// (when, why). Anything at the path counts, whatever its type: it is
// never followed or opened blocking, and only regular files are quoted.
// err is set when whether it exists cannot be told.
func pinRefusedEarlier(path string) (refused bool, says string, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("PIN refusal marker: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return true, fmt.Sprintf("(not a regular file: %v)", fi.Mode().Type()), nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return true, fmt.Sprintf("(unreadable: %v)", err), nil
	}
	defer f.Close()
	raw, _ := io.ReadAll(io.LimitReader(f, maxMarkerShown))
	return true, strings.TrimSpace(string(raw)), nil
}

// markerRemedy is what an operator does once the PIN is fixed.
func markerRemedy(path string) string {
	return "fix the PIN (credential, pin_file or shares), then remove the marker: rm " + path +
		"; under systemd, then: systemctl reset-failed signerd.socket signerd.service; systemctl start signerd.socket signerd.service"
}

// recordPINRefused creates the marker, mode 0600, saying when and why,
// and syncs it and its folder so that it outlasts a crash. A marker
// already there (another signerd's) is kept as it is.
func recordPINRefused(path string, now time.Time, reason error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("PIN refusal marker: %w", err)
	}
	text := fmt.Sprintf("signerd: the HSM refused the user PIN, or it could not be read.\n"+
		"time: %s\npid: %d\nreason: %v\n"+
		"signerd will not read or present the PIN while this file exists.\n"+
		"To start signerd again, %s\n", now.UTC().Format(time.RFC3339), os.Getpid(), reason, markerRemedy(path))
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("PIN refusal marker %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
