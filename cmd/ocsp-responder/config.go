package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/ocsp"
	"signerd/store"
)

// configFile is the responder's configuration file as written (YAML).
// Unknown keys are errors, so a misspelt limit never silently takes its
// default.
type configFile struct {
	// Listen is the TCP address served (host:port; port 0 picks one, and
	// the log says which).
	Listen string `yaml:"listen"`
	// Issuers are the PEM certificates of the issuing CAs whose
	// certificates are answered for; every other issuer is unauthorized.
	Issuers []string `yaml:"issuers"`
	// Source is where the responses are read: one of dir and postgres.
	Source struct {
		// Dir is signerd's publish.dir: responses are read from
		// <dir>/ocsp/<issuer SKI>/<serial>.der, never written.
		Dir string `yaml:"dir"`
		// Postgres is signerd's PostgreSQL store, read through
		// store.Reader (table ocsp_responses alone, read-only sessions).
		Postgres *postgresFile `yaml:"postgres"`
	} `yaml:"source"`
	Limits struct {
		MaxConnections int `yaml:"max_connections"`
		// MaxConnectionsPerHost caps one remote address's connections
		// (default 64; 0 in the file: the default; -1: no cap, for a
		// responder behind a proxy whose one address carries every client).
		MaxConnectionsPerHost int  `yaml:"max_connections_per_host"`
		MaxRequestBytes       int  `yaml:"max_request_bytes"`
		CacheEntries          *int `yaml:"cache_entries"`
		Timeouts              struct {
			ReadHeader duration `yaml:"read_header"`
			Read       duration `yaml:"read"`
			Write      duration `yaml:"write"`
			Idle       duration `yaml:"idle"`
		} `yaml:"timeouts"`
	} `yaml:"limits"`
}

// postgresFile is source.postgres as written.
type postgresFile struct {
	DSN string `yaml:"dsn"`
	// CacheTTL is how long a response read is served from the cache
	// before it is read again: the most a change signerd committed
	// waits to be served (default 10s).
	CacheTTL duration `yaml:"cache_ttl"`
	// Timeout bounds each read (default 2s); a read that takes longer
	// is answered tryLater.
	Timeout  duration `yaml:"timeout"`
	MaxConns int32    `yaml:"max_conns"` // pooled connections (default 8)
}

// postgresSource is source.postgres, checked.
type postgresSource struct {
	dsn      string
	cacheTTL time.Duration
	timeout  time.Duration
	maxConns int32
}

// noPasswordHelp is what to use instead of a password in the DSN, as
// signerd says of its own.
const noPasswordHelp = "give the password in a passfile (passfile=/run/credentials/ocsp-responder.service/pgpass in the DSN, " +
	"the unit loading it with LoadCredential=; format host:port:dbname:user:password), " +
	"or use peer authentication over the server's Unix socket (host=/run/postgresql) or a client certificate " +
	"(sslcert=, sslkey=, sslmode=verify-full)"

type duration struct{ time.Duration }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// config is the checked configuration, every default applied.
type config struct {
	listen          string
	issuers         []string
	dir             string
	postgres        *postgresSource // nil: the source is dir
	maxConnections  int
	maxPerHost      int // 0: no cap
	maxRequestBytes int
	cacheEntries    int
	readHeader      time.Duration
	read            time.Duration
	write           time.Duration
	idle            time.Duration
}

// Defaults and bounds. A request RFC 5019 clients send (one CertID, maybe
// a nonce) is about 100 octets; 1 KiB leaves room for a few extensions,
// and a signed request with certificates, which would need more, gets
// nothing from a responder that ignores signatures anyway. A cached
// response is about 0.4 KiB signed by the issuer and 1.2 KiB by a
// delegated responder with its certificate: 100,000 entries cost 40 to
// 120 MiB at most.
const (
	defaultMaxConnections  = 1024
	defaultMaxPerHost      = 64
	defaultMaxRequestBytes = 1024
	defaultCacheEntries    = 100_000
	maxCacheEntries        = 10_000_000

	// A response read from PostgreSQL is served from the cache for
	// cache_ttl, there being no file whose version a stat would show:
	// 10 s of staleness after a revocation is far inside what RFC 5019
	// clients accept (the response itself is valid for hours), and it
	// turns the database's load into one read per certificate asked
	// about per 10 s.
	defaultCacheTTL   = 10 * time.Second
	minCacheTTL       = 100 * time.Millisecond
	maxCacheTTL       = 10 * time.Minute
	defaultPGTimeout  = 2 * time.Second
	minPGTimeout      = 100 * time.Millisecond
	defaultPGMaxConns = 8
	maxPGMaxConns     = 1000
)

var timeoutBounds = []struct {
	key           string
	field         func(*config) *time.Duration
	def, min, max time.Duration
}{
	// A client that has not sent its request's head within read_header
	// (a slowloris) loses its connection; the read, write and idle
	// bounds do the same for the body, for a client that does not take
	// its answer, and for a kept-alive connection left unused.
	{"read_header", func(c *config) *time.Duration { return &c.readHeader }, 5 * time.Second, 100 * time.Millisecond, time.Minute},
	{"read", func(c *config) *time.Duration { return &c.read }, 10 * time.Second, 100 * time.Millisecond, time.Minute},
	{"write", func(c *config) *time.Duration { return &c.write }, 10 * time.Second, 100 * time.Millisecond, time.Minute},
	{"idle", func(c *config) *time.Duration { return &c.idle }, time.Minute, 100 * time.Millisecond, 10 * time.Minute},
}

