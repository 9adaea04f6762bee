// Package publish writes what signerd publishes (CRLs, OCSP responses) into a directory
// a web server serves, atomically and under stable names.
//
// A reader (web server, LDAP loader) only ever sees complete files: every file is written
// under a dot-prefixed temporary name in its final directory, synced, renamed over its
// published name and the directory synced, so a crash leaves at worst a stray .tmp-* file,
// which no published name matches and Open removes.
package publish

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultKeep is how many numbered files per series Open keeps when told 0.
const DefaultKeep = 10

// Published files are public data: the web server or loader reads them under its own user.
const (
	fileMode = 0o644
	dirMode  = 0o755
)

// tempPrefix starts every name a write is in progress under; published names never do.
const tempPrefix = ".tmp-"

// ErrConflict is returned when a number is published again with different bytes: two
// different CRLs under one number would mean the store and the directory disagree.
var ErrConflict = errors.New("already published with different content")

// ErrInvalidName is returned for a series or relative path that cannot name a published file.
var ErrInvalidName = errors.New("invalid name")

// ErrInUse is returned by Open when another Dir, in this process or another, has the directory.
var ErrInUse = errors.New("in use by another publisher")

// Dir is a publication directory. It is safe for concurrent use.
//
// One Dir owns a directory at a time (an exclusive flock, released by Close or by the
// process's death): Open removes every temporary file, which would break another writer's
// rename, and the numbers published per series are kept in memory after one listing of the
// issuer's directory, since listing a directory of thousands of shards' files for every
// CRL would make a round of shards quadratic in their number.
type Dir struct {
	path string
	root *os.Root
	lock *os.File
	keep int

	mu     sync.Mutex // guards loaded and series
	loaded map[string]bool
	series map[Series]*seriesState
}

// seriesState is what the directory holds of one series, as far as this Dir wrote or found it.
type seriesState struct {
	mu      sync.Mutex
	numbers []uint64 // numbered files present, ascending
}

// Open prepares dir (created 0755 if missing, its parents must exist), removing temp files a crash left.
// keep is the number of numbered files kept per series (≥1; 0 → DefaultKeep).
func Open(dir string, keep int) (*Dir, error) {
	if keep < 0 {
		return nil, fmt.Errorf("publish: keep %d: must be at least 1 (0 for the default %d)", keep, DefaultKeep)
	}
	if keep == 0 {
		keep = DefaultKeep
	}
	if dir == "" {
		return nil, fmt.Errorf("publish: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("publish: %s: %w", dir, err)
	}
	if err := createDir(abs); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("publish: open %s: %w", abs, err)
	}
	lock, err := root.Open(".")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("publish: open %s: %w", abs, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		root.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("publish: %s: %w", abs, ErrInUse)
		}
		return nil, fmt.Errorf("publish: lock %s: %w", abs, err)
	}
	d := &Dir{path: abs, root: root, lock: lock, keep: keep, loaded: map[string]bool{}, series: map[Series]*seriesState{}}
	if err := d.removeTemps(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// createDir makes the publication directory itself if missing. Its parent must exist: a
// mistyped publish.dir should fail at start, not grow a tree somewhere unexpected.
func createDir(abs string) error {
	fi, err := os.Stat(abs)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("publish: %s: not a directory", abs)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("publish: %s: %w", abs, err)
	}
	if err := os.Mkdir(abs, dirMode); err != nil {
		return fmt.Errorf("publish: create %s: %w", abs, err)
	}
	// Mkdir's mode is cut by the umask; readers need 0755 whatever signerd's umask is.
	if err := os.Chmod(abs, dirMode); err != nil {
		return fmt.Errorf("publish: chmod %s: %w", abs, err)
	}
	return syncDirPath(filepath.Dir(abs))
}

// removeTemps removes every .tmp-* file under the directory: each is a write a crash or a
// failed write interrupted, never a published file.
func (d *Dir) removeTemps() error {
	return fs.WalkDir(d.root.FS(), ".", func(name string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("publish: scan %s: %w", filepath.Join(d.path, name), err)
		}
		if e.IsDir() || !strings.HasPrefix(e.Name(), tempPrefix) {
			return nil
		}
		if err := d.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("publish: remove leftover %s: %w", filepath.Join(d.path, name), err)
		}
		return nil
	})
}

// Path is the directory's absolute path.
func (d *Dir) Path() string { return d.path }

// Close releases the directory and its lock.
func (d *Dir) Close() error {
	err := d.lock.Close()
	if rerr := d.root.Close(); err == nil {
		err = rerr
	}
	return err
}

