package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// TableDigest describes one table's records: how many, and SHA-256 over
// them in key order, each record hashed as the length of its key (8 bytes,
// big-endian), the key, the length of its value and the value, so that no
// two different tables have the same digest.
type TableDigest struct {
	Table   string `json:"table"`
	Records int64  `json:"records"`
	SHA256  []byte `json:"sha256"`
}

// MigrationReport is what MigrateToPostgres copied. Every digest was
// computed from the file as it was read and again from the database as it
// reads the copy back, and the two were equal; the audit chain was
// verified on the copy, and its head is the file's.
type MigrationReport struct {
	From   string        `json:"from"`
	To     string        `json:"to"` // user@host:port/database, never a password
	Schema int           `json:"schema"`
	Tables []TableDigest `json:"tables"`
	// AuditHead and AuditHash are the log's head on both sides; LastSeal
	// is the last seal event's sequence number (0: none).
	AuditHead uint64 `json:"audit_head"`
	AuditHash []byte `json:"audit_hash"`
	LastSeal  uint64 `json:"last_seal"`
}

// Records is the number of records copied, every table together.
func (r *MigrationReport) Records() int64 {
	var n int64
	for _, t := range r.Tables {
		n += t.Records
	}
	return n
}

// ErrNotEmpty: the database MigrateToPostgres was given already holds
// records.
var ErrNotEmpty = errors.New("the database is not empty")

// MigrateToPostgres copies the bbolt store file at path into the
// PostgreSQL database dsn names, every record of every table byte for
// byte, and checks the copy. The file is opened read-only and never
// changed, so it stays what it was whatever happens to the copy.
//
// It refuses a file that a process has open (signerd holds its lock while
// it runs: stop it first), whose page structure is damaged, of another
// schema version, with buckets signerd does not know (their records would
// be left behind), or whose audit chain does not verify; a database that a
// signerd has open (the lock OpenPostgres takes, held here until the
// copy ends, so none opens it meanwhile), whose schema is not this
// version's (UpgradePostgres creates it), or that holds any record
// (ErrNotEmpty, naming the tables): a copy only ever goes into a new
// database.
//
// The copy is one database transaction: the records go in with COPY, a
// table at a time, streamed from one read transaction of the file, so
// memory does not grow with the store; then each table is read back
// through the same reads signerd makes and its digest compared with the
// file's, and the audit chain is verified on the copy and its head
// compared with the file's. Only then is the transaction committed: a
// failure anywhere, or an interruption (ctx), leaves the database as empty
// as it was.
func MigrateToPostgres(ctx context.Context, path, dsn string) (*MigrationReport, error) {
	db, err := openBoltForCopy(path)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	defer db.Close()
	report := &MigrationReport{From: path}
	err = db.View(func(tx *bolt.Tx) error {
		if err := readingPages(func() error { return checkFileForCopy(tx, report) }); err != nil {
			return err
		}
		return copyToPostgres(ctx, tx, dsn, report)
	})
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return report, nil
}

// readingPages runs fn, which reads the file's pages through bbolt, and
// makes a panic or a memory fault in it an error: as in Verify, bbolt
// trusts the pages it reads, and a damaged page the structure check missed
// must end the migration, not crash it.
func readingPages(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the file is damaged: reading its pages failed (%v)", p)
		}
	}()
	return fn()
}

// openBoltForCopy opens the store file read-only after checking its page
// structure, as Verify does, and refuses a file another process holds.
func openBoltForCopy(path string) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		return nil, errors.New("not a regular file")
	case fi.Size() == 0:
		return nil, errors.New("empty file, not a store")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errors.New("in use by another process: stop signerd first")
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	err = checkPages(f, fi.Size())
	f.Close()
	if err != nil {
		return nil, err
	}
	// bbolt's shared lock is held until Close: no signerd opens the file
	// while it is being copied.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, errors.New("in use by another process: stop signerd first")
	}
	return db, err
}