func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f configFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := f.config()
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func (f *configFile) config() (*config, error) {
	c := &config{listen: f.Listen, issuers: f.Issuers, dir: f.Source.Dir,
		maxConnections: f.Limits.MaxConnections, maxRequestBytes: f.Limits.MaxRequestBytes, cacheEntries: defaultCacheEntries,
		readHeader: f.Limits.Timeouts.ReadHeader.Duration, read: f.Limits.Timeouts.Read.Duration,
		write: f.Limits.Timeouts.Write.Duration, idle: f.Limits.Timeouts.Idle.Duration}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return nil, fmt.Errorf("listen %q: want host:port: %w", c.listen, err)
	}
	if len(c.issuers) == 0 {
		return nil, errors.New("issuers: none: the responder would answer unauthorized to everything")
	}
	switch {
	case c.dir != "" && f.Source.Postgres != nil:
		return nil, errors.New("source: both dir and postgres; the responder reads one")
	case c.dir == "" && f.Source.Postgres == nil:
		return nil, errors.New("source.dir (signerd's publish.dir) or source.postgres (signerd's store): missing")
	}
	switch {
	case c.maxConnections == 0:
		c.maxConnections = defaultMaxConnections
	case c.maxConnections < 1 || c.maxConnections > 1<<20:
		return nil, fmt.Errorf("limits.max_connections %d: want 1 to %d", c.maxConnections, 1<<20)
	}
	switch n := f.Limits.MaxConnectionsPerHost; {
	case n == 0:
		c.maxPerHost = min(defaultMaxPerHost, c.maxConnections)
	case n == -1:
		c.maxPerHost = 0
	case n < 1 || n > c.maxConnections:
		return nil, fmt.Errorf("limits.max_connections_per_host %d: want 1 to max_connections (%d), or -1 for no cap", n, c.maxConnections)
	default:
		c.maxPerHost = n
	}
	switch {
	case c.maxRequestBytes == 0:
		c.maxRequestBytes = defaultMaxRequestBytes
	case c.maxRequestBytes < 256 || c.maxRequestBytes > ocsp.MaxRequestSize:
		return nil, fmt.Errorf("limits.max_request_bytes %d: want 256 to %d", c.maxRequestBytes, ocsp.MaxRequestSize)
	}
	if f.Limits.CacheEntries != nil {
		c.cacheEntries = *f.Limits.CacheEntries
		if c.cacheEntries < 0 || c.cacheEntries > maxCacheEntries {
			return nil, fmt.Errorf("limits.cache_entries %d: want 0 (no cache) to %d", c.cacheEntries, maxCacheEntries)
		}
	}
	for _, b := range timeoutBounds {
		d := b.field(c)
		switch {
		case *d == 0:
			*d = b.def
		case *d < b.min || *d > b.max:
			return nil, fmt.Errorf("limits.timeouts.%s %s: want %s to %s", b.key, *d, b.min, b.max)
		}
	}
	if p := f.Source.Postgres; p != nil {
		var err error
		if c.postgres, err = p.config(c.write); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// config checks source.postgres; write is the HTTP write timeout, which
// a read must end well within for its answer to reach the client.
func (p *postgresFile) config(write time.Duration) (*postgresSource, error) {
	if strings.TrimSpace(p.DSN) == "" {
		return nil, errors.New("source.postgres.dsn is required (e.g. \"host=/run/postgresql dbname=signerd user=ocsp_responder\")")
	}
	// The DSN is never quoted in a message: a malformed one may hold a
	// secret where a password was meant to be left out.
	secret, err := store.PostgresDSNSecret(p.DSN)
	if err != nil {
		return nil, fmt.Errorf("source.postgres.dsn (not shown): %w", err)
	}
	if secret != "" {
		return nil, fmt.Errorf("source.postgres.dsn (not shown) holds a %s: a secret in the config file is read by whoever "+
			"reads the configuration and may be logged; %s", secret, noPasswordHelp)
	}
	if _, err := store.ParsePostgresDSN(p.DSN); err != nil {
		return nil, fmt.Errorf("source.postgres.dsn: %w", err)
	}
	s := &postgresSource{dsn: p.DSN, cacheTTL: p.CacheTTL.Duration, timeout: p.Timeout.Duration, maxConns: p.MaxConns}
	switch {
	case s.cacheTTL == 0:
		s.cacheTTL = defaultCacheTTL
	case s.cacheTTL < minCacheTTL || s.cacheTTL > maxCacheTTL:
		return nil, fmt.Errorf("source.postgres.cache_ttl %s: want %s to %s", s.cacheTTL, minCacheTTL, maxCacheTTL)
	}
	switch {
	case s.timeout == 0:
		s.timeout = defaultPGTimeout
	case s.timeout < minPGTimeout || s.timeout >= write/2:
		return nil, fmt.Errorf("source.postgres.timeout %s: want %s to less than half limits.timeouts.write (%s), "+
			"so that tryLater reaches the client", s.timeout, minPGTimeout, write)
	}
	switch {
	case s.maxConns == 0:
		s.maxConns = defaultPGMaxConns
	case s.maxConns < 1 || s.maxConns > maxPGMaxConns:
		return nil, fmt.Errorf("source.postgres.max_conns %d: want 1 to %d", s.maxConns, maxPGMaxConns)
	}
	return s, nil
}