// Series is one kind of CRL an issuer publishes: the complete CRLs of a shard, or its deltas.
type Series struct {
	Issuer string // hex identifier of the issuing key: the subdirectory's name
	Shard  int
	Delta  bool
}

var issuerPattern = regexp.MustCompile(`^[0-9a-f]{1,128}$`)

// maxShard is the largest shard a 16-bit shard bound can name.
const maxShard = 65535

func (s Series) validate() error {
	if !issuerPattern.MatchString(s.Issuer) {
		return fmt.Errorf("publish: issuer %q: %w: want 1 to 128 lowercase hex digits", s.Issuer, ErrInvalidName)
	}
	if s.Shard < 0 || s.Shard > maxShard {
		return fmt.Errorf("publish: shard %d: %w: want 0..%d", s.Shard, ErrInvalidName, maxShard)
	}
	return nil
}

// latestName is the stable name a web server serves: it always holds the series' newest CRL.
func (s Series) latestName() string {
	if s.Delta {
		return path.Join(s.Issuer, strconv.Itoa(s.Shard)+"-delta.crl")
	}
	return path.Join(s.Issuer, strconv.Itoa(s.Shard)+".crl")
}

func (s Series) numberedName(number uint64) string {
	n := strconv.FormatUint(number, 10)
	if s.Delta {
		return path.Join(s.Issuer, strconv.Itoa(s.Shard)+"-delta-"+n+".crl")
	}
	return path.Join(s.Issuer, strconv.Itoa(s.Shard)+"-"+n+".crl")
}

// numberedPattern matches the numbered names of every series; numbers are canonical decimal
// (no sign, no leading zero) so that one number has one name.
var numberedPattern = regexp.MustCompile(`^(0|[1-9][0-9]*)-(delta-)?(0|[1-9][0-9]*)\.crl$`)

// parseNumbered reads a numbered file's name back; ok is false for any other name.
func parseNumbered(name string) (shard int, delta bool, number uint64, ok bool) {
	m := numberedPattern.FindStringSubmatch(name)
	if m == nil {
		return 0, false, 0, false
	}
	sh, err := strconv.Atoi(m[1])
	if err != nil || sh > maxShard {
		return 0, false, 0, false
	}
	n, err := strconv.ParseUint(m[3], 10, 64)
	if err != nil {
		return 0, false, 0, false
	}
	return sh, m[2] != "", n, true
}

// state is the series' state, locked; the first use of an issuer lists its directory once.
func (d *Dir) state(s Series) (*seriesState, error) {
	d.mu.Lock()
	if !d.loaded[s.Issuer] {
		found, err := d.scanIssuer(s.Issuer)
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		// No state of this issuer's series exists before it is loaded, so none is in use.
		for series, numbers := range found {
			d.series[series] = &seriesState{numbers: numbers}
		}
		d.loaded[s.Issuer] = true
	}
	st, ok := d.series[s]
	if !ok {
		st = &seriesState{}
		d.series[s] = st
	}
	d.mu.Unlock()
	st.mu.Lock()
	return st, nil
}

// scanIssuer lists the numbered files present in an issuer's directory, by series, ascending.
func (d *Dir) scanIssuer(issuer string) (map[Series][]uint64, error) {
	f, err := d.root.Open(issuer)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("publish: list %s: %w", filepath.Join(d.path, issuer), err)
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("publish: list %s: %w", filepath.Join(d.path, issuer), err)
	}
	found := map[Series][]uint64{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if shard, delta, n, ok := parseNumbered(e.Name()); ok {
			s := Series{Issuer: issuer, Shard: shard, Delta: delta}
			found[s] = append(found[s], n)
		}
	}
	for _, numbers := range found {
		slices.Sort(numbers)
	}
	return found, nil
}

