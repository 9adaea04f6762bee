package main

import (
	"os"
	"os/exec"
	"path/filepath"

	"signerd/hsm"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	base := "listen: 127.0.0.1:8080\nissuers: [/etc/ca.pem]\nsource: {dir: /srv/pub}\n"
	pg := "listen: 127.0.0.1:8080\nissuers: [/etc/ca.pem]\nsource: {postgres: "
	tests := []struct {
		name, yaml string
		err        string // "": loads
		check      func(*config) bool
	}{
		{"defaults", base, "", func(c *config) bool {
			return c.maxConnections == defaultMaxConnections && c.maxRequestBytes == defaultMaxRequestBytes &&
				c.cacheEntries == defaultCacheEntries && c.readHeader == 5*time.Second && c.idle == time.Minute
		}},
		{"limits", base + "limits: {max_connections: 10, max_request_bytes: 2048, cache_entries: 0, timeouts: {read_header: 2s, write: 3s}}\n", "", func(c *config) bool {
			return c.maxConnections == 10 && c.maxRequestBytes == 2048 && c.cacheEntries == 0 && c.readHeader == 2*time.Second && c.write == 3*time.Second
		}},
		{"misspelt key", base + "limits: {max_conections: 10}\n", "field max_conections not found", nil},
		{"postgres defaults", pg + "{dsn: \"host=/run/postgresql dbname=signerd user=ocsp\"}}\n", "", func(c *config) bool {
			p := c.postgres
			return c.dir == "" && p != nil && p.cacheTTL == defaultCacheTTL && p.timeout == defaultPGTimeout && p.maxConns == defaultPGMaxConns
		}},
		{"postgres set", pg + "{dsn: \"host=/run/postgresql\", cache_ttl: 1s, timeout: 500ms, max_conns: 3}}\n", "", func(c *config) bool {
			p := c.postgres
			return p.cacheTTL == time.Second && p.timeout == 500*time.Millisecond && p.maxConns == 3
		}},
		{"postgres and dir", strings.Replace(pg, "{postgres", "{dir: /srv/pub, postgres", 1) + "{dsn: \"host=/run/postgresql\"}}\n", "both dir and postgres", nil},
		{"postgres without dsn", pg + "{cache_ttl: 1s}}\n", "source.postgres.dsn is required", nil},
		{"postgres password", pg + "{dsn: \"host=/run/postgresql password=hunter2\"}}\n", "holds a password", nil},
		{"postgres password in a URL", pg + "{dsn: \"postgres://ocsp:hunter2@db/signerd\"}}\n", "passfile", nil},
		{"postgres DSN unparsable", pg + "{dsn: \"host='\"}}\n", "source.postgres.dsn", nil},
		{"cache_ttl too short", pg + "{dsn: \"host=/run/postgresql\", cache_ttl: 1ms}}\n", "cache_ttl", nil},
		{"cache_ttl too long", pg + "{dsn: \"host=/run/postgresql\", cache_ttl: 1h}}\n", "cache_ttl", nil},
		{"postgres timeout past the write timeout", pg + "{dsn: \"host=/run/postgresql\", timeout: 5s}}\nlimits: {timeouts: {write: 8s}}\n", "half limits.timeouts.write", nil},
		{"max_conns", pg + "{dsn: \"host=/run/postgresql\", max_conns: -1}}\n", "max_conns", nil},
		{"no listen", "issuers: [/etc/ca.pem]\nsource: {dir: /srv/pub}\n", "listen", nil},
		{"no issuers", "listen: :8080\nsource: {dir: /srv/pub}\n", "issuers", nil},
		{"no source", "listen: :8080\nissuers: [/etc/ca.pem]\n", "source.dir (signerd's publish.dir) or source.postgres", nil},
		{"request bytes too small", base + "limits: {max_request_bytes: 100}\n", "max_request_bytes", nil},
		{"request bytes too big", base + "limits: {max_request_bytes: 100000}\n", "max_request_bytes", nil},
		{"negative cache", base + "limits: {cache_entries: -1}\n", "cache_entries", nil},
		{"timeout too long", base + "limits: {timeouts: {idle: 1h}}\n", "timeouts.idle", nil},
		{"timeout not a duration", base + "limits: {timeouts: {read: soon}}\n", "soon", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o600)
			c, err := loadConfig(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one about %q", err, tc.err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("%+v, %v", c, err)
			}
		})
	}
}

// The process refuses to start on an issuer it cannot read, or a
// publication directory that is not there: a typo fails at start, not as
// unauthorized to every client.
func TestStartRefused(t *testing.T) {
	ca := newCA(t, hsm.SM2, "CA")
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"missing issuer", "issuers: [" + filepath.Join(dir, "nope.pem") + "]\nsource: {dir: " + dir + "}\n", "nope.pem"},
		{"issuer not PEM", "issuers: [" + filepath.Join(dir, "c.yaml") + "]\nsource: {dir: " + dir + "}\n", "no PEM CERTIFICATE"},
		{"missing directory", "issuers: [" + ca.pem + "]\nsource: {dir: " + filepath.Join(dir, "nope") + "}\n", "source.dir"},
		{"issuer twice", "issuers: [" + ca.pem + ", " + ca.pem + "]\nsource: {dir: " + dir + "}\n", "the same key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "c.yaml")
			os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"+tc.yaml), 0o600)
			out, err := exec.Command(responderBin, "--config", path).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("%v: %s; want an exit about %q", err, out, tc.want)
			}
		})
	}
}
