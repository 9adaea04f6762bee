package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/ocsp"
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
	Source  struct {
		// Dir is signerd's publish.dir: responses are read from
		// <dir>/ocsp/<issuer SKI>/<serial>.der, never written.
		Dir string `yaml:"dir"`
	} `yaml:"source"`
	Limits struct {
		MaxConnections  int  `yaml:"max_connections"`
		MaxRequestBytes int  `yaml:"max_request_bytes"`
		CacheEntries    *int `yaml:"cache_entries"`
		Timeouts        struct {
			ReadHeader duration `yaml:"read_header"`
			Read       duration `yaml:"read"`
			Write      duration `yaml:"write"`
			Idle       duration `yaml:"idle"`
		} `yaml:"timeouts"`
	} `yaml:"limits"`
}

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
	maxConnections  int
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
	defaultMaxRequestBytes = 1024
	defaultCacheEntries    = 100_000
	maxCacheEntries        = 10_000_000
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
	if c.dir == "" {
		return nil, errors.New("source.dir: missing (signerd's publish.dir)")
	}
	switch {
	case c.maxConnections == 0:
		c.maxConnections = defaultMaxConnections
	case c.maxConnections < 1 || c.maxConnections > 1<<20:
		return nil, fmt.Errorf("limits.max_connections %d: want 1 to %d", c.maxConnections, 1<<20)
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
	return c, nil
}
