// Package ceremony performs the CA's key ceremonies (SPEC §4): declarative
// files that name a token, key labels, a certificate profile and outputs.
//
// Every ceremony runs in the same order: check everything that can be
// checked without changing anything (the inputs parse, keys exist and match
// the certificates given for them, new labels are free, outputs do not
// exist, validity nests inside the issuer's, the certificate's TBS lints
// clean); then act in the HSM; then verify what
// the HSM produced (same TBS as linted, lints again, signature and chain
// verify); only then write outputs, each created exclusively. A dry run
// stops after the checks. Each step goes into a transcript, printed as it
// happens and recorded whole in the audit log with the operator and the
// witnesses.
package ceremony

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"go.yaml.in/yaml/v3"

	"signerd/store"
)

// A ceremony is one type's parsed file.
type ceremony interface {
	header() *Header
	// prepare resolves relative paths against dir and checks the file.
	prepare(dir string) error
	// perform runs the ceremony; in a dry run it stops before any change.
	perform(r *runner) error
	// objects names what the ceremony is about (key labels), for the log.
	objects() string
}

var types = map[string]func() ceremony{
	"token-init":   func() ceremony { return new(tokenInit) },
	"root":         func() ceremony { return new(root) },
	"issuing-key":  func() ceremony { return new(issuingKey) },
	"issuing-cert": func() ceremony { return new(issuingCert) },
	"root-crl":     func() ceremony { return new(rootCRL) },
	"rollover":     func() ceremony { return new(rollover) },
	"backup":       func() ceremony { return new(backup) },
	"restore":      func() ceremony { return new(restore) },
}