// checkFileForCopy refuses a file whose records would not make a store
// signerd opens on PostgreSQL as it would open the file, and notes the
// file's schema and audit head in report.
func checkFileForCopy(tx *bolt.Tx, report *MigrationReport) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return errors.New("not a signerd store (no meta bucket)")
	}
	schema, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil {
		return fmt.Errorf("unreadable schema version %q", meta.Get(keySchema))
	}
	if schema != SchemaVersion {
		return fmt.Errorf("schema version %d; this signerd copies version %d only (open the file once with a signerd of version %d first)",
			schema, SchemaVersion, SchemaVersion)
	}
	report.Schema = schema
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil && !addedBucket(name) {
			return fmt.Errorf("bucket %q is missing: the file was edited or damaged (signerctl store verify names what is wrong)", name)
		}
	}
	if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if !slices.Contains(tables, string(name)) {
			return fmt.Errorf("bucket %q is not one of signerd's: its records would be left behind", name)
		}
		return nil
	}); err != nil {
		return err
	}
	t := &Tx{r: boltRecords{tx}}
	if tx.Bucket(bucketKeys) == nil {
		if err := checkNoKeyIndex(t); err != nil {
			return err
		}
	} else if current, err := keyIndexCurrent(t); err != nil {
		return err
	} else if !current {
		// The database would rebuild it at open, reading every
		// certificate in the one transaction open has: past its timeout
		// on a large store. signerd rebuilds it in the file in moments.
		return errors.New(`the key index ("keys") is behind the audit log's head (an older signerd wrote the file since): ` +
			"open it once with signerd (which rebuilds the index), stop signerd, then migrate")
	}
	if err := t.VerifyAuditChain(); err != nil {
		return fmt.Errorf("the file's audit chain does not verify, so no copy of it would: %w (signerctl store verify names what is wrong)", err)
	}
	head, err := t.auditHead()
	if err != nil {
		return err
	}
	report.AuditHead, report.AuditHash = head.Seq, head.Hash
	return nil
}

// checkNoKeyIndex refuses a file without a key index whose mark says the
// index is current while a certificate has a key to index. The bucket is
// made on the first entry, so a store whose certificates have none lacks
// it rightly; otherwise it was deleted, and a copy of the mark would make
// an empty index current on the database (signerd, opening the file,
// disregards the mark and rebuilds the index).
func checkNoKeyIndex(t *Tx) error {
	current, err := keyIndexCurrent(t)
	if err != nil || !current {
		return err
	}
	errIndexed := errors.New("indexed")
	var serial []byte
	err = t.Certificates(func(c *Certificate) error {
		if _, ok := keyIndexEntry(c); ok {
			serial = c.Serial
			return errIndexed
		}
		return nil
	})
	switch {
	case errors.Is(err, errIndexed):
		return fmt.Errorf(`bucket "keys" is missing while the key index is recorded current and certificate %s has a key to index: `+
			"the file was edited; open it once with signerd (which rebuilds the index), stop signerd, then migrate", HexSerial(serial))
	case err != nil:
		return err
	}
	return nil
}

