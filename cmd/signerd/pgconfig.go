package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/store"
)

// maxPostgresTimeout bounds store.postgres.timeout: a transaction of the
// CA's is a few round trips, and health waits no longer than this to learn
// that the database does not answer.
const maxPostgresTimeout = 5 * time.Minute

// postgresCfg is store.postgres: the database that holds the store.
type postgresCfg struct {
	// DSN names the database (a libpq keyword/value string or a
	// postgres:// URL). It must not hold a password: the config file is
	// read by whoever reads signerd's configuration, and its digest is
	// audited.
	DSN string `yaml:"dsn"`
	// Timeout bounds each store transaction (store.PostgresOptions;
	// default, or 0: 10s; at least 1s).
	Timeout duration `yaml:"timeout"`
	// MaxConns is how many connections signerd's pool keeps at most
	// (default, or 0: 8), besides the one that marks the database in use.
	MaxConns int32 `yaml:"max_conns"`
	// NodeLease is how long this node's claim on its name lasts
	// unrenewed (store.PostgresOptions; default, or 0: 15s; at least 1s):
	// a process that finds the name claimed waits this long for a
	// renewal before it takes the name over.
	NodeLease duration `yaml:"node_lease"`

	// node is the config's node name.
	node string
	// where names the database for the log: host and database only.
	where struct{ host, database string }
}

func (p *postgresCfg) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: store.postgres: a mapping with dsn", n.Line)
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "dsn", "timeout", "max_conns", "node_lease":
		default:
			return fmt.Errorf("line %d: store.postgres: unknown key %q (dsn, timeout, max_conns, node_lease)", k.Line, k.Value)
		}
	}
	type plain postgresCfg
	return n.Decode((*plain)(p))
}

// options are the PostgreSQL store's open options.
func (p *postgresCfg) options() store.PostgresOptions {
	return store.PostgresOptions{Timeout: p.Timeout.Duration, MaxConns: p.MaxConns, Node: p.node, NodeLease: p.NodeLease.Duration}
}

// noPasswordHelp is what to use instead of a password in the DSN.
const noPasswordHelp = "give the password in a passfile (passfile=/etc/signerd/pgpass in the DSN, " +
	"or PGPASSFILE in the unit's environment; mode 0600, format host:port:dbname:user:password), " +
	"or use peer authentication over the server's Unix socket (host=/run/postgresql) or a client certificate " +
	"(sslcert=, sslkey=, sslmode=verify-full)"

func (p *postgresCfg) validate() error {
	if strings.TrimSpace(p.DSN) == "" {
		return errors.New("store.postgres.dsn is required (e.g. \"host=/run/postgresql dbname=signerd user=signerd\")")
	}
	// The DSN is never quoted in a message: a malformed one may hold a
	// secret where a password was meant to be left out.
	secret, err := store.PostgresDSNSecret(p.DSN)
	if err != nil {
		return fmt.Errorf("store.postgres.dsn (not shown): %w", err)
	}
	if secret != "" {
		return fmt.Errorf("store.postgres.dsn (not shown) holds a %s: a secret in the config file is read by whoever "+
			"reads the configuration and may be logged; %s", secret, noPasswordHelp)
	}
	hosts, database, err := store.PostgresTarget(p.DSN)
	if err != nil {
		return fmt.Errorf("store.postgres.dsn: %w", err)
	}
	p.where.host, p.where.database = strings.Join(hosts, ","), database
	switch d := p.Timeout.Duration; {
	case d < 0 || (d > 0 && d < time.Second):
		return fmt.Errorf("store.postgres.timeout %s: below 1s, a commit on a busy server would fail as if it were down", d)
	case d > maxPostgresTimeout:
		return fmt.Errorf("store.postgres.timeout %s: more than %s", d, maxPostgresTimeout)
	}
	if d := p.NodeLease.Duration; d < 0 || (d > 0 && d < time.Second) {
		return fmt.Errorf("store.postgres.node_lease %s: below 1s, a busy node would lose its name", d)
	}
	if p.MaxConns < 0 {
		return fmt.Errorf("store.postgres.max_conns %d: negative", p.MaxConns)
	}
	return nil
}