// Types lists the ceremony types.
func Types() []string {
	out := make([]string, 0, len(types))
	for t := range types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// File is a loaded, checked ceremony file.
type File struct {
	Path   string
	Type   string
	digest []byte // SHA-256 of the file's bytes, quoted in the record
	c      ceremony
}

// Load reads and checks a ceremony file: strict YAML (unknown keys, a
// second document and trailing content are errors) of a known type.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var head struct {
		Type string `yaml:"type"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil { // decodeStrict checks the whole file below
		return nil, fmt.Errorf("ceremony %s: %w", path, err)
	}
	mk, ok := types[head.Type]
	if !ok {
		return nil, fmt.Errorf("ceremony %s: type %q is not one of %s", path, head.Type, strings.Join(Types(), ", "))
	}
	c := mk()
	if err := decodeStrict(data, c); err != nil {
		return nil, fmt.Errorf("ceremony %s: %w", path, err)
	}
	if err := c.header().check(); err != nil {
		return nil, fmt.Errorf("ceremony %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(abs)
	resolvePaths(dir, &c.header().AuditLog)
	if err := c.prepare(dir); err != nil {
		return nil, fmt.Errorf("ceremony %s (%s): %w", path, head.Type, err)
	}
	sum := sha256.Sum256(data)
	return &File{Path: path, Type: head.Type, digest: sum[:], c: c}, nil
}

// Options are how a ceremony is run.
type Options struct {
	// DryRun checks everything and changes nothing: no token object, no
	// file and no audit record is created.
	DryRun bool
	// Out receives the transcript as it is written.
	Out io.Writer
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Run performs the ceremony. The transcript goes to opts.Out and, unless
// this is a dry run, into the audit log as one event, whether the ceremony
// succeeded or not.
func (f *File) Run(opts Options) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := f.c.header()
	r := &runner{dryRun: opts.DryRun, out: opts.Out}
	mode := "run"
	if opts.DryRun {
		mode = "dry run (checks only; nothing is changed)"
	}
	r.step("ceremony %s, %s", f.Type, mode)
	r.step("file %s (sha256 %x)", f.Path, f.digest)
	r.step("operator %s; witnesses: %s; uid %d; at %s", h.Operator, orNone(strings.Join(h.Witnesses, ", ")),
		os.Getuid(), opts.Now().UTC().Format(time.RFC3339))

	var log *store.Store
	if !opts.DryRun {
		var err error
		if log, err = store.Open(h.AuditLog); err != nil {
			return fmt.Errorf("audit log: %w (a store signerd is using can take a ceremony's record only while signerd is stopped)", err)
		}
		defer log.Close()
	} else {
		r.step("would record the ceremony in %s", h.AuditLog)
	}

	err := f.c.perform(r)
	if err != nil {
		r.step("FAILED: %v", err)
	} else if opts.DryRun {
		r.step("dry run: all checks passed")
	} else {
		r.step("ceremony complete")
	}
	if log == nil {
		return err
	}
	ev := store.Event{
		Time: opts.Now().UTC(),
		Actor: store.Actor{UID: os.Getuid(), GID: os.Getgid(), PID: os.Getpid(), Role: "ceremony",
			Operator: h.Operator},
		Action: "ceremony." + f.Type, Object: f.c.objects(), Outcome: store.OutcomeOK,
		Detail: r.transcript.String(),
	}
	if err != nil {
		ev.Outcome, ev.Reason = store.OutcomeFailed, err.Error()
	}
	var rec store.Event
	aerr := log.Update(func(tx *store.Tx) error {
		var e error
		rec, e = tx.Append(ev)
		return e
	})
	if aerr != nil {
		return errors.Join(err, fmt.Errorf("record the ceremony in the audit log: %w", aerr))
	}
	fmt.Fprintf(r.out, "recorded in audit log %s as event %d\n", h.AuditLog, rec.Seq)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// runner carries a ceremony's run: the mode and the transcript.
type runner struct {
	dryRun     bool
	out        io.Writer
	transcript strings.Builder
	// openFile opens outputs (nil: os.OpenFile); a test puts another's
	// file in the way between a check and the exclusive creation.
	openFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// created are the files this run created (its exclusive open
	// succeeded), by path: device and inode, so that a failed run takes
	// back only those, and only while the path still names them.
	created map[string]fileID
}

type fileID struct{ dev, ino uint64 }

// step records one line of the transcript.
func (r *runner) step(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	r.transcript.WriteString(line + "\n")
	if r.out != nil {
		fmt.Fprintln(r.out, line)
	}
}

// outputsAbsent checks that no output exists: ceremonies never overwrite.
func (r *runner) outputsAbsent(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("output %s exists; a ceremony never overwrites", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("output %s: %w", p, err)
		}
		if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
			return fmt.Errorf("output %s: its folder does not exist", p)
		}
	}
	r.step("checked: outputs do not exist yet: %s", strings.Join(nonEmpty(paths), ", "))
	return nil
}

func nonEmpty(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// write creates path exclusively with data and records its fingerprints.
// Secret material (shares) gets mode 0600.
func (r *runner) write(path string, data []byte, secret bool) error {
	_, err := r.create(path, data, secret)
	return err
}

// create is write that also says whether it created the file: true once
// the exclusive open succeeded, also when writing or syncing it then
// failed; false when the path was taken (by anyone, at any moment before).
func (r *runner) create(path string, data []byte, secret bool) (created bool, err error) {
	if path == "" {
		return false, nil
	}
	mode := os.FileMode(0o644)
	if secret {
		mode = 0o600
	}
	open := r.openFile
	if open == nil {
		open = os.OpenFile
	}
	f, err := open(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return false, fmt.Errorf("%s exists; a ceremony never overwrites", path)
		}
		return false, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return true, fmt.Errorf("write %s: %w", path, err)
	}
	if r.created == nil {
		r.created = map[string]fileID{}
	}
	r.created[path] = fileID{dev: st.Dev, ino: st.Ino}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return true, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return true, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return true, fmt.Errorf("write %s: %w", path, err)
	}
	if secret {
		r.step("wrote %s (mode 0600)", path)
		return true, nil
	}
	r.step("wrote %s (%s)", path, fingerprints(data))
	return true, nil
}

// createdHere reports whether path still names the file this run created.
func (r *runner) createdHere(path string) bool {
	id, ok := r.created[path]
	var st syscall.Stat_t
	return ok && syscall.Lstat(path, &st) == nil && st.Dev == id.dev && st.Ino == id.ino
}

// fingerprints are a file's SHA-256 and SM3 hashes, as witnesses compare
// them with `openssl dgst -sha256` / `-sm3`.
func fingerprints(data []byte) string {
	s := sha256.Sum256(data)
	m := sm3.Sum(data)
	return "sha256 " + hex.EncodeToString(s[:]) + ", sm3 " + hex.EncodeToString(m[:])
}
