package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// PostgresOptions are how a PostgreSQL store is opened.
type PostgresOptions struct {
	// Timeout bounds each transaction, from its first statement to its
	// commit (the wait for the previous writer of this process excluded);
	// zero means 10 s. A transaction that runs out is rolled back and
	// fails as if the server were unreachable.
	Timeout time.Duration
	// MaxConns is how many pooled connections the store keeps to the
	// server at most; zero means 8. One more connection is held for the
	// store's life: it marks the database in use (see openPostgresBackend).
	MaxConns int32
	// Node names this process's node when several share the database
	// (node.go); "" is the unnamed node, which has the database to
	// itself. NodeLease is how long the node's claim lasts unrenewed;
	// zero means DefaultNodeLease.
	Node      string
	NodeLease time.Duration
}

const (
	defaultPostgresTimeout  = 10 * time.Second
	defaultPostgresMaxConns = 8
	// pgMinServerVersion is PostgreSQL 15 (server_version_num), the
	// oldest release signerd is tested on.
	pgMinServerVersion = 150000
	// pgScanPage is how many records a scan reads per query: enough to
	// keep round trips few, few enough to keep memory bounded on a table
	// of millions of records.
	pgScanPage = 512
	// pgRangePage is scanRange's page: the ranges it reads are one CRL
	// shard's entries, up to hundreds of thousands.
	pgRangePage = 4096
	// pgUpgradeCommand is what an operator runs to create or migrate the
	// schema; open never does it on its own.
	pgUpgradeCommand = "signerctl store upgrade --dsn DSN"
	// pgInUseWait is how long open waits for another signerd (or an
	// upgrade) to release the database: as long as bbolt waits for its
	// file lock.
	pgInUseWait = time.Second
)

// Advisory lock keys ("signerd" and a number). The session lock on
// pgLockInUse is held by a signerd (or an upgrade) for as long as it has
// the database open, so a second one is refused at open, as the bbolt file
// lock refuses a second process. The transaction lock on pgLockWriter
// orders the write transactions of every process, which is what makes
// Tx's read-check-write logic correct even if two processes write. They
// must differ: the session lock is held by another connection of the same
// process, which the writers would otherwise wait for forever.
const (
	pgLockInUse  int64 = 0x7369676e65726401
	pgLockWriter int64 = 0x7369676e65726402
)

// pgBackend keeps the records in a PostgreSQL database, one table per
// entry of tables, through a pool of connections.
type pgBackend struct {
	pool       *pgxpool.Pool
	connConfig *pgx.ConnConfig // for connections outside the pool
	where      string          // the database, for messages: never the password
	timeout    time.Duration

	// writer is held across each write transaction: one writer at a time
	// in this process, as with bbolt (pgLockWriter orders processes). It
	// also guards holder.
	writer sync.Mutex
	holder *pgLockHolder // nil while the in-use lock is lost and not retaken
	closed bool
	// shared: the in-use lock is taken shared, as every named node takes
	// it, so that nodes run together while an upgrade (which takes it
	// alone) runs with none.
	shared bool
	// ending counts the read transactions whose end is still being sent
	// (view does not wait for it): tests wait on it to count round trips;
	// at close, pool.Close waits for those connections anyway.
	ending sync.WaitGroup

	// traffic counts what is sent to the server, so tests can check that
	// a transaction's cost does not grow with the records it writes.
	traffic pgTraffic
	// testHookBeforeCommit, if set, runs with the backend process id of
	// a write transaction's connection just before its commit is sent.
	testHookBeforeCommit func(pid uint32)
}

// pgLockHolder is the connection that holds the session lock on
// pgLockInUse, and the server process behind it: while that process runs,
// the lock is held.
type pgLockHolder struct {
	conn    *pgx.Conn
	pid     uint32
	started time.Time
}

// errReadOnlySession: a write transaction began read-only (the database
// or the server is set so, or it is a standby). Not an answer to a
// statement, so it is taken as the server's state, retried on a fresh
// connection and then failed as ErrWrite.
var errReadOnlySession = errors.New("the database takes no writes (transaction_read_only is on)")

// errPostgresInUse: another session holds pgLockInUse.
var errPostgresInUse = errors.New("in use by another signerd (or a schema upgrade)")

// openPostgresBackend connects to the database named by dsn. It refuses a
// server older than PostgreSQL 15, a database without signerd's schema or
// with another version of it (the schema is only ever created or migrated
// by UpgradePostgres), and a database that another signerd has open.
func openPostgresBackend(dsn string, o PostgresOptions) (*pgBackend, error) {
	d, err := ParsePostgresDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store postgres: %w", err)
	}
	return openPostgresBackendDSN(d, o)
}

