package publish

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// OCSPDir is the subdirectory OCSP responses are published in, one
// directory per issuer below it: ocsp/<issuer>/<serial>.der.
const OCSPDir = "ocsp"

// MaxSerialBytes is the longest serial a certificate has (RFC 5280 §4.1.2.2:
// 20 octets of INTEGER, so 20 octets of magnitude at most).
const MaxSerialBytes = 20

// OCSPResponse is one pre-signed response to publish.
type OCSPResponse struct {
	Issuer string // hex identifier of the issuing key (its SKI), as Series.Issuer
	Serial []byte // the certificate's serial in the store form: minimal big-endian magnitude
	DER    []byte // the whole OCSPResponse
}

// OCSPName is the path, relative to the publication directory, of the
// response for serial of issuer: ocsp/<issuer>/<serial in lowercase hex>.der.
// The responder opens exactly this name, so signerd and it must agree on it.
func OCSPName(issuer string, serial []byte) (string, error) {
	if !issuerPattern.MatchString(issuer) {
		return "", fmt.Errorf("publish: issuer %q: %w: want 1 to 128 lowercase hex digits", issuer, ErrInvalidName)
	}
	switch {
	case len(serial) == 0:
		return "", fmt.Errorf("publish: empty serial: %w", ErrInvalidName)
	case serial[0] == 0:
		// One serial, one name: a leading zero would give the same
		// certificate a second file the responder never reads.
		return "", fmt.Errorf("publish: serial %x: %w: leading zero byte (the store form is the minimal magnitude)", serial, ErrInvalidName)
	case len(serial) > MaxSerialBytes:
		return "", fmt.Errorf("publish: serial %x: %w: more than %d octets", serial, ErrInvalidName, MaxSerialBytes)
	}
	return path.Join(OCSPDir, issuer, hex.EncodeToString(serial)+".der"), nil
}

// PutOCSP publishes a batch of responses, each file atomically and the
// batch durably. Every response is first written under a temporary name
// in its issuer's directory, unsynced; one syncfs(2) of the file system
// then makes all their data durable at once — one fsync per file would
// cost a disk flush per response, and a refresh may be a million of them;
// then each is renamed over its published name, and each issuer directory
// touched is synced once. A crash before the renames leaves only
// temporaries (removed by Open); a crash among them leaves some responses
// new and some old, each one whole. When PutOCSP returns nil every
// response of the batch is published and survives a power cut.
//
// A serial given twice in a batch is published with the later response.
// On an error some responses may have been published and others not:
// publishing the batch again is the remedy, as it is after a crash.
//
// Each issuer directory is opened once per batch and its files are
// written, renamed and removed relative to it (openat, renameat): a
// response's own names are single components, so nothing is resolved
// beyond the directory, and a refresh of a million responses does not
// walk the path of each.
func (d *Dir) PutOCSP(batch []OCSPResponse) error {
	if len(batch) == 0 {
		return nil
	}
	dirs := map[string]*ocspDir{}
	var files []ocspFile
	defer func() {
		for _, f := range files {
			if !f.renamed && f.temp != "" {
				unix.Unlinkat(f.dir.fd(), f.temp, 0)
			}
		}
		for _, od := range dirs {
			od.f.Close()
		}
	}()
	for _, r := range batch {
		name, err := OCSPName(r.Issuer, r.Serial)
		if err != nil {
			return err
		}
		if len(r.DER) == 0 {
			return fmt.Errorf("publish: %s: empty OCSP response", filepath.Join(d.path, name))
		}
		dir := path.Dir(name)
		od := dirs[dir]
		if od == nil {
			if err := d.mkdirs(dir); err != nil {
				return err
			}
			f, err := d.root.Open(dir)
			if err != nil {
				return fmt.Errorf("publish: open %s: %w", filepath.Join(d.path, dir), err)
			}
			od = &ocspDir{rel: dir, f: f}
			dirs[dir] = od
		}
		files = append(files, ocspFile{dir: od, name: path.Base(name), der: r.DER})
	}
	for i := range files {
		f := &files[i]
		temp, err := writeTempAt(f.dir.fd(), f.der)
		f.temp = temp
		if err != nil {
			return fmt.Errorf("publish: write %s: %w", filepath.Join(d.path, f.dir.rel, f.name), err)
		}
	}
	if err := d.syncfs(); err != nil {
		return err
	}
	for i := range files {
		f := &files[i]
		if err := unix.Renameat(f.dir.fd(), f.temp, f.dir.fd(), f.name); err != nil {
			return fmt.Errorf("publish: rename into %s: %w", filepath.Join(d.path, f.dir.rel, f.name), err)
		}
		f.renamed = true
	}
	// The renames are durable only once the directories holding the new
	// entries are synced; strace -e fsync,syncfs of a publishing process
	// shows one syncfs and one fsync per issuer directory per batch.
	for _, od := range dirs {
		if err := od.f.Sync(); err != nil {
			return fmt.Errorf("publish: sync %s: %w", filepath.Join(d.path, od.rel), err)
		}
	}
	return nil
}

// ocspDir is an issuer's directory of responses, open for a batch.
type ocspDir struct {
	rel string // relative to the publication directory
	f   *os.File
}

func (od *ocspDir) fd() int { return int(od.f.Fd()) }

// ocspFile is one response of a batch on its way to its name.
type ocspFile struct {
	dir     *ocspDir
	name    string // the published name in dir
	der     []byte
	temp    string // the temporary name in dir, once created
	renamed bool
}

// writeTempAt writes data to a new temporary file in the directory dirfd,
// without syncing it, and returns its name in that directory, even on an
// error after it was created.
func writeTempAt(dirfd int, data []byte) (string, error) {
	for range 10 {
		var b [8]byte
		rand.Read(b[:])
		name := tempPrefix + hex.EncodeToString(b[:])
		// Created 0600 so nothing reads it before it is complete (readers
		// skip dot names anyway); the final mode is set by fchmod rather
		// than through the umask.
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", err
		}
		err = unix.Fchmod(fd, fileMode)
		for rest := data; err == nil && len(rest) > 0; {
			var n int
			if n, err = unix.Write(fd, rest); err == nil {
				rest = rest[n:]
			}
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return name, err
	}
	return "", errors.New("no free temporary name")
}

// syncfs flushes every file of the publication directory's file system
// (syncfs(2)): the data of a whole batch in one call. It flushes other
// writers' dirty data of the same file system too, which a dedicated
// publication file system keeps small.
func (d *Dir) syncfs() error {
	f, err := d.root.Open(".")
	if err != nil {
		return fmt.Errorf("publish: syncfs %s: %w", d.path, err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("publish: syncfs %s: %w", d.path, err)
	}
	return nil
}

// RemoveOCSP removes the published response for serial of issuer — once
// the certificate has expired, no response is served for it. Removing one
// that is not there is no error.
func (d *Dir) RemoveOCSP(issuer string, serial []byte) error {
	name, err := OCSPName(issuer, serial)
	if err != nil {
		return err
	}
	if err := d.root.Remove(name); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("publish: remove %s: %w", filepath.Join(d.path, name), err)
	}
	return d.syncDir(path.Dir(name))
}

// ReadOCSP reads the published response for serial of issuer; nil, nil if none.
func (d *Dir) ReadOCSP(issuer string, serial []byte) ([]byte, error) {
	name, err := OCSPName(issuer, serial)
	if err != nil {
		return nil, err
	}
	b, err := d.root.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("publish: read %s: %w", filepath.Join(d.path, name), err)
	}
	return b, nil
}
