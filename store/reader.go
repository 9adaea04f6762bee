package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ReaderOptions are how a Reader is opened.
type ReaderOptions struct {
	// Timeout bounds each read, and the open; zero means 2 s. A responder
	// answers a client that waits: a read that takes longer fails as
	// ErrUnavailable rather than hold the request.
	Timeout time.Duration
	// MaxConns is how many pooled connections the Reader keeps at most;
	// zero means 8. Each request holds one for a single query.
	MaxConns int32
}

const (
	defaultReaderTimeout  = 2 * time.Second
	defaultReaderMaxConns = 8
)

// Reader reads the pre-signed OCSP responses of a PostgreSQL store, for an
// OCSP responder: a process apart from signerd that holds no key and
// writes nothing. It takes neither the in-use lock nor the writers' lock,
// so several readers run beside the signerd nodes that write the store.
// Its sessions are read-only, and it reads the table ocsp_responses alone
// (pgSchemaV4 says what a role for it needs). It is safe for concurrent
// use.
type Reader struct {
	pool    *pgxpool.Pool
	where   string
	timeout time.Duration
}

// pgReadResponse is a response by its key: the table's primary key.
var pgReadResponse = "SELECT v FROM " + pgTableIdentifier(tableOCSPResponses) + " WHERE k = $1"

// OpenPostgresReader opens a Reader of the database dsn names. It refuses a
// database whose schema is not the one this code reads (older: a signerd
// upgrade is under way, or the responder is newer than the store; newer:
// the responder is older than signerd), and a role that may not read the
// responses, at open rather than at the first request.
func OpenPostgresReader(dsn string, o ReaderOptions) (*Reader, error) {
	if o.Timeout < 0 || o.MaxConns < 0 {
		return nil, fmt.Errorf("open store reader postgres: timeout %v and connections %d must not be negative", o.Timeout, o.MaxConns)
	}
	if o.Timeout == 0 {
		o.Timeout = defaultReaderTimeout
	}
	if o.MaxConns == 0 {
		o.MaxConns = defaultReaderMaxConns
	}
	d, err := ParsePostgresDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store reader postgres: %w", err)
	}
	cfg := d.cfg.Copy()
	cfg.MaxConns = o.MaxConns
	// What parsePostgresDSN names every session unless the DSN does: a
	// reader's are told apart from signerd's in pg_stat_activity.
	if cfg.ConnConfig.RuntimeParams["application_name"] == "signerd" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "signerd-reader"
	}
	// Nothing a reader sends can write, whatever the role may do.
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	r := &Reader{where: pgWhere(cfg.ConnConfig), timeout: o.Timeout}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	if r.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open store reader postgres %s: %w", r.where, err)
	}
	if err := r.check(ctx); err != nil {
		r.pool.Close()
		return nil, fmt.Errorf("open store reader postgres %s: %w", r.where, err)
	}
	return r, nil
}

// check refuses a database whose schema is not this code's, and a role
// that cannot read the responses.
func (r *Reader) check(ctx context.Context) error {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return classifyPostgres(err, ErrUnavailable, "connect")
	}
	defer conn.Release()
	if err := checkPostgresSchema(ctx, conn.Conn()); err != nil {
		return err
	}
	// Planned and checked for privileges, reading no row.
	rows, err := conn.Query(ctx, pgReadResponse+" AND false", []byte{0})
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", pgTableName(tableOCSPResponses), err)
	}
	return nil
}

// OCSPResponse returns the latest response recorded for the certificate,
// nil if there is none: one query by the table's primary key. A failure to
// reach the database is ErrUnavailable.
func (r *Reader) OCSPResponse(ctx context.Context, issuer string, serial []byte) (*OCSPResponse, error) {
	what := fmt.Sprintf("OCSP response of %s serial %s", issuer, HexSerial(serial))
	key, err := ocspResponseKey(issuer, serial)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var raw []byte
	err = r.pool.QueryRow(ctx, pgReadResponse, key).Scan(&raw)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && pgInfrastructureError(err) && ctx.Err() == nil {
		// A restarted server leaves every pooled connection broken: a
		// read, which changes nothing, is tried once more on a new one
		// rather than fail a request for each.
		r.pool.Reset()
		err = r.pool.QueryRow(ctx, pgReadResponse, key).Scan(&raw)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, classifyPostgres(err, ErrUnavailable, fmt.Sprintf("%s: store postgres %s", what, r.where))
	}
	resp, err := ocspResponseOf(issuer, serial, nonNil(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return resp, nil
}

// Close closes the Reader's connections, waiting for the reads under way.
func (r *Reader) Close() error {
	r.pool.Close()
	return nil
}