// openPostgresBackendDSN is openPostgresBackend with the DSN parsed.
func openPostgresBackendDSN(d *PostgresDSN, o PostgresOptions) (*pgBackend, error) {
	if o.Timeout < 0 || o.MaxConns < 0 {
		return nil, fmt.Errorf("open store postgres: timeout %v and connections %d must not be negative", o.Timeout, o.MaxConns)
	}
	if o.Timeout == 0 {
		o.Timeout = defaultPostgresTimeout
	}
	if o.MaxConns == 0 {
		o.MaxConns = defaultPostgresMaxConns
	}
	// A copy: the settings below are this store's, not the DSN's.
	cfg := d.cfg.Copy()
	b := &pgBackend{where: pgWhere(cfg.ConnConfig), timeout: o.Timeout, shared: o.Node != ""}
	cfg.MaxConns = o.MaxConns
	// A transaction of this process never stands idle longer than its
	// timeout. One that does belongs to a process frozen mid-transaction
	// (SIGSTOP, a stalled machine), whose writer lock would stop every
	// other node: the server ends its session.
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(o.Timeout.Milliseconds(), 10)
	// No plan reads a table from end to end where its primary key's index
	// finds the rows. The server keeps, after five runs of a prepared
	// statement, a generic plan made for the table's statistics as they
	// were then, and replans only when they change (autovacuum's analyze,
	// a minute apart at best): a plan made while a new CA's tables were
	// nearly empty is a sequential scan, cheapest then, kept as they grow
	// (a batch's read of serials cost 0.49 ms a statement that way, 0.15 ms
	// planned for its arguments, by `signerctl bench -store postgres
	// -pg-statements`). Every statement of the store finds its rows by key,
	// so with sequential scans priced out its plan is the index whatever
	// the statistics, and the plans are kept rather than made anew for
	// each statement, which cost the server more CPU than the index reads
	// themselves. A statement with no index to use (clear's DELETE) still
	// scans the table; its price, set out of reach, must not make the
	// server compile it to machine code (jit_above_cost), which would cost
	// milliseconds for a statement of microseconds.
	cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
	cfg.ConnConfig.RuntimeParams["jit"] = "off"
	cfg.ConnConfig.Tracer = &b.traffic
	b.connConfig = cfg.ConnConfig.Copy()

	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	holder, err := b.takeInUseLock(ctx)
	if err != nil {
		return nil, fmt.Errorf("open store postgres %s: %w", b.where, err)
	}
	if err := checkPostgresSchema(ctx, holder.conn); err != nil {
		releaseInUseLock(ctx, holder.conn, b.shared)
		return nil, fmt.Errorf("open store postgres %s: %w", b.where, err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		releaseInUseLock(ctx, holder.conn, b.shared)
		return nil, fmt.Errorf("open store postgres %s: %w", b.where, err)
	}
	b.pool, b.holder = pool, holder
	return b, nil
}

// takeInUseLock connects outside the pool, checks the server's version
// and takes the session lock that marks the database in use. It waits up
// to pgInUseWait for the lock, as bbolt waits for its file lock: the
// server releases the lock of a process that just exited only once it
// has noticed.
func (b *pgBackend) takeInUseLock(ctx context.Context) (*pgLockHolder, error) {
	conn, err := pgx.ConnectConfig(ctx, b.connConfig)
	if err != nil {
		return nil, err
	}
	h := &pgLockHolder{conn: conn}
	var version int
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, pg_backend_pid(),
		(SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid()))`).Scan(&version, &h.pid, &h.started)
	if err == nil && version < pgMinServerVersion {
		err = fmt.Errorf("PostgreSQL server version %d; signerd needs %d or newer", version, pgMinServerVersion)
	}
	for deadline := time.Now().Add(pgInUseWait); err == nil; {
		var locked bool
		take := "SELECT pg_try_advisory_lock($1)"
		if b.shared {
			take = "SELECT pg_try_advisory_lock_shared($1)"
		}
		if err = conn.QueryRow(ctx, take, pgLockInUse).Scan(&locked); err == nil && locked {
			return h, nil
		}
		if err == nil && time.Now().After(deadline) {
			err = errPostgresInUse
		}
		if err == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	conn.Close(ctx)
	return nil, err
}

// releaseInUseLock ends h's session. The lock is released first, at once:
// a session's end releases it too, but only once the server has noticed,
// and the next signerd (or an upgrade) may already be asking for it.
func releaseInUseLock(ctx context.Context, conn *pgx.Conn, shared bool) error {
	release := "SELECT pg_advisory_unlock($1)"
	if shared {
		release = "SELECT pg_advisory_unlock_shared($1)"
	}
	_, uerr := conn.Exec(ctx, release, pgLockInUse)
	if err := conn.Close(ctx); err != nil {
		return err
	}
	return uerr
}

// retakeInUseLock replaces a holder whose server process has ended (a
// restarted server, a terminated session). The caller holds b.writer.
func (b *pgBackend) retakeInUseLock(ctx context.Context) error {
	if b.holder != nil {
		b.holder.conn.Close(ctx)
		b.holder = nil
	}
	h, err := b.takeInUseLock(ctx)
	if err != nil {
		return err
	}
	// While the lock was not held, an upgrade may have changed the
	// schema under this process: it is checked again, as at open.
	if err := checkPostgresSchema(ctx, h.conn); err != nil {
		releaseInUseLock(ctx, h.conn, b.shared)
		return err
	}
	b.holder = h
	return nil
}

func (b *pgBackend) close() error {
	b.writer.Lock()
	defer b.writer.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	// Close waits for the connections in use to come back.
	b.pool.Close()
	if b.holder != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		if err := releaseInUseLock(ctx, b.holder.conn, b.shared); err != nil {
			return fmt.Errorf("close store postgres %s: %w", b.where, err)
		}
	}
	return nil
}

// update runs fn in a READ COMMITTED transaction holding pgLockWriter.
// fn's writes are kept in memory and sent at commit, all in one round trip
// together with the commit, so a batch costs the same few round trips
// whatever the number of records it writes. The transaction begins with
// fn's first request to the server, in the same round trip (see begin).
func (b *pgBackend) update(fn func(records) error) error {
	b.writer.Lock()
	defer b.writer.Unlock()
	if b.closed {
		return fmt.Errorf("%w: store postgres %s is closed", ErrWrite, b.where)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	r := &pgRecords{ctx: ctx, b: b, write: true, unbegun: true, kind: ErrWrite, pending: map[string]map[string]pgWrite{}}
	// A connection whose transaction did not end cleanly is neither idle
	// nor healthy: Release closes it rather than pool it.
	defer r.releaseConn()
	err := fn(r)
	if r.beginErr != nil {
		// As if the transaction had failed before fn ran: whatever fn made
		// of the error, it is the server's state.
		r.rollback()
		return r.beginErr
	}
	if err != nil {
		r.rollback()
		return err
	}
	if r.failed != nil {
		r.rollback()
		return r.failed
	}
	if r.unbegun {
		// fn sent nothing: the transaction begins alone, so that no write
		// is sent before the in-use lock is known to be held.
		if err := r.beginAlone(); err != nil {
			r.rollback()
			return err
		}
	}
	if b.testHookBeforeCommit != nil {
		b.testHookBeforeCommit(r.conn.PgConn().PID())
	}
	err = r.commit()
	if err == nil {
		return nil
	}
	if pgStatementError(err) {
		r.rollback()
		return classifyPostgres(err, ErrWrite, "commit")
	}
	return b.commitOutcome(r.xid, err)
}

// begin sends batch as r's first request, after the statements that begin
// its transaction, in one round trip: for a write, BEGIN, the writer lock,
// the transaction's id and whether the in-use lock is still held; for a
// read, BEGIN. It returns the results of batch's statements. A first
// failure to reach the server is tried once more after emptying the pool:
// a restarted server leaves every pooled connection broken, and no
// transaction should fail for a stale connection when a new one would do.
// Nothing of batch has then been done: the transaction had not begun.
func (b *pgBackend) begin(r *pgRecords, batch *pgx.Batch) (pgx.BatchResults, error) {
	kind, what := ErrUnavailable, "begin read transaction"
	if r.write {
		kind, what = ErrWrite, "begin transaction"
	}
	for attempt := 0; ; attempt++ {
		br, held, err := b.tryBegin(r, batch)
		if err != nil {
			if attempt == 0 && pgInfrastructureError(err) && r.ctx.Err() == nil {
				b.pool.Reset()
				continue
			}
			return nil, classifyPostgres(err, kind, what)
		}
		r.unbegun = false
		if !held {
			// The caller holds b.writer, as retakeInUseLock wants.
			if err := b.retakeInUseLock(r.ctx); err != nil {
				br.Close()
				if errors.Is(err, errPostgresInUse) {
					return nil, fmt.Errorf("%w: store postgres %s: the connection marking it in use was lost, and the database is now %w", ErrWrite, b.where, err)
				}
				return nil, classifyPostgres(err, ErrWrite, "retake the in-use lock")
			}
		}
		return br, nil
	}
}

func (b *pgBackend) tryBegin(r *pgRecords, batch *pgx.Batch) (br pgx.BatchResults, held bool, err error) {
	if r.pconn == nil {
		conn, err := b.pool.Acquire(r.ctx)
		if err != nil {
			return nil, false, err
		}
		r.pconn, r.conn = conn, conn.Conn()
	}
	first := &pgx.Batch{}
	if r.write {
		var pid uint32
		started := time.Time{}
		if b.holder != nil {
			pid, started = b.holder.pid, b.holder.started
		}
		first.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
		first.Queue("SELECT pg_advisory_xact_lock($1)", pgLockWriter)
		first.Queue(`SELECT txid_current(), EXISTS (SELECT 1 FROM pg_stat_get_activity($1) WHERE backend_start = $2),
		current_setting('transaction_read_only') = 'on'`, int64(pid), started)
	} else {
		first.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	}
	for _, q := range batch.QueuedQueries {
		// Queued afresh: a statement queued once remembers the connection
		// it was prepared on, and a retry is on another.
		first.Queue(q.SQL, q.Arguments...)
	}
	br = r.conn.SendBatch(r.ctx, first)
	_, err = br.Exec()
	held = true
	var readOnly bool
	if r.write {
		if err == nil {
			_, err = br.Exec()
		}
		if err == nil {
			err = br.QueryRow().Scan(&r.xid, &held, &readOnly)
		}
	}
	if err == nil && readOnly {
		// txid_current works in a read-only transaction, so a probe would
		// pass while every write fails. A session that began read-only
		// (default_transaction_read_only) stays so whatever the database
		// is set to later: it is closed, so the next one finds out afresh.
		br.Close()
		r.conn.Close(r.ctx)
		err = errReadOnlySession
	}
	if err != nil {
		br.Close()
		r.releaseConn()
		return nil, false, err
	}
	return br, held, nil
}

// commitOutcome reports a commit whose answer was lost (the connection
// failed, or the transaction's deadline cancelled the wait) as ErrWrite,
// saying what the server, asked on a new connection with txid_status,
// knows of transaction xid. Even "committed" is not success: a commit
// interrupted while the server waited for a synchronous standby is kept
// on the primary alone ("committed locally, might not be replicated"),
// and one acknowledged now could be lost at a failover. Nothing is lost
// by the refusal either: the engine's retries find what was recorded (a
// request id returns its certificate; a reserved serial left signing is
// burned by the next batch), and a serial once written is never reused.
func (b *pgBackend) commitOutcome(xid int64, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	last := cause
	for {
		status, err := b.transactionStatus(ctx, xid)
		switch {
		case err == nil && status == "committed":
			return fmt.Errorf("%w: commit of transaction %d not confirmed (%v): the server holds it, but a synchronous standby may not; a retry finds it",
				ErrWrite, xid, cause)
		case err == nil && (status == "aborted" || status == ""):
			return fmt.Errorf("%w: commit: %w", ErrWrite, cause)
		case pgFutureTransaction(err):
			// The server now answering never assigned xid: a standby
			// promoted after the commit was sent, which the commit never
			// reached. That answer is final, so the writer lock held here
			// is not kept until the deadline, holding up the writes the
			// new primary would take.
			return fmt.Errorf("%w: commit of transaction %d (%v) never reached the server now answering, a standby promoted since: nothing of it is there",
				ErrWrite, xid, cause)
		case err == nil:
			last = fmt.Errorf("transaction %s", status)
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: commit of transaction %d: outcome unknown (the connection failed: %v; asking the server: %v)",
				ErrWrite, xid, cause, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pgFutureTransaction reports whether err is txid_status's refusal of a
// transaction id the server has not assigned yet (invalid_parameter_value,
// "transaction ID … is in the future").
func pgFutureTransaction(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "22023"
}

// transactionStatus is txid_status(xid), "" for NULL, on a new connection.
func (b *pgBackend) transactionStatus(ctx context.Context, xid int64) (string, error) {
	conn, err := pgx.ConnectConfig(ctx, b.connConfig)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var status *string
	if err := conn.QueryRow(ctx, "SELECT txid_status($1)", xid).Scan(&status); err != nil {
		return "", err
	}
	if status == nil {
		return "", nil
	}
	return *status, nil
}

// view runs fn in a REPEATABLE READ READ ONLY transaction: every query in
// it, every page of every scan, reads the same snapshot. The transaction
// begins with fn's first request to the server (see begin), and view
// returns without waiting for its end: what fn read is good whether or
// not the end reaches the server, and a connection left in the
// transaction is closed on Release.
func (b *pgBackend) view(fn func(records) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	r := &pgRecords{ctx: ctx, b: b, unbegun: true, kind: ErrUnavailable}
	err := fn(r)
	if r.beginErr != nil {
		err = r.beginErr
	}
	if r.unbegun {
		r.releaseConn()
		cancel()
		return err
	}
	b.ending.Add(1)
	go func() {
		defer b.ending.Done()
		defer cancel()
		r.rollback()
		r.releaseConn()
	}()
	return err
}

// pgWrite is a write kept until it is sent: a value, or a deletion.
type pgWrite struct {
	value   []byte
	deleted bool
}

// pgRecords is one transaction on one connection. In a write transaction,
// puts and deletes are kept in pending (table, then key) until commit, or
// until a scan of their table needs them on the server.
type pgRecords struct {
	ctx context.Context
	b   *pgBackend
	// conn is the transaction's connection. For update and view it is
	// pconn's, taken from the pool at the transaction's first request,
	// and unbegun until then (see begin); beginErr is why it could not
	// begin. Records made on a connection already in a transaction
	// (migrate, verify) have begun.
	pconn    *pgxpool.Conn
	conn     *pgx.Conn
	write    bool
	unbegun  bool
	beginErr error
	xid      int64 // the write transaction's id, once begun
	// kind is what a failure to reach the server is: ErrWrite in a write
	// transaction, ErrUnavailable in a read one.
	kind    error
	pending map[string]map[string]pgWrite // nil in a read transaction
	// failed is the first error that left the server's transaction
	// unusable: it cannot commit even if fn ignored the error.
	failed error
	// read holds what prefetch read (table, then key; a nil value: no
	// record), keyScans the key index records under each prefix prefetch
	// read. Both hold what the server had before this transaction's pending
	// writes: a get or scan looks at pending first, and once a table's
	// pending writes are sent (or the table cleared) what was read of it
	// may be older than what the server holds, so it is forgotten.
	read     map[string]map[string][]byte
	keyScans map[string][][2][]byte
	// deferred is what prefetch was asked for and has not yet sent.
	deferred *Prefetch
}

// send sends batch on the transaction's connection in one round trip,
// beginning the transaction first if it has not begun. Its error is the
// beginning's, already said; a statement's comes from the results.
func (r *pgRecords) send(batch *pgx.Batch) (pgx.BatchResults, error) {
	if !r.unbegun {
		return r.conn.SendBatch(r.ctx, batch), nil
	}
	if r.beginErr != nil {
		return nil, r.beginErr
	}
	br, err := r.b.begin(r, batch)
	if err != nil {
		r.beginErr = err
		if r.failed == nil {
			r.failed = err
		}
		return nil, err
	}
	return br, nil
}

// beginAlone begins the transaction with nothing else.
func (r *pgRecords) beginAlone() error {
	br, err := r.send(&pgx.Batch{})
	if err != nil {
		return err
	}
	return br.Close()
}

// releaseConn gives the connection back to the pool.
func (r *pgRecords) releaseConn() {
	if r.pconn != nil {
		r.pconn.Release()
		r.pconn, r.conn = nil, nil
	}
}

func (r *pgRecords) fail(err error, what string) error {
	err = classifyPostgres(err, r.kind, what)
	if r.failed == nil {
		r.failed = err
	}
	return err
}

func (r *pgRecords) writable(table, what string) error {
	if r.pending == nil {
		return fmt.Errorf("%s %s: read-only transaction", what, table)
	}
	return nil
}

func (r *pgRecords) get(table string, key []byte) ([]byte, error) {
	sql, err := pgStatementsOf(table)
	if err != nil {
		return nil, err
	}
	if w, ok := r.pending[table][string(key)]; ok {
		if w.deleted {
			return nil, nil
		}
		return w.value, nil
	}
	if err := r.flushPrefetch(); err != nil {
		return nil, err
	}
	if v, ok := r.read[table][string(key)]; ok {
		return v, nil
	}
	var v []byte
	if !r.unbegun {
		err = r.conn.QueryRow(r.ctx, sql.get, key).Scan(&v)
	} else {
		batch := &pgx.Batch{}
		batch.Queue(sql.get, key)
		br, serr := r.send(batch)
		if serr != nil {
			return nil, serr
		}
		err = br.QueryRow().Scan(&v)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, r.fail(err, fmt.Sprintf("get %s %x", table, key))
	}
	if v == nil {
		// The column is NOT NULL: nil here could only be an empty value,
		// which must not read as none.
		v = []byte{}
	}
	return v, nil
}

func (r *pgRecords) put(table string, key, value []byte) error {
	if _, err := pgStatementsOf(table); err != nil {
		return err
	}
	if len(key) == 0 {
		// As bbolt refuses one: no record has an empty key, and the
		// file must be able to hold whatever the database does.
		return fmt.Errorf("put into %s: empty key", table)
	}
	if err := r.writable(table, "put"); err != nil {
		return err
	}
	r.buffer(table)[string(key)] = pgWrite{value: append([]byte{}, value...)}
	return nil
}

func (r *pgRecords) delete(table string, key []byte) error {
	if _, err := pgStatementsOf(table); err != nil {
		return err
	}
	if err := r.writable(table, "delete"); err != nil {
		return err
	}
	r.buffer(table)[string(key)] = pgWrite{deleted: true}
	return nil
}

func (r *pgRecords) buffer(table string) map[string]pgWrite {
	m := r.pending[table]
	if m == nil {
		m = map[string]pgWrite{}
		r.pending[table] = m
	}
	return m
}

func (r *pgRecords) clear(table string) error {
	sql, err := pgStatementsOf(table)
	if err != nil {
		return err
	}
	if err := r.writable(table, "clear"); err != nil {
		return err
	}
	// What was read ahead of other tables stays good; of this one it is
	// forgotten below.
	if err := r.flushPrefetch(); err != nil {
		return err
	}
	delete(r.pending, table)
	r.forgetRead(table)
	batch := &pgx.Batch{}
	batch.Queue(sql.clear)
	br, err := r.send(batch)
	if err != nil {
		return err
	}
	_, err = br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return r.fail(err, "clear "+table)
	}
	return nil
}

// scan reads a page of records at a time (keyset pagination: each page
// starts after the last key of the one before), and calls fn only once
// the page is read and its rows are closed, so that fn may run queries of
// its own on the same connection.
func (r *pgRecords) scan(table string, from, prefix []byte, fn func(key, value []byte) error) error {
	sql, err := pgStatementsOf(table)
	if err != nil {
		return err
	}
	lo := []byte{} // not nil: nil is sent as NULL, and k >= NULL is never true
	if bytesGreater(prefix, lo) {
		lo = prefix
	}
	if bytesGreater(from, lo) {
		lo = from
	}
	hi := prefixEnd(prefix)
	if table == tableKeys && r.deferred != nil {
		// It may read the key index records this scan wants.
		if err := r.flushPrefetch(); err != nil {
			return err
		}
	}
	if recs, ok := r.keyScans[string(prefix)]; ok && table == tableKeys && from == nil && !r.pendingUnder(table, prefix) {
		for _, rec := range recs {
			if err := fn(rec[0], rec[1]); err != nil {
				return err
			}
		}
		return nil
	}
	return r.scanPages(table, sql.scanBefore, pgScanPage, lo, hi, fn)
}

// scanRange reads pages as scan does, by a statement whose plan does not
// rest on the table's statistics: a range's rows are read in key order
// from lo, a page's worth, and those past hi dropped. Asked for lo ≤ k <
// hi directly, a server whose statistics are behind the table (bulk
// revocations autovacuum has not analyzed yet: 100,000 entries read 367)
// plans a bitmap scan of the whole rest of the range and a sort for each
// page, and the scan of one shard grows with the square of its entries;
// this costs at most a page of rows read past hi, on the server.
func (r *pgRecords) scanRange(table string, lo, hi []byte, fn func(key, value []byte) error) error {
	sql, err := pgStatementsOf(table)
	if err != nil {
		return err
	}
	if lo == nil {
		lo = []byte{} // as in scan
	}
	return r.scanPages(table, sql.scanRange, pgRangePage, lo, hi, fn)
}

// scanRangeLimit is scanRange whose first page is limit records when that
// is less than a page.
func (r *pgRecords) scanRangeLimit(table string, lo, hi []byte, limit int, fn func(key, value []byte) error) error {
	sql, err := pgStatementsOf(table)
	if err != nil {
		return err
	}
	if lo == nil {
		lo = []byte{} // as in scan
	}
	first := pgRangePage
	if limit > 0 && limit < first {
		first = limit
	}
	return r.scanPagesFrom(table, sql.scanRange, first, pgRangePage, lo, hi, fn)
}

// scanPages calls fn for the records of table from lo and before hi (nil:
// to the end), a page at a time; bounded is the statement that reads a
// page before hi.
func (r *pgRecords) scanPages(table string, bounded string, size int, lo, hi []byte, fn func(key, value []byte) error) error {
	return r.scanPagesFrom(table, bounded, size, size, lo, hi, fn)
}

// scanPagesFrom is scanPages whose first page is of first records.
func (r *pgRecords) scanPagesFrom(table string, bounded string, first, size int, lo, hi []byte, fn func(key, value []byte) error) error {
	sql := pgStatements[table]
	for n := first; ; n = size {
		page, err := r.page(table, sql, bounded, n, lo, hi)
		if err != nil {
			return err
		}
		for _, rec := range page {
			if err := fn(rec[0], rec[1]); err != nil {
				return err
			}
		}
		if len(page) < n {
			return nil
		}
		// The least key after last is last with a zero byte appended.
		last := page[len(page)-1][0]
		lo = append(last[:len(last):len(last)], 0)
	}
}

// page reads up to pgScanPage records of table from lo (and before hi
// unless nil), after sending the table's pending writes in the same round
// trip so the page reflects them.
func (r *pgRecords) page(table string, sql *pgTableStatements, bounded string, size int, lo, hi []byte) ([][2][]byte, error) {
	batch := &pgx.Batch{}
	r.queuePending(batch, table)
	flushes := batch.Len()
	readAhead := r.queuePrefetch(batch)
	if hi == nil {
		batch.Queue(sql.scan, lo, size)
	} else {
		batch.Queue(bounded, lo, hi, size)
	}
	what := fmt.Sprintf("scan %s from %x", table, lo)
	br, err := r.send(batch)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	for range flushes {
		if _, err := br.Exec(); err != nil {
			return nil, r.fail(err, "write "+table)
		}
	}
	if readAhead != nil {
		if err := readAhead(br); err != nil {
			return nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, r.fail(err, what)
	}
	var page [][2][]byte
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, r.fail(err, what)
		}
		if v == nil {
			v = []byte{} // as in get
		}
		page = append(page, [2][]byte{k, v})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, r.fail(err, what)
	}
	if err := br.Close(); err != nil {
		return nil, r.fail(err, what)
	}
	return page, nil
}

// queuePending adds to batch the statements that write table's pending
// records, at most two whatever their number, and forgets them.
func (r *pgRecords) queuePending(batch *pgx.Batch, table string) {
	w := r.pending[table]
	if len(w) == 0 {
		return
	}
	sql := pgStatements[table]
	var keys, values, newKeys, newValues, deleted [][]byte
	for k, v := range w {
		switch {
		case v.deleted:
			deleted = append(deleted, []byte(k))
		case r.knownAbsent(table, k):
			newKeys, newValues = append(newKeys, []byte(k)), append(newValues, v.value)
		default:
			keys, values = append(keys, []byte(k)), append(values, v.value)
		}
	}
	if len(newKeys) > 0 {
		batch.Queue(sql.insert, newKeys, newValues)
	}
	if len(keys) > 0 {
		batch.Queue(sql.upsert, keys, values)
	}
	if len(deleted) > 0 {
		batch.Queue(sql.delete, deleted)
	}
	delete(r.pending, table)
	r.forgetRead(table)
}

// knownAbsent tells whether this write transaction read that table has no
// record under key: its write is then a plain insert, which costs the
// server less than an upsert (no search of the index for a conflict
// before the insert's own, no speculative insertion to confirm). What was
// read is still so at commit: every write to these tables is made under
// pgLockWriter, which this transaction took before reading (insertNew's
// table, written without it, is never taken as known). Were it not, the
// insert would fail on the primary key and the transaction with it,
// never overwrite.
func (r *pgRecords) knownAbsent(table, key string) bool {
	if !r.write || table == tableRAReplay {
		return false
	}
	if v, read := r.read[table][key]; read {
		return v == nil
	}
	if table != tableKeys {
		return false
	}
	for lo, recs := range r.keyScans {
		if !strings.HasPrefix(key, lo) {
			continue
		}
		for _, rec := range recs {
			if string(rec[0]) == key {
				return false
			}
		}
		return true
	}
	return false
}

// forgetRead drops what prefetch read of table: its pending writes are
// being sent, or it is being cleared, and the server's records are no
// longer what was read.
func (r *pgRecords) forgetRead(table string) {
	delete(r.read, table)
	if table == tableKeys {
		r.keyScans = nil
	}
}

// pendingUnder tells whether a pending write of table has a key starting
// with prefix: a scan under it must then go to the server, which sees it
// once sent.
func (r *pgRecords) pendingUnder(table string, prefix []byte) bool {
	for k := range r.pending[table] {
		if strings.HasPrefix(k, string(prefix)) {
			return true
		}
	}
	return false
}

// pgPointRead is one table's keys that prefetch reads.
type pgPointRead struct {
	table string
	keys  [][]byte
}

// prefetch reads ahead every record p names, in one round trip with the
// transaction's next request to the server: the request a read of these
// records will make, or a scan's page (a stage reads ahead, then scans
// what is being signed), which thus costs no round trip of its own. See
// queuePrefetch for what is read.
func (r *pgRecords) prefetch(p *Prefetch) error {
	if r.deferred == nil {
		r.deferred = &Prefetch{}
	}
	d := r.deferred
	d.Requests = append(d.Requests, p.Requests...)
	d.Serials = append(d.Serials, p.Serials...)
	d.CompromisedKeys = append(d.CompromisedKeys, p.CompromisedKeys...)
	d.KeySPKIs = append(d.KeySPKIs, p.KeySPKIs...)
	d.Statistics = append(d.Statistics, p.Statistics...)
	d.OCSP = append(d.OCSP, p.OCSP...)
	d.meta = append(d.meta, p.meta...)
	return nil
}

// flushPrefetch sends what prefetch deferred, alone.
func (r *pgRecords) flushPrefetch() error {
	batch := &pgx.Batch{}
	readAhead := r.queuePrefetch(batch)
	if readAhead == nil {
		return nil
	}
	br, err := r.send(batch)
	if err != nil {
		return err
	}
	defer br.Close()
	if err := readAhead(br); err != nil {
		return err
	}
	if err := br.Close(); err != nil {
		return r.fail(err, "prefetch")
	}
	return nil
}

// queuePrefetch adds to batch the statements that read what prefetch
// deferred, and returns what reads their answers, next in the batch's
// results (nil if there is nothing to read): for each table, the keys
// named that are neither pending nor read already; and the key index
// records under each key's prefix. Keys it cannot parse are left to the
// reads that follow, which fail as they would have. Pending writes queued
// before it in batch are seen by its reads.
func (r *pgRecords) queuePrefetch(batch *pgx.Batch) func(pgx.BatchResults) error {
	p := r.deferred
	if p == nil {
		return nil
	}
	r.deferred = nil
	queued := batch.Len()
	var points []pgPointRead
	queue := func(table string, keys [][]byte) {
		var want [][]byte
		seen := map[string]bool{}
		for _, k := range keys {
			_, pending := r.pending[table][string(k)]
			_, read := r.read[table][string(k)]
			if pending || read || seen[string(k)] {
				continue
			}
			seen[string(k)] = true
			want = append(want, k)
		}
		if len(want) == 0 {
			return
		}
		batch.Queue(pgStatements[table].read, want)
		points = append(points, pgPointRead{table, want})
	}
	ids := make([][]byte, len(p.Requests))
	for i, id := range p.Requests {
		ids[i] = []byte(id)
	}
	queue(tableRequests, ids)
	queue(tableSerials, p.Serials)
	queue(tableCerts, p.Serials)
	queue(tableCompromisedKeys, p.CompromisedKeys)
	queue(tableStats, p.Statistics)
	queue(tableMeta, p.meta)
	if len(p.OCSP) > 0 {
		keys := make([][]byte, 0, len(p.OCSP))
		for _, o := range p.OCSP {
			// A key that cannot be made is left to the read that follows,
			// which fails naming it.
			if k, err := ocspResponseKey(o.Issuer, o.Serial); err == nil {
				keys = append(keys, k)
			}
		}
		queue(tableOCSPResponses, keys)
	}
	var los, his [][]byte
	seen := map[string]bool{}
	for _, spki := range p.KeySPKIs {
		s := cryptobyte.String(spki)
		var inner cryptobyte.String
		if !s.ReadASN1(&inner, casn1.SEQUENCE) || !s.Empty() {
			continue
		}
		key, ok := readPublicKey(inner)
		if !ok {
			continue
		}
		lo := keyIndexPrefix(key)
		if _, read := r.keyScans[string(lo)]; read || seen[string(lo)] {
			continue
		}
		seen[string(lo)] = true
		los, his = append(los, lo), append(his, prefixEnd(lo))
	}
	if len(los) > 0 {
		// One statement for every prefix: each range read in key order,
		// as scan reads it.
		batch.Queue(pgReadKeyPrefixes, los, his)
	}
	if batch.Len() == queued {
		return nil
	}
	return func(br pgx.BatchResults) error { return r.readPrefetched(br, points, los) }
}

// readPrefetched reads the answers to queuePrefetch's statements.
func (r *pgRecords) readPrefetched(br pgx.BatchResults, points []pgPointRead, los [][]byte) error {
	// Kept aside until every answer is in: a prefetch cut short must not
	// leave keys it did not read taken for absent.
	read := map[string]map[string][]byte{}
	keyScans := map[string][][2][]byte{}
	for _, pt := range points {
		m := map[string][]byte{}
		for _, k := range pt.keys {
			m[string(k)] = nil
		}
		err := r.prefetchRows(br, func(rows pgx.Rows) error {
			var k, v []byte
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			m[string(k)] = nonNil(v)
			return nil
		})
		if err != nil {
			return r.fail(err, "prefetch "+pt.table)
		}
		read[pt.table] = m
	}
	if len(los) > 0 {
		for _, lo := range los {
			keyScans[string(lo)] = nil
		}
		err := r.prefetchRows(br, func(rows pgx.Rows) error {
			var lo, k, v []byte
			if err := rows.Scan(&lo, &k, &v); err != nil {
				return err
			}
			keyScans[string(lo)] = append(keyScans[string(lo)], [2][]byte{k, nonNil(v)})
			return nil
		})
		if err != nil {
			return r.fail(err, "prefetch "+tableKeys)
		}
	}
	if r.read == nil {
		r.read = map[string]map[string][]byte{}
	}
	for table, m := range read {
		if r.read[table] == nil {
			r.read[table] = m
			continue
		}
		for k, v := range m {
			r.read[table][k] = v
		}
	}
	if r.keyScans == nil {
		r.keyScans = keyScans
	} else {
		for lo, recs := range keyScans {
			r.keyScans[lo] = recs
		}
	}
	return nil
}

// prefetchRows reads the rows of the batch's next statement.
func (r *pgRecords) prefetchRows(br pgx.BatchResults, row func(pgx.Rows) error) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return err
		}
	}
	rows.Close()
	return rows.Err()
}

// nonNil is v, or an empty value for nil: the column is NOT NULL, so nil
// could only be an empty value, which must not read as none.
func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// commit sends every pending write and the commit in one round trip.
func (r *pgRecords) commit() error {
	r.deferred = nil // nothing reads it any more
	batch := &pgx.Batch{}
	names := make([]string, 0, len(r.pending))
	for t := range r.pending {
		names = append(names, t)
	}
	// Tables in a fixed order: a commit's statements do not vary with the
	// order of a map.
	sort.Strings(names)
	for _, t := range names {
		r.queuePending(batch, t)
	}
	writes := batch.Len()
	batch.Queue("COMMIT")
	br := r.conn.SendBatch(r.ctx, batch)
	for range writes {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// COMMIT of a transaction that had failed answers ROLLBACK, no error.
	if tag.String() != "COMMIT" {
		return fmt.Errorf("commit: the server answered %q", tag.String())
	}
	return nil
}

// rollback ends the transaction without writing. If it cannot reach the
// server, the connection is left inside the transaction, and the pool
// closes it on release, which ends the transaction on the server.
func (r *pgRecords) rollback() {
	if !r.unbegun && r.conn != nil {
		r.conn.Exec(r.ctx, "ROLLBACK")
	}
}

// pgTableStatements are the statements for one table.
type pgTableStatements struct {
	get, read, scan, scanBefore, scanRange, insert, upsert, delete, clear string
}

// pgReadKeyPrefixes reads the key index records under each of the prefixes
// $1 (each ending before the same place in $2), each range in key order
// as scan reads it: one statement for every prefix.
var pgReadKeyPrefixes = `SELECT r.lo, t.k, t.v FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS r(lo, hi, n),
	LATERAL (SELECT k, v FROM ` + pgTableIdentifier(tableKeys) + ` WHERE k >= r.lo AND k < r.hi ORDER BY k) t
	ORDER BY r.n, t.k`

// pgStatements holds each table's statements, built once. A table's SQL
// name is its name with '-' written '_', always quoted: "keys" is a
// keyword.
var pgStatements = func() map[string]*pgTableStatements {
	m := make(map[string]*pgTableStatements, len(tables))
	for _, t := range tables {
		id := pgTableIdentifier(t)
		m[t] = &pgTableStatements{
			get:        "SELECT v FROM " + id + " WHERE k = $1",
			read:       "SELECT k, v FROM " + id + " WHERE k = ANY($1::bytea[])",
			scan:       "SELECT k, v FROM " + id + " WHERE k >= $1 ORDER BY k LIMIT $2",
			scanBefore: "SELECT k, v FROM " + id + " WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
			// A subquery with a LIMIT is planned on its own: as the read
			// of a page from lo, by the index in key order.
			scanRange: "SELECT k, v FROM (SELECT k, v FROM " + id + " WHERE k >= $1 ORDER BY k LIMIT $3) AS page WHERE k < $2 ORDER BY k",
			insert:    "INSERT INTO " + id + " (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
			upsert: "INSERT INTO " + id + " (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])" +
				" ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
			delete: "DELETE FROM " + id + " WHERE k = ANY($1::bytea[])",
			clear:  "DELETE FROM " + id,
		}
	}
	return m
}()

// pgTableIdentifier is table's quoted SQL name.
func pgTableIdentifier(table string) string {
	return pgx.Identifier{pgTableName(table)}.Sanitize()
}

// pgTableName is table's SQL name.
func pgTableName(table string) string { return strings.ReplaceAll(table, "-", "_") }

func pgStatementsOf(table string) (*pgTableStatements, error) {
	s, ok := pgStatements[table]
	if !ok {
		return nil, fmt.Errorf("no table %q", table)
	}
	return s, nil
}

// bytesGreater reports whether a sorts after b, bytewise.
func bytesGreater(a, b []byte) bool { return string(a) > string(b) }

// prefixEnd is the least key after every key that starts with prefix, nil
// if there is none (no prefix, or one of 0xff bytes only).
func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := append([]byte{}, prefix[:i+1]...)
			end[i]++
			return end
		}
	}
	return nil
}

// pgInfrastructureError reports whether err means the database could not
// be reached or could not take the transaction (the connection failed, the
// deadline passed, the server is shutting down, is a read-only standby,
// or is out of disk, memory or connections) rather than that a statement
// was wrong.
func pgInfrastructureError(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		// Not an answer from the server: the connection failed, or the
		// deadline passed.
		return true
	}
	if pe.Severity == "FATAL" || pe.Severity == "PANIC" {
		// The server ended the session.
		return true
	}
	switch pe.Code {
	case "57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
		"57014", "55P03", "25P03", // statement, lock and idle-in-transaction timeouts
		"25006": // read-only transaction: a standby
		return true
	}
	switch pe.Code[:min(2, len(pe.Code))] {
	case "08", // connection exception
		"53", // insufficient resources: disk full, out of memory, too many connections
		"58": // system error: I/O
		return true
	}
	return false
}

// pgStatementError reports whether err is the server's answer to a
// statement, after which the session goes on: the transaction is then
// known not to have committed.
func pgStatementError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	var ce *pgconn.ConnectError
	return !errors.As(err, &ce) && pe.Severity != "FATAL" && pe.Severity != "PANIC"
}

// classifyPostgres gives err context, and wraps kind (ErrWrite or
// ErrUnavailable) if the database could not be reached or could not take
// the transaction.
func classifyPostgres(err error, kind error, what string) error {
	if pgInfrastructureError(err) {
		return fmt.Errorf("%w: %s: %w", kind, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// parsePostgresDSN parses dsn without ever putting its password in an
// error: pgx's own message quotes the connection string, with passwords
// masked only where it can recognise them.
func parsePostgresDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err == nil {
		// So that an operator finds signerd's sessions (and the one that
		// holds the in-use lock) in pg_stat_activity and pg_locks.
		if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set {
			cfg.ConnConfig.RuntimeParams["application_name"] = "signerd"
		}
		return cfg, nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error quotes the whole URL; its cause does not.
		return nil, fmt.Errorf("invalid DSN (not shown): not a URL: %v", ue.Err)
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// "cannot parse `<DSN>`: <reason>": keep the reason only.
		msg := pe.Error()
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			return nil, fmt.Errorf("invalid DSN (not shown): %s", msg[i+3:])
		}
	}
	return nil, errors.New("invalid DSN (not shown)")
}

// pgWhere names the database for messages: user, every host with its
// port, and database, never the password. A DSN naming a primary and its
// standbys names each of them, in order: after a failover the server
// answering is not the first, and a message naming only that one would
// send an operator to the wrong machine. pgx lists a host once more for
// each TLS mode it tries (sslmode=prefer), so each host:port is named once.
func pgWhere(c *pgx.ConnConfig) string {
	hosts := pgHosts(c, func(host string, port uint16) string { return net.JoinHostPort(host, strconv.Itoa(int(port))) })
	return fmt.Sprintf("%s@%s/%s", c.User, strings.Join(hosts, ","), c.Database)
}

// pgHosts names each server c connects to once, as name makes it: pgx
// lists a host again as a fallback (with and without TLS).
func pgHosts(c *pgx.ConnConfig, name func(host string, port uint16) string) []string {
	hosts := []string{name(c.Host, c.Port)}
	for _, f := range c.Fallbacks {
		if h := name(f.Host, f.Port); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// pgTraffic counts what is sent to the server: requests (a query, or a
// batch of them, each one round trip) and statements.
type pgTraffic struct {
	requests, statements atomic.Int64
}

func (c *pgTraffic) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.requests.Add(1)
	c.statements.Add(1)
	return ctx
}

func (c *pgTraffic) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *pgTraffic) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	c.requests.Add(1)
	c.statements.Add(int64(data.Batch.Len()))
	return ctx
}

func (c *pgTraffic) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (c *pgTraffic) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