// copyToPostgres copies every table of tx into the database and checks the
// copy (see MigrateToPostgres), filling in report.
func copyToPostgres(ctx context.Context, tx *bolt.Tx, dsn string, report *MigrationReport) error {
	cfg, err := parsePostgresDSN(dsn)
	if err != nil {
		return err
	}
	// The backend's own way of marking the database in use: a signerd
	// that has it open makes this fail, and none opens it until the copy
	// ends.
	b := &pgBackend{connConfig: cfg.ConnConfig, where: pgWhere(cfg.ConnConfig), timeout: defaultPostgresTimeout}
	report.To = b.where
	// Reaching the database and finding it free is bounded as an open
	// is; the copy itself takes as long as the store is large.
	setup, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	holder, err := b.takeInUseLock(setup)
	if errors.Is(err, errPostgresInUse) {
		return fmt.Errorf("store postgres %s: the database is %w: stop it first", b.where, err)
	}
	if err != nil {
		return fmt.Errorf("store postgres %s: %w", b.where, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
		releaseInUseLock(rctx, holder.conn, false)
		cancel()
	}()
	conn := holder.conn
	if err := checkPostgresSchema(setup, conn); err != nil {
		return fmt.Errorf("store postgres %s: %w", b.where, err)
	}
	xid, err := beginCopy(setup, conn)
	if err != nil {
		return fmt.Errorf("store postgres %s: %w", b.where, err)
	}
	committed := false
	defer func() {
		if !committed {
			// Nothing is kept of a transaction that is not committed,
			// even if the rollback does not reach the server: it ends the
			// transaction when the connection closes.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultPostgresTimeout)
			conn.Exec(rctx, "ROLLBACK")
			cancel()
		}
	}()
	if err := copyTables(ctx, conn, tx, report); err != nil {
		return fmt.Errorf("store postgres %s: %w", b.where, err)
	}
	if err := checkCopy(ctx, conn, report); err != nil {
		return fmt.Errorf("store postgres %s: the copy was not kept: %w", b.where, err)
	}
	// The planner's statistics describe the empty tables until autovacuum
	// next analyzes them.
	if _, err := conn.Exec(ctx, "ANALYZE "+pgTableList()); err != nil {
		return fmt.Errorf("store postgres %s: analyze: %w", b.where, err)
	}
	tag, err := conn.Exec(ctx, "COMMIT")
	switch {
	case err == nil && tag.String() == "COMMIT":
		committed = true
		return nil
	case err == nil:
		return fmt.Errorf("store postgres %s: commit: the server answered %q; nothing was kept", b.where, tag.String())
	case pgStatementError(err):
		return fmt.Errorf("store postgres %s: commit: %w; nothing was kept", b.where, err)
	}
	// The connection failed while the commit was sent or answered: the
	// server knows whether it took it.
	committed = true // no rollback to send on a failed connection
	if err := b.commitOutcome(xid, err); err != nil {
		return fmt.Errorf("store postgres %s: %w", b.where, err)
	}
	return nil
}

// beginCopy starts the copy's transaction, holding the writers' lock, and
// refuses a database that holds records. It returns the transaction's id.
func beginCopy(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var xid int64
	var locked bool
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL READ COMMITTED"); err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT txid_current(), pg_try_advisory_xact_lock($1)", pgLockWriter).Scan(&xid, &locked); err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	if !locked {
		// Only a signerd whose in-use lock was lost still writes.
		return 0, fmt.Errorf("a signerd is writing to it: stop it first")
	}
	held, err := pgTablesHolding(ctx, conn)
	if err != nil {
		return 0, err
	}
	if len(held) > 0 {
		return 0, fmt.Errorf("%w (%s): a store is only migrated into a new database, holding signerd's schema and nothing else (create it, then signerctl store upgrade)",
			ErrNotEmpty, held)
	}
	return xid, nil
}

// pgTablesHolding names the tables that hold records and how many, "1000
// or more" past a thousand (counting every record of a large table would
// take long, to say only that it is not empty).
func pgTablesHolding(ctx context.Context, conn *pgx.Conn) (string, error) {
	const most = 1000
	var held []string
	for _, t := range tables {
		var n int
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM (SELECT 1 FROM %s LIMIT %d) AS s",
			pgTableIdentifier(t), most)).Scan(&n); err != nil {
			return "", fmt.Errorf("count the records of %s: %w", pgTableName(t), err)
		}
		switch {
		case n >= most:
			held = append(held, fmt.Sprintf("%s: %d or more records", pgTableName(t), most))
		case n == 1:
			held = append(held, pgTableName(t)+": 1 record")
		case n > 0:
			held = append(held, fmt.Sprintf("%s: %d records", pgTableName(t), n))
		}
	}
	return strings.Join(held, ", "), nil
}

// pgTableList is every table's SQL name, comma-separated.
func pgTableList() string {
	ids := make([]string, len(tables))
	for i, t := range tables {
		ids[i] = pgTableIdentifier(t)
	}
	return strings.Join(ids, ", ")
}