// PutCRL writes der as <issuer>/<shard>-<number>.crl (delta: <shard>-delta-<number>.crl), then
// atomically replaces <issuer>/<shard>.crl (delta: <shard>-delta.crl) with the same bytes, then
// removes numbered files of the series beyond the keep most recent (by number). Idempotent for a
// number already published with the same bytes; a number published with other bytes → ErrConflict.
// A number below the series' latest published is written as numbered only (the latest name never
// goes back to a smaller number); latest reports whether it became the latest.
//
// The numbered file is written first so that the stable name only ever holds bytes also
// present under their number: LatestCRL can then tell which number the stable name holds.
func (d *Dir) PutCRL(s Series, number uint64, der []byte) (latest bool, err error) {
	if err := s.validate(); err != nil {
		return false, err
	}
	if len(der) == 0 {
		return false, fmt.Errorf("publish: %s: empty CRL", filepath.Join(d.path, s.numberedName(number)))
	}
	st, err := d.state(s)
	if err != nil {
		return false, err
	}
	defer st.mu.Unlock()

	numbered := s.numberedName(number)
	same, exists, err := d.sameContent(numbered, der)
	if err != nil {
		return false, err
	}
	if exists && !same {
		return false, fmt.Errorf("publish: %s: %w", filepath.Join(d.path, numbered), ErrConflict)
	}
	if !exists {
		if err := d.WriteFile(numbered, der, fileMode); err != nil {
			return false, err
		}
	}
	if i, found := slices.BinarySearch(st.numbers, number); !found {
		st.numbers = slices.Insert(st.numbers, i, number)
	}
	latest = st.numbers[len(st.numbers)-1] == number
	if latest {
		// Compared first so that a republish costs a read, not a write and two fsyncs; it
		// differs after a crash between the numbered and the stable write, which this fixes.
		same, _, err := d.sameContent(s.latestName(), der)
		if err != nil {
			return false, err
		}
		if !same {
			if err := d.WriteFile(s.latestName(), der, fileMode); err != nil {
				return false, err
			}
		}
	}
	if err := d.prune(s, st); err != nil {
		return latest, err
	}
	return latest, nil
}

// LatestCRL is the number the series' stable name holds, 0,false if none — signerd compares it
// with the store to republish what another node signed or a crash left unpublished.
//
// The stable name is matched against the numbered files from the highest down: after a crash
// between writing number n and replacing the stable name, the highest numbered file is n but
// the stable name still holds n-1, and reporting n would hide that n is not yet published.
// If the stable name matches no numbered file (missing, or an older number already pruned),
// the answer is 0,false, which makes signerd publish its latest again.
func (d *Dir) LatestCRL(s Series) (uint64, bool, error) {
	if err := s.validate(); err != nil {
		return 0, false, err
	}
	st, err := d.state(s)
	if err != nil {
		return 0, false, err
	}
	defer st.mu.Unlock()
	numbers := st.numbers
	if len(numbers) == 0 {
		return 0, false, nil
	}
	stable, err := d.root.Stat(s.latestName())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("publish: %s: %w", filepath.Join(d.path, s.latestName()), err)
	}
	for _, n := range slices.Backward(numbers) {
		fi, err := d.root.Stat(s.numberedName(n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("publish: %s: %w", filepath.Join(d.path, s.numberedName(n)), err)
		}
		if fi.Size() != stable.Size() {
			continue
		}
		same, err := d.sameFiles(s.latestName(), s.numberedName(n))
		if err != nil {
			return 0, false, err
		}
		if same {
			return n, true, nil
		}
	}
	return 0, false, nil
}

// prune removes the series' numbered files beyond the keep highest numbers.
func (d *Dir) prune(s Series, st *seriesState) error {
	if len(st.numbers) <= d.keep {
		return nil
	}
	for len(st.numbers) > d.keep {
		name := s.numberedName(st.numbers[0])
		if err := d.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("publish: prune %s: %w", filepath.Join(d.path, name), err)
		}
		st.numbers = st.numbers[1:]
	}
	// No directory sync: a pruned file that comes back after a power cut is an old, complete
	// CRL, pruned again next time, and the sync would cost a fifth of a PutCRL's I/O.
	return nil
}

