package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this code reads and writes. A store written
// by another version is refused rather than guessed at.
const SchemaVersion = 1

var (
	bucketMeta     = []byte("meta")
	bucketCerts    = []byte("certificates")
	bucketSerials  = []byte("serials")
	bucketRequests = []byte("requests")
	bucketInFlight = []byte("in-flight")
	bucketRevoked  = []byte("revoked")
	bucketCRL      = []byte("crl")
	bucketStats    = []byte("statistics")
	bucketAudit    = []byte("audit")
	// bucketCompromisedKeys is a derived index that stores of schema
	// version 1 written before it lack: it is created where missing.
	bucketCompromisedKeys = []byte("compromised-keys")

	allBuckets = [][]byte{bucketMeta, bucketCerts, bucketSerials, bucketRequests,
		bucketInFlight, bucketRevoked, bucketCRL, bucketStats, bucketAudit, bucketCompromisedKeys}

	keySchema    = []byte("schema")
	keyAuditHead = []byte("audit-head")
	// keyAuditLastSeal holds the sequence number of the last seal event.
	keyAuditLastSeal = []byte("audit-last-seal")
	keyClock         = []byte("last-signing-time")
)

var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("not found")
	// ErrSerialUsed: the serial was reserved before; serials are never reused.
	ErrSerialUsed = errors.New("serial already used")
	// ErrImmutable: a write would change bytes that are final once written
	// (a certificate's DER).
	ErrImmutable = errors.New("record is immutable")
	// ErrWrite: a transaction could not be written (disk full, file system
	// read-only, I/O error). Nothing of it is in the store; the store stays
	// open and readable, and later transactions may succeed.
	ErrWrite = errors.New("store write failed")
)

// Store is an open bbolt file. It is safe for concurrent use: bbolt runs
// one writer at a time and readers see a consistent snapshot. A reader
// does not block the writer, except while the file outgrows its memory
// map: bbolt then waits for every open reader to finish before it maps
// the file anew, and every reader that begins meanwhile waits behind it.
// Options.InitialMmapSize puts that moment off; a read transaction kept
// short (never open while waiting on a client) bounds it.
type Store struct {
	db   *bolt.DB
	path string
}

// DefaultInitialMmapSize is the memory map a store is opened with unless
// told otherwise: 1 GiB of address space, so that no remapping happens
// before the file reaches 1 GiB (years of issuance for most CAs). It costs
// address space only: pages are read in as they are used, so resident
// memory is what it would be with a small map.
const DefaultInitialMmapSize = 1 << 30

// Options are how a store is opened.
type Options struct {
	// InitialMmapSize is how many bytes of address space the file is
	// mapped with at open (rounded up as bbolt does); zero maps only what
	// the file holds, doubling the map as the file grows. While the file
	// fits, a write never waits for readers. With a map larger than 16
	// MiB, bbolt extends the file 16 MiB beyond what a commit needs
	// (sparse where the file system allows) rather than to the map's size.
	InitialMmapSize int
}

// Open opens or creates the store at path with the default options. It
// fails at once if another process holds the file, and refuses a file of
// another schema version.
func Open(path string) (*Store, error) {
	return OpenWith(path, Options{InitialMmapSize: DefaultInitialMmapSize})
}

// OpenWith is Open with options.
func OpenWith(path string, o Options) (*Store, error) {
	if o.InitialMmapSize < 0 {
		return nil, fmt.Errorf("open store %s: initial memory map of %d bytes", path, o.InitialMmapSize)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: o.InitialMmapSize})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: in use by another process", path)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func initSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return errors.New("file is not a signerd store (no schema version)")
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return err
		}
		return ensureKeyIndex(tx)
	}
	v, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil {
		return fmt.Errorf("unreadable schema version %q", meta.Get(keySchema))
	}
	if v != SchemaVersion {
		return fmt.Errorf("schema version %d; this signerd reads version %d only", v, SchemaVersion)
	}
	// Every bucket of the version is there unless the file was edited or
	// damaged; refuse it by name rather than fail on first use.
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil && !bytes.Equal(name, bucketCompromisedKeys) {
			return fmt.Errorf("bucket %q is missing: the file was edited or damaged; restore a backup", name)
		}
	}
	if _, err := tx.CreateBucketIfNotExists(bucketCompromisedKeys); err != nil {
		return err
	}
	return ensureKeyIndex(tx)
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Update runs fn in one write transaction, committed (and fsynced) only if
// fn returns nil. A failure to write it is ErrWrite; fn's own errors are
// returned as they are.
func (s *Store) Update(fn func(*Tx) error) error {
	var fnErr error
	err := s.db.Update(func(tx *bolt.Tx) error {
		if fnErr = fn(&Tx{tx}); fnErr == nil {
			fnErr = noteKeyIndex(tx)
		}
		return fnErr
	})
	if err != nil && fnErr == nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return err
}

// View runs fn in a read-only snapshot. Keep fn short: while it runs, a
// write that must grow the memory map waits, and so do all later reads
// and writes. Never wait on a client (write to a socket) inside fn; copy
// what is needed and write it afterwards.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx}) })
}

// Tx is a transaction. Its methods must not be used after fn returns.
type Tx struct{ tx *bolt.Tx }

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

// LastSigningTime is the latest time stamped on anything the CA signed
// (certificate notBefore or CRL thisUpdate) or on a lifecycle change
// (revocation, hold, restore), zero if none.
func (t *Tx) LastSigningTime() (time.Time, error) {
	raw := t.bucket(bucketMeta).Get(keyClock)
	if raw == nil {
		return time.Time{}, nil
	}
	var ts time.Time
	if err := ts.UnmarshalText(raw); err != nil {
		return time.Time{}, fmt.Errorf("read last signing time: %w", err)
	}
	return ts, nil
}

// NoteSigningTime raises the last signing time to ts (never lowers it).
func (t *Tx) NoteSigningTime(ts time.Time) error {
	last, err := t.LastSigningTime()
	if err != nil {
		return err
	}
	if !ts.After(last) {
		return nil
	}
	raw, _ := ts.UTC().MarshalText()
	return t.bucket(bucketMeta).Put(keyClock, raw)
}

// ResetSigningTime sets the last signing time to ts even if it is earlier:
// only for an operator's acknowledged clock reset.
func (t *Tx) ResetSigningTime(ts time.Time) error {
	raw, _ := ts.UTC().MarshalText()
	return t.bucket(bucketMeta).Put(keyClock, raw)
}

// get decodes the JSON record under key; what names it in errors.
func get[T any](b *bolt.Bucket, key []byte, what string) (*T, error) {
	raw := b.Get(key)
	if raw == nil {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("%s: decode: %w", what, err)
	}
	return v, nil
}
