package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SchemaVersion is the layout this code reads and writes. A store written
// by another version is refused rather than guessed at.
const SchemaVersion = 1

var (
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

// Store is the CA's records, in a bbolt file (Open) or a PostgreSQL
// database (OpenPostgres); nothing that uses it need know which. It is
// safe for concurrent use: writes run one at a time and readers see a
// consistent snapshot.
//
// On bbolt, a reader does not block the writer, except while the file
// outgrows its memory map: bbolt then waits for every open reader to
// finish before it maps the file anew, and every reader that begins
// meanwhile waits behind it. Options.InitialMmapSize puts that moment off;
// a read transaction kept short (never open while waiting on a client)
// bounds it.
type Store struct {
	b    backend
	bolt *boltBackend // nil on PostgreSQL
	// chain is the audit chain this process appends to: its node's.
	chain chain
	// node is this process's claim on its node name (node.go); nil for
	// the unnamed node.
	node *nodeClaim
	// updating is held across each Update (see Update).
	updating sync.Mutex
	// mu guards written and halted (head.go).
	mu      sync.Mutex
	written auditHead
	// halted is why this process writes no more: the store went back
	// behind what it wrote (ErrLogBehind) or its node name was taken over
	// (ErrNodeTakenOver).
	halted error
}

// DefaultInitialMmapSize is the memory map a store is opened with unless
// told otherwise: 1 GiB of address space, so that no remapping happens
// before the file reaches 1 GiB (years of issuance for most CAs). It costs
// address space only: pages are read in as they are used, so resident
// memory is what it would be with a small map.
const DefaultInitialMmapSize = 1 << 30

// Options are how a bbolt store is opened.
type Options struct {
	// InitialMmapSize is how many bytes of address space the file is
	// mapped with at open (rounded up as bbolt does); zero maps only what
	// the file holds, doubling the map as the file grows. While the file
	// fits, a write never waits for readers. With a map larger than 16
	// MiB, bbolt extends the file 16 MiB beyond what a commit needs
	// (sparse where the file system allows) rather than to the map's size.
	InitialMmapSize int
}

// Open opens or creates the bbolt store at path with the default options.
// It fails at once if another process holds the file, and refuses a file
// of another schema version.
func Open(path string) (*Store, error) {
	return OpenWith(path, Options{InitialMmapSize: DefaultInitialMmapSize})
}

// OpenWith is Open with options.
func OpenWith(path string, o Options) (*Store, error) {
	b, err := openBoltBackend(path, o)
	if err != nil {
		return nil, err
	}
	s := &Store{b: b, bolt: b}
	if err := s.opened(); err != nil {
		b.close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// OpenPostgres opens the store in the PostgreSQL database dsn names
// (PostgreSQL 15 or newer; a libpq connection string or URL). It fails at
// once if another signerd has the database open, and refuses a database
// whose schema is not this version's: UpgradePostgres (signerctl store
// upgrade) applies migrations, never Open.
func OpenPostgres(dsn string, o PostgresOptions) (*Store, error) {
	d, err := ParsePostgresDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store postgres: %w", err)
	}
	return OpenPostgresDSN(d, o)
}

// OpenPostgresDSN is OpenPostgres with the DSN parsed (ParsePostgresDSN).
func OpenPostgresDSN(d *PostgresDSN, o PostgresOptions) (*Store, error) {
	if o.Node != "" {
		if err := ValidNodeName(o.Node); err != nil {
			return nil, fmt.Errorf("open store postgres: %w", err)
		}
	}
	b, err := openPostgresBackendDSN(d, o)
	if err != nil {
		return nil, err
	}
	s := &Store{b: b, chain: chain{o.Node}}
	if o.Node != "" {
		if s.node, err = s.claimNode(o.Node, o.NodeLease); err != nil {
			b.close()
			return nil, fmt.Errorf("open store postgres %s: %w", b.where, err)
		}
	}
	if err := s.opened(); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store on PostgreSQL: %w", err)
	}
	return s, nil
}

// Node is the name of the node this store writes as, "" for the unnamed
// node.
func (s *Store) Node() string { return s.chain.node }

// opened makes the derived indexes whole, as every open does, and notes
// the audit log's head.
func (s *Store) opened() error {
	return s.b.update(func(r records) error {
		t := &Tx{r: r, chain: s.chain}
		if err := ensureKeyIndex(t); err != nil {
			return err
		}
		head, err := t.auditHead()
		s.written = head
		return err
	})
}

// Path is the bbolt file's path, "" on PostgreSQL.
func (s *Store) Path() string {
	if s.bolt == nil {
		return ""
	}
	return s.bolt.path
}

// Embedded reports whether the store is a bbolt file (Open), rather than
// a database signerd reaches over a connection.
func (s *Store) Embedded() bool { return s.bolt != nil }

// Probe checks that the database answers and takes writes, with a write
// transaction that writes nothing; its failures are those of Update. The
// embedded file has nothing to reach, and a transaction that writes
// nothing proves nothing about its disk: Probe is nil there.
func (s *Store) Probe() error {
	if s.Embedded() {
		return nil
	}
	return s.Update(func(*Tx) error { return nil })
}

// Close closes the file or the database's connections, releasing the
// node name first.
func (s *Store) Close() error {
	s.releaseNode()
	return s.b.close()
}

// Update runs fn in one write transaction, committed (and fsynced) only if
// fn returns nil. A failure to write it is ErrWrite; fn's own errors are
// returned as they are.
//
// A store found to have gone back behind what this process wrote (head.go)
// takes no write any more: every Update fails with ErrLogBehind (and
// ErrWrite).
func (s *Store) Update(fn func(*Tx) error) error {
	// One Update at a time, its head noted before the next begins: the
	// backends run one write at a time anyway, and the next then knows
	// the head it must find (head.go) without reading the log for it.
	s.updating.Lock()
	defer s.updating.Unlock()
	known, err := s.lastWritten()
	if err != nil {
		return err
	}
	var head auditHead
	err = s.b.update(func(r records) error {
		t := &Tx{r: r, chain: s.chain}
		if err := r.prefetch(&Prefetch{meta: s.writeMeta()}); err != nil {
			return err
		}
		if err := s.node.check(t); err != nil {
			return err
		}
		if err := t.checkHead(known); err != nil {
			return err
		}
		compromisedCurrent, err := t.CompromisedKeysCurrent()
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
		if err := noteKeyIndex(t); err != nil {
			return err
		}
		if err := noteCompromisedKeys(t, compromisedCurrent); err != nil {
			return err
		}
		head, err = t.auditHead()
		return err
	})
	s.noteWritten(head, err)
	return err
}

// View runs fn in a read-only snapshot. Keep fn short: on bbolt, while it
// runs, a write that must grow the memory map waits, and so do all later
// reads and writes; on PostgreSQL it holds a connection. Never wait on a
// client (write to a socket) inside fn; copy what is needed and write it
// afterwards.
func (s *Store) View(fn func(*Tx) error) error {
	return s.b.view(func(r records) error { return fn(&Tx{r: r, chain: s.chain}) })
}

// Tx is a transaction. Its methods must not be used after fn returns.
type Tx struct {
	r records
	// chain is the audit chain the audit methods read and Append writes;
	// foreign: another node's, read through Chain.
	chain   chain
	foreign bool
	// compromisedWhole: the compromised-keys index was made whole in
	// this transaction (NoteCompromisedKeysWhole).
	compromisedWhole bool
}

// LastSigningTime is the latest time stamped on anything the CA signed
// (certificate notBefore or CRL thisUpdate) or on a lifecycle change
// (revocation, hold, restore), zero if none.
func (t *Tx) LastSigningTime() (time.Time, error) {
	raw, err := t.r.get(tableMeta, t.chain.metaKey(keyClock))
	if err != nil || raw == nil {
		return time.Time{}, err
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
	return t.r.put(tableMeta, t.chain.metaKey(keyClock), raw)
}

// ResetSigningTime sets the last signing time to ts even if it is earlier:
// only for an operator's acknowledged clock reset.
func (t *Tx) ResetSigningTime(ts time.Time) error {
	raw, _ := ts.UTC().MarshalText()
	return t.r.put(tableMeta, t.chain.metaKey(keyClock), raw)
}

// get decodes the JSON record under key in table; what names it in
// errors.
func get[T any](t *Tx, table string, key []byte, what string) (*T, error) {
	raw, err := t.r.get(table, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("%s: decode: %w", what, err)
	}
	return v, nil
}

// Prefetch names the records a transaction is about to read. On
// PostgreSQL each read is a round trip to the server; a transaction that
// reads many records (a batch of requests) says which first, so they are
// read in one.
type Prefetch struct {
	// Requests are RA request ids (Request, InFlight).
	Requests []string
	// Serials are read in the serials and the certificates tables
	// (ReserveSerial, Serial, Certificate).
	Serials [][]byte
	// CompromisedKeys are key digests (KeyCompromised).
	CompromisedKeys [][]byte
	// KeySPKIs are DER SubjectPublicKeyInfos whose key index entries
	// CertificatesWithKey reads.
	KeySPKIs [][]byte
	// Statistics are counters Count raises (StatisticKey).
	Statistics [][]byte
	// OCSP are certificates whose OCSP records PutOCSPResponse,
	// MarkOCSPDue, ClearOCSPDue or OCSPResponse read: a batch of
	// responses, or of issued certificates, costs one round trip for them.
	OCSP []OCSPKey
	// meta are keys of the meta table: Update reads the ones every write
	// reads (the audit head, the index marks, the clock) ahead.
	meta [][]byte
}

// writeMeta are the meta records every write transaction reads: its
// chain's head, clock and last seal, the index marks and its node claim;
// and the CRL change log's sequence, which a revocation raises.
func (s *Store) writeMeta() [][]byte {
	keys := [][]byte{s.chain.metaKey(keyAuditHead), keyKeyIndexAtHead, keyCompromisedAtHead,
		s.chain.metaKey(keyClock), s.chain.metaKey(keyAuditLastSeal), keyCRLChangeSeq}
	if s.node != nil {
		keys = append(keys, nodeKey(s.chain.node))
	}
	return keys
}

// Prefetch reads ahead the records p names. It is a hint only: every read
// of t returns the same with or without it, and a record t wrote is read
// as written.
func (t *Tx) Prefetch(p Prefetch) error { return t.r.prefetch(&p) }