// WriteFile is the atomic write underneath (rel a clean relative path inside dir; no "..", no abs).
// Missing parent directories are created 0755. mode is applied as given, whatever the umask.
func (d *Dir) WriteFile(rel string, data []byte, mode os.FileMode) error {
	if err := validRel(rel); err != nil {
		return err
	}
	full := filepath.Join(d.path, filepath.FromSlash(rel))
	parent := path.Dir(rel)
	if err := d.mkdirs(parent); err != nil {
		return err
	}
	tmp, err := d.createTemp(parent, mode)
	if err != nil {
		return fmt.Errorf("publish: write %s: %w", full, err)
	}
	tmpName := path.Join(parent, path.Base(tmp.Name()))
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			d.root.Remove(tmpName)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("publish: write %s: %w", full, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("publish: sync %s: %w", full, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("publish: close %s: %w", full, err)
	}
	if err := d.root.Rename(tmpName, rel); err != nil {
		return fmt.Errorf("publish: rename into %s: %w", full, err)
	}
	committed = true
	// The rename is durable only once the directory holding the new entry is synced.
	// No test can prove this call happens at the right moment short of cutting power;
	// strace -e fsync of a publishing process shows it.
	return d.syncDir(parent)
}

// validRel refuses any path that is not one clean, relative name beneath the directory, and
// temporary names, which Open would delete.
func validRel(rel string) error {
	if rel == "" || rel == "." || strings.Contains(rel, "\\") || !filepath.IsLocal(rel) ||
		path.Clean(rel) != rel || path.IsAbs(rel) {
		return fmt.Errorf("publish: path %q: %w: want a clean relative path inside the directory", rel, ErrInvalidName)
	}
	for _, part := range strings.Split(rel, "/") {
		if part == ".." || strings.HasPrefix(part, tempPrefix) {
			return fmt.Errorf("publish: path %q: %w", rel, ErrInvalidName)
		}
	}
	return nil
}

// createTemp creates a fresh temporary file in dir, with mode set exactly.
func (d *Dir) createTemp(dir string, mode os.FileMode) (*os.File, error) {
	for range 10 {
		var b [8]byte
		rand.Read(b[:])
		name := path.Join(dir, tempPrefix+hex.EncodeToString(b[:]))
		f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		// Created 0600 so nothing reads it before it is complete (readers skip dot names
		// anyway); the final mode is set here rather than through the umask.
		if err := f.Chmod(mode.Perm()); err != nil {
			f.Close()
			d.root.Remove(name)
			return nil, err
		}
		return f, nil
	}
	return nil, errors.New("no free temporary name")
}

// mkdirs creates the missing directories of rel, each 0755 and each made durable in its parent.
func (d *Dir) mkdirs(rel string) error {
	if rel == "." {
		return nil
	}
	if fi, err := d.root.Stat(rel); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("publish: %s: not a directory", filepath.Join(d.path, rel))
		}
		return nil
	}
	parent := path.Dir(rel)
	if err := d.mkdirs(parent); err != nil {
		return err
	}
	full := filepath.Join(d.path, filepath.FromSlash(rel))
	if err := d.root.Mkdir(rel, dirMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // created by a concurrent write
		}
		return fmt.Errorf("publish: create %s: %w", full, err)
	}
	if err := d.root.Chmod(rel, dirMode); err != nil {
		return fmt.Errorf("publish: chmod %s: %w", full, err)
	}
	return d.syncDir(parent)
}

func (d *Dir) syncDir(rel string) error {
	f, err := d.root.Open(rel)
	if err != nil {
		return fmt.Errorf("publish: sync %s: %w", filepath.Join(d.path, rel), err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("publish: sync %s: %w", filepath.Join(d.path, rel), err)
	}
	return nil
}

func syncDirPath(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("publish: sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("publish: sync %s: %w", dir, err)
	}
	return nil
}

// sameContent reports whether the file rel exists and holds exactly data, reading it in
// chunks so a republish of a large CRL costs no second copy in memory.
func (d *Dir) sameContent(rel string, data []byte) (same, exists bool, err error) {
	f, err := d.root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("publish: read %s: %w", filepath.Join(d.path, rel), err)
	}
	defer f.Close()
	same, err = equalReader(f, bytes.NewReader(data))
	if err != nil {
		return false, true, fmt.Errorf("publish: read %s: %w", filepath.Join(d.path, rel), err)
	}
	return same, true, nil
}

func (d *Dir) sameFiles(a, b string) (bool, error) {
	fa, err := d.root.Open(a)
	if err != nil {
		return false, fmt.Errorf("publish: read %s: %w", filepath.Join(d.path, a), err)
	}
	defer fa.Close()
	fb, err := d.root.Open(b)
	if err != nil {
		return false, fmt.Errorf("publish: read %s: %w", filepath.Join(d.path, b), err)
	}
	defer fb.Close()
	same, err := equalReader(fa, fb)
	if err != nil {
		return false, fmt.Errorf("publish: compare %s with %s: %w", filepath.Join(d.path, a), filepath.Join(d.path, b), err)
	}
	return same, nil
}

func equalReader(a, b io.Reader) (bool, error) {
	const chunk = 64 << 10
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for {
		na, erra := io.ReadFull(a, ba)
		nb, errb := io.ReadFull(b, bb)
		if erra != nil && erra != io.EOF && erra != io.ErrUnexpectedEOF {
			return false, erra
		}
		if errb != nil && errb != io.EOF && errb != io.ErrUnexpectedEOF {
			return false, errb
		}
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra != nil || errb != nil {
			return erra != nil && errb != nil, nil
		}
	}
}
