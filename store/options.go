package store

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Bounds on what an operator may configure; Open itself takes any value
// that is not negative, so that tests can run a store on a short fuse.
const (
	// MaxInitialMmapSize bounds Options.InitialMmapSize: 64 GiB of address
	// space, far more than a CA's store needs mapped ahead.
	MaxInitialMmapSize = 64 << 30
	// MinPostgresTimeout and MaxPostgresTimeout bound
	// PostgresOptions.Timeout: below one second a commit on a busy
	// server fails as if it were down; a transaction of the CA's is a few
	// round trips, and health waits no longer than this to learn that the
	// database does not answer.
	MinPostgresTimeout = time.Second
	MaxPostgresTimeout = 5 * time.Minute
	// MinNodeLease bounds PostgresOptions.NodeLease: a shorter lease is
	// lost by a node that is only busy.
	MinNodeLease = time.Second
)

// OptionError is an option Validate refuses: Option is its field's name,
// Err says what is wrong with its value ("VALUE: why"), so that a caller
// can name the option in its own terms (a config file's key, a flag).
type OptionError struct {
	Option string
	Err    error
}

func (e *OptionError) Error() string { return e.Option + " " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

// Validate checks the options against what an operator may configure.
func (o Options) Validate() error {
	switch n := o.InitialMmapSize; {
	case n < 0:
		return &OptionError{"InitialMmapSize", fmt.Errorf("%d: negative", n)}
	case n > MaxInitialMmapSize:
		return &OptionError{"InitialMmapSize", fmt.Errorf("%d: more than %d", n, MaxInitialMmapSize)}
	}
	return nil
}

// Validate checks the options against what an operator may configure.
// Zero values stand for the defaults and pass.
func (o PostgresOptions) Validate() error {
	switch d := o.Timeout; {
	case d < 0 || (d > 0 && d < MinPostgresTimeout):
		return &OptionError{"Timeout", fmt.Errorf("%s: below %s, a commit on a busy server would fail as if it were down", d, MinPostgresTimeout)}
	case d > MaxPostgresTimeout:
		return &OptionError{"Timeout", fmt.Errorf("%s: more than %s", d, MaxPostgresTimeout)}
	}
	if d := o.NodeLease; d < 0 || (d > 0 && d < MinNodeLease) {
		return &OptionError{"NodeLease", fmt.Errorf("%s: below %s, a busy node would lose its name", d, MinNodeLease)}
	}
	if o.MaxConns < 0 {
		return &OptionError{"MaxConns", fmt.Errorf("%d: negative", o.MaxConns)}
	}
	if o.Node != "" {
		if err := ValidNodeName(o.Node); err != nil {
			return &OptionError{"Node", err}
		}
	}
	return nil
}

// PostgresDSN is a DSN parsed once: what OpenPostgresDSN connects with,
// and where that is, for log lines. It never shows the DSN itself.
type PostgresDSN struct {
	cfg *pgxpool.Config
}

// ParsePostgresDSN parses a libpq keyword/value DSN or a postgres:// URL.
// Its errors never quote the DSN. It does not refuse a secret in it: see
// PostgresDSNSecret.
func ParsePostgresDSN(dsn string) (*PostgresDSN, error) {
	cfg, err := parsePostgresDSN(dsn)
	if err != nil {
		return nil, err
	}
	return &PostgresDSN{cfg: cfg}, nil
}

// Hosts are the hosts the DSN connects to, each once, fallbacks included
// (a host is tried with and without TLS).
func (d *PostgresDSN) Hosts() []string {
	return pgHosts(d.cfg.ConnConfig, func(host string, _ uint16) string { return host })
}

// Database is the database the DSN names.
func (d *PostgresDSN) Database() string { return d.cfg.ConnConfig.Database }

// String is where the DSN connects, for messages: user, hosts with
// their ports, and database; never a password.
func (d *PostgresDSN) String() string { return pgWhere(d.cfg.ConnConfig) }
