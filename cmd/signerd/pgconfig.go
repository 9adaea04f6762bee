package main

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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

	// where names the database for the log: host and database only.
	where struct{ host, database string }
}

func (p *postgresCfg) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: store.postgres: a mapping with dsn", n.Line)
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "dsn", "timeout", "max_conns":
		default:
			return fmt.Errorf("line %d: store.postgres: unknown key %q (dsn, timeout, max_conns)", k.Line, k.Value)
		}
	}
	type plain postgresCfg
	return n.Decode((*plain)(p))
}

// options are the PostgreSQL store's open options.
func (p *postgresCfg) options() store.PostgresOptions {
	return store.PostgresOptions{Timeout: p.Timeout.Duration, MaxConns: p.MaxConns}
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
	secret, err := dsnSecret(p.DSN)
	if err != nil {
		return fmt.Errorf("store.postgres.dsn (not shown): %w", err)
	}
	if secret != "" {
		return fmt.Errorf("store.postgres.dsn (not shown) holds a %s: a secret in the config file is read by whoever "+
			"reads the configuration and may be logged; %s", secret, noPasswordHelp)
	}
	cfg, err := pgconn.ParseConfig(p.DSN)
	if err != nil {
		return fmt.Errorf("store.postgres.dsn (not shown): %s", parseReason(err))
	}
	// A host is tried with and without TLS (sslmode=prefer, allow): once
	// in the log.
	hosts := []string{cfg.Host}
	for _, f := range cfg.Fallbacks {
		if !slices.Contains(hosts, f.Host) {
			hosts = append(hosts, f.Host)
		}
	}
	p.where.host, p.where.database = strings.Join(hosts, ","), cfg.Database
	switch d := p.Timeout.Duration; {
	case d < 0 || (d > 0 && d < time.Second):
		return fmt.Errorf("store.postgres.timeout %s: below 1s, a commit on a busy server would fail as if it were down", d)
	case d > maxPostgresTimeout:
		return fmt.Errorf("store.postgres.timeout %s: more than %s", d, maxPostgresTimeout)
	}
	if p.MaxConns < 0 {
		return fmt.Errorf("store.postgres.max_conns %d: negative", p.MaxConns)
	}
	return nil
}

// parseReason is why pgconn refused a DSN, without the DSN it quotes.
func parseReason(err error) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			return msg[i+3:]
		}
		return "not a keyword/value DSN or postgres:// URL"
	}
	return msg
}

// dsnSecret names the secret a DSN holds ("password", "sslpassword"),
// "" if none. It reads the DSN as libpq and pgx do: a postgres:// or
// postgresql:// URL (a password in its user information, or either as a
// query parameter), otherwise keyword = value pairs, a value quoted with
// single quotes or not, backslash escaping the next character.
func dsnSecret(dsn string) (string, error) {
	var keys []string
	if rest, ok := cutURLScheme(dsn); ok {
		// As libpq: user information is whatever comes before an '@' that
		// comes before the first '/'.
		if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
			if _, pw, ok := strings.Cut(rest[:i], ":"); ok && pw != "" {
				return "password", nil
			}
		}
		if _, query, ok := strings.Cut(rest, "?"); ok {
			for param := range strings.SplitSeq(query, "&") {
				key, _, _ := strings.Cut(param, "=")
				key, err := url.PathUnescape(key)
				if err != nil {
					return "", fmt.Errorf("a query parameter's name: %w", err)
				}
				keys = append(keys, key)
			}
		}
	} else {
		var err error
		if keys, err = keywordKeys(dsn); err != nil {
			return "", err
		}
	}
	for _, k := range keys {
		for _, secret := range []string{"password", "sslpassword"} {
			if strings.EqualFold(strings.TrimSpace(k), secret) {
				return secret, nil
			}
		}
	}
	return "", nil
}

func cutURLScheme(dsn string) (string, bool) {
	for _, scheme := range []string{"postgresql://", "postgres://"} {
		if rest, ok := strings.CutPrefix(dsn, scheme); ok {
			return rest, true
		}
	}
	return "", false
}

// keywordKeys are the keywords of a keyword/value DSN.
func keywordKeys(s string) ([]string, error) {
	const space = " \t\n\r\v\f"
	var keys []string
	for s = strings.TrimLeft(s, space); s != ""; s = strings.TrimLeft(s, space) {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("not a keyword/value DSN or postgres:// URL: a keyword without '='")
		}
		key := strings.Trim(s[:eq], space)
		if key == "" || strings.ContainsAny(key, space) {
			return nil, errors.New("not a keyword/value DSN: a keyword is empty or holds a space")
		}
		keys = append(keys, key)
		s = strings.TrimLeft(s[eq+1:], space)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		end := 0
		for ; end < len(s); end++ {
			c := s[end]
			if c == '\\' {
				end++
				continue
			}
			if quoted && c == '\'' || !quoted && strings.IndexByte(space, c) >= 0 {
				break
			}
		}
		switch {
		case quoted && end >= len(s):
			return nil, errors.New("not a keyword/value DSN: a quoted value without its closing quote")
		case quoted:
			s = s[end+1:]
		case end >= len(s):
			s = ""
		default:
			s = s[end:]
		}
	}
	return keys, nil
}