// copyTables sends every table of tx to the database with COPY, in key
// order, noting each table's digest as sent in report.
func copyTables(ctx context.Context, conn *pgx.Conn, tx *bolt.Tx, report *MigrationReport) error {
	for _, t := range tables {
		src := &boltCopySource{digest: newRecordDigest()}
		if b := tx.Bucket([]byte(t)); b != nil {
			src.cursor = b.Cursor()
		}
		n, err := conn.CopyFrom(ctx, pgx.Identifier{pgTableName(t)}, []string{"k", "v"}, src)
		if err == nil && n != src.digest.records {
			err = fmt.Errorf("the server took %d records of %d", n, src.digest.records)
		}
		if err != nil {
			return fmt.Errorf("copy table %s: %w", pgTableName(t), err)
		}
		report.Tables = append(report.Tables, src.digest.result(t))
	}
	return nil
}

// checkCopy reads every table back as signerd reads it, inside the copy's
// transaction, and compares it with what was sent; then it verifies the
// audit chain on the copy and compares its head with the file's.
func checkCopy(ctx context.Context, conn *pgx.Conn, report *MigrationReport) error {
	r := &pgRecords{ctx: ctx, conn: conn, kind: ErrUnavailable}
	for i, t := range tables {
		d := newRecordDigest()
		if err := r.scan(t, nil, nil, func(k, v []byte) error { d.add(k, v); return nil }); err != nil {
			return fmt.Errorf("read back table %s: %w", pgTableName(t), err)
		}
		got, sent := d.result(t), report.Tables[i]
		if got.Records != sent.Records || !bytes.Equal(got.SHA256, sent.SHA256) {
			return fmt.Errorf("table %s reads back as %d records with SHA-256 %x; the file's %d records have %x",
				pgTableName(t), got.Records, got.SHA256, sent.Records, sent.SHA256)
		}
	}
	tx := &Tx{r: r}
	if err := tx.VerifyAuditChain(); err != nil {
		return fmt.Errorf("the audit chain of the copy does not verify: %w", err)
	}
	head, err := tx.auditHead()
	if err != nil {
		return err
	}
	if head.Seq != report.AuditHead || !bytes.Equal(head.Hash, report.AuditHash) {
		return fmt.Errorf("the copy's audit head is event %d (%x), the file's event %d (%x)",
			head.Seq, head.Hash, report.AuditHead, report.AuditHash)
	}
	last, err := tx.LastSeal()
	if err != nil {
		return err
	}
	if last != nil {
		report.LastSeal = last.Seq
	}
	return nil
}

// boltCopySource gives COPY the records of a bucket in key order, straight
// from its cursor (nil: a bucket the file lacks, no records), and hashes
// each as it goes. The cursor's keys and values are valid for the read
// transaction, which lasts the whole copy.
type boltCopySource struct {
	cursor  *bolt.Cursor
	started bool
	k, v    []byte
	digest  *recordDigest
	err     error
}

// Next runs on a goroutine of pgx's own, where no panic would be
// recovered but for readingPages.
func (s *boltCopySource) Next() bool {
	if s.cursor == nil || s.err != nil {
		return false
	}
	s.err = readingPages(func() error {
		if s.started {
			s.k, s.v = s.cursor.Next()
		} else {
			s.k, s.v = s.cursor.First()
			s.started = true
		}
		return nil
	})
	if s.err != nil || s.k == nil {
		return false
	}
	if s.v == nil {
		// A cursor gives a nil value only for a nested bucket, which
		// signerd never makes.
		s.err = fmt.Errorf("key %x is a nested bucket: the file was not written by signerd", s.k)
		return false
	}
	s.digest.add(s.k, s.v)
	return true
}

func (s *boltCopySource) Values() ([]any, error) { return []any{s.k, s.v}, nil }

func (s *boltCopySource) Err() error { return s.err }

// recordDigest hashes records as TableDigest describes.
type recordDigest struct {
	h       hash.Hash
	records int64
}

func newRecordDigest() *recordDigest { return &recordDigest{h: sha256.New()} }

func (d *recordDigest) add(k, v []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(k)))
	d.h.Write(n[:])
	d.h.Write(k)
	binary.BigEndian.PutUint64(n[:], uint64(len(v)))
	d.h.Write(n[:])
	d.h.Write(v)
	d.records++
}

func (d *recordDigest) result(table string) TableDigest {
	return TableDigest{Table: table, Records: d.records, SHA256: d.h.Sum(nil)}
}
