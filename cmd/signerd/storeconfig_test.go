package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"signerd/store"
)

// TestStoreConfig: the store is a path, or a mapping with the path, the
// memory map reserved ahead and the stall threshold; anything else in it
// is refused, as an unknown key anywhere is.
func TestStoreConfig(t *testing.T) {
	const head = "hsm: {module: /m.so, token: ca, pin_file: /p}\nissuers: [{key: k, certificate: /c.pem}]\nsocket: {path: /s}\n"
	tests := []struct {
		name, store string
		path        string
		mmap        int
		stall       time.Duration
		err         string
	}{
		{name: "a path", store: "store: /var/lib/signerd/signerd.db", path: "/var/lib/signerd/signerd.db", mmap: store.DefaultInitialMmapSize},
		{name: "a mapping", store: "store: {path: /s.db}", path: "/s.db", mmap: store.DefaultInitialMmapSize},
		{name: "map in GiB", store: "store: {path: /s.db, initial_mmap_size: 4GiB}", path: "/s.db", mmap: 4 << 30},
		{name: "map in MiB", store: "store: {path: /s.db, initial_mmap_size: 512 MiB}", path: "/s.db", mmap: 512 << 20},
		{name: "map in bytes", store: "store: {path: /s.db, initial_mmap_size: 65536}", path: "/s.db", mmap: 65536},
		{name: "no map reserved", store: "store: {path: /s.db, initial_mmap_size: 0}", path: "/s.db", mmap: 0},
		{name: "stall threshold", store: "store: {path: /s.db, write_stall_after: 3s}", path: "/s.db", mmap: store.DefaultInitialMmapSize, stall: 3 * time.Second},
		{name: "no store", store: "", err: "store is required"},
		{name: "mapping without path", store: "store: {write_stall_after: 3s}", err: "store is required"},
		{name: "unknown key", store: "store: {path: /s.db, mmap: 1GiB}", err: `unknown key "mmap"`},
		{name: "bad size", store: "store: {path: /s.db, initial_mmap_size: lots}", err: "want a size"},
		{name: "negative size", store: "store: {path: /s.db, initial_mmap_size: -1}", err: "want a size"},
		{name: "size out of range", store: "store: {path: /s.db, initial_mmap_size: 9999999999GiB}", err: "want a size"},
		{name: "map too large", store: "store: {path: /s.db, initial_mmap_size: 65GiB}", err: "more than"},
		{name: "negative stall", store: "store: {path: /s.db, write_stall_after: -1s}", err: "below 100ms"},
		{name: "stall too short", store: "store: {path: /s.db, write_stall_after: 10ms}", err: "below 100ms"},
		{name: "a list", store: "store: [/s.db]", err: "a path, or a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.yaml")
			if err := os.WriteFile(path, []byte(head+tt.store+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("loaded with %q: %v, want an error with %q", tt.store, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Store.Path != tt.path || c.Store.Options.InitialMmapSize != tt.mmap || c.Engine.WriteStallAfter != tt.stall {
				t.Fatalf("%q: path %q, map %d, stall %v", tt.store, c.Store.Path, c.Store.Options.InitialMmapSize, c.Engine.WriteStallAfter)
			}
		})
	}
}

// TestPostgresStoreConfig: store.postgres takes a DSN without a secret,
// a transaction timeout and a pool size; the store is a file or a
// database, never both, and the file's settings are refused beside a
// database. A refused DSN is never quoted. The PIN refusal marker
// defaults to systemd's state directory, and without one must be given.
func TestPostgresStoreConfig(t *testing.T) {
	const head = "hsm: {module: /m.so, token: ca, pin_file: /p%s}\nissuers: [{key: k, certificate: /c.pem}]\nsocket: {path: /s}\n"
	const marker = ", pin_refused_marker: /var/lib/ca/refused"
	const dsn = "host=/run/postgresql dbname=signerd user=signerd"
	tests := []struct {
		name, store string
		marker      string // the hsm section's marker setting
		stateDir    string // $STATE_DIRECTORY
		host, db    string
		timeout     time.Duration
		conns       int32
		node        string
		lease       time.Duration
		wantMarker  string
		err         string
	}{
		{name: "keyword DSN", store: `store: {postgres: {dsn: "` + dsn + `"}}`, marker: marker,
			host: "/run/postgresql", db: "signerd", wantMarker: "/var/lib/ca/refused"},
		{name: "URL DSN", store: `store: {postgres: {dsn: "postgres://signerd@db.example.net:5433/ca?sslmode=require&application_name=signerd"}}`,
			marker: marker, host: "db.example.net", db: "ca", wantMarker: "/var/lib/ca/refused"},
		{name: "two hosts", store: `store: {postgres: {dsn: "host=a.example.net,b.example.net dbname=ca target_session_attrs=read-write"}}`,
			marker: marker, host: "a.example.net,b.example.net", db: "ca", wantMarker: "/var/lib/ca/refused"},
		{name: "a passfile", store: `store: {postgres: {dsn: "host=db.example.net dbname=ca passfile=/etc/signerd/pgpass"}}`,
			marker: marker, host: "db.example.net", db: "ca", wantMarker: "/var/lib/ca/refused"},
		{name: "password in a quoted value", store: `store: {postgres: {dsn: "host=/run/postgresql dbname=ca application_name='password=x'"}}`,
			marker: marker, host: "/run/postgresql", db: "ca", wantMarker: "/var/lib/ca/refused"},
		{name: "timeout and connections", store: "store:\n  postgres: {dsn: \"" + dsn + "\", timeout: 30s, max_conns: 16}\n  write_stall_after: 20s",
			marker: marker, host: "/run/postgresql", db: "signerd", timeout: 30 * time.Second, conns: 16, wantMarker: "/var/lib/ca/refused"},
		{name: "marker in the state directory", store: `store: {postgres: {dsn: "` + dsn + `"}}`, stateDir: "/var/lib/signerd",
			host: "/run/postgresql", db: "signerd", wantMarker: "/var/lib/signerd/hsm-pin-refused"},
		{name: "first of several state directories", store: `store: {postgres: {dsn: "` + dsn + `"}}`, stateDir: "/var/lib/signerd:/var/lib/other",
			host: "/run/postgresql", db: "signerd", wantMarker: "/var/lib/signerd/hsm-pin-refused"},
		{name: "configured marker over the state directory", store: `store: {postgres: {dsn: "` + dsn + `"}}`, marker: marker,
			stateDir: "/var/lib/signerd", host: "/run/postgresql", db: "signerd", wantMarker: "/var/lib/ca/refused"},
		{name: "a file beside the state directory", store: "store: /srv/ca/signerd.db", stateDir: "/var/lib/signerd",
			wantMarker: "/srv/ca/hsm-pin-refused"},

		{name: "no marker, no state directory", store: `store: {postgres: {dsn: "` + dsn + `"}}`, err: "hsm.pin_refused_marker is required with store.postgres"},
		{name: "relative state directory", store: `store: {postgres: {dsn: "` + dsn + `"}}`, stateDir: "signerd", err: "hsm.pin_refused_marker is required"},
		{name: "path and postgres", store: `store: {path: /s.db, postgres: {dsn: "` + dsn + `"}}`, marker: marker, err: "path and postgres both given"},
		{name: "postgres without dsn", store: "store: {postgres: {timeout: 5s}}", marker: marker, err: "store.postgres.dsn is required"},
		{name: "empty postgres", store: "store: {postgres: {}}", marker: marker, err: "store.postgres.dsn is required"},
		{name: "postgres not a mapping", store: `store: {postgres: "` + dsn + `"}`, marker: marker, err: "store.postgres: a mapping with dsn"},
		{name: "unknown postgres key", store: `store: {postgres: {dsn: "` + dsn + `", pool: 3}}`, marker: marker, err: `unknown key "pool"`},
		{name: "map size with postgres", store: `store: {postgres: {dsn: "` + dsn + `"}, initial_mmap_size: 1GiB}`, marker: marker,
			err: "store.initial_mmap_size is for a store file"},
		{name: "backup timeout with postgres", store: `store: {postgres: {dsn: "` + dsn + `"}, backup_timeout: 5m}`, marker: marker,
			err: "pg_basebackup and WAL archiving"},
		{name: "timeout too short", store: `store: {postgres: {dsn: "` + dsn + `", timeout: 100ms}}`, marker: marker, err: "below 1s"},
		{name: "negative timeout", store: `store: {postgres: {dsn: "` + dsn + `", timeout: -1s}}`, marker: marker, err: "below 1s"},
		{name: "timeout too long", store: `store: {postgres: {dsn: "` + dsn + `", timeout: 1h}}`, marker: marker, err: "more than 5m0s"},
		{name: "node and its lease", store: "node: site-a-1\nstore: {postgres: {dsn: \"" + dsn + "\", node_lease: 5s}}", marker: marker,
			host: "/run/postgresql", db: "signerd", node: "site-a-1", lease: 5 * time.Second, wantMarker: "/var/lib/ca/refused"},
		{name: "node on a store file", store: "node: a\nstore: /srv/ca/signerd.db", marker: marker, err: "a store file has one signerd"},
		{name: "bad node name", store: "node: A/1\nstore: {postgres: {dsn: \"" + dsn + "\"}}", marker: marker, err: `node name "A/1"`},
		{name: "lease too short", store: `store: {postgres: {dsn: "` + dsn + `", node_lease: 100ms}}`, marker: marker, err: "node_lease 100ms: below 1s"},
		{name: "negative connections", store: `store: {postgres: {dsn: "` + dsn + `", max_conns: -1}}`, marker: marker, err: "max_conns -1: negative"},
		{name: "stall too short with postgres", store: `store: {postgres: {dsn: "` + dsn + `"}, write_stall_after: 10ms}`, marker: marker, err: "below 100ms"},
		{name: "password keyword", store: `store: {postgres: {dsn: "host=db dbname=ca password=s3cret"}}`, marker: marker, err: "holds a password"},
		{name: "password keyword spaced and quoted", store: `store: {postgres: {dsn: "host=db  password = 's3cret x' dbname=ca"}}`, marker: marker, err: "holds a password"},
		{name: "password keyword escaped", store: `store: {postgres: {dsn: "password=s3\\ cret dbname=ca"}}`, marker: marker, err: "holds a password"},
		{name: "client key password", store: `store: {postgres: {dsn: "host=db sslkey=/k.pem sslpassword=s3cret"}}`, marker: marker, err: "holds a sslpassword"},
		{name: "password in the URL", store: `store: {postgres: {dsn: "postgres://signerd:s3cret@db/ca"}}`, marker: marker, err: "holds a password"},
		{name: "password in the postgresql URL", store: `store: {postgres: {dsn: "postgresql://signerd:s3cret@db,db2:5433/ca"}}`, marker: marker, err: "holds a password"},
		{name: "password as a URL parameter", store: `store: {postgres: {dsn: "postgres://db/ca?sslmode=require&password=s3cret"}}`, marker: marker, err: "holds a password"},
		{name: "password as an escaped URL parameter", store: `store: {postgres: {dsn: "postgres://db/ca?pass%77ord=s3cret"}}`, marker: marker, err: "holds a password"},
		{name: "the alternatives named", store: `store: {postgres: {dsn: "password=s3cret"}}`, marker: marker, err: "passfile=/etc/signerd/pgpass"},
		{name: "unterminated quote", store: `store: {postgres: {dsn: "host=db password='s3cret"}}`, marker: marker, err: "without its closing quote"},
		{name: "not a DSN", store: `store: {postgres: {dsn: "s3cret"}}`, marker: marker, err: "not a keyword/value DSN"},
		{name: "a bad port", store: `store: {postgres: {dsn: "host=db port=s3cret"}}`, marker: marker, err: "store.postgres.dsn: invalid DSN (not shown): invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", tt.stateDir)
			path := filepath.Join(t.TempDir(), "signerd.yaml")
			if err := os.WriteFile(path, []byte(fmt.Sprintf(head, tt.marker)+tt.store+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("loaded with %q: %v, want an error with %q", tt.store, err, tt.err)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("the error quotes the DSN's secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.HSM.PINRefusedMarker != tt.wantMarker {
				t.Errorf("PIN refusal marker %q, want %q", c.HSM.PINRefusedMarker, tt.wantMarker)
			}
			pg := c.Store.Postgres
			if pg == nil {
				if tt.host != "" || c.Store.Path == "" {
					t.Fatalf("%q: no postgres store (path %q)", tt.store, c.Store.Path)
				}
				return
			}
			host := strings.Join(pg.Hosts(), ",")
			if c.Store.Path != "" || host != tt.host || pg.Database() != tt.db ||
				c.Store.PostgresOptions != (store.PostgresOptions{Timeout: tt.timeout, MaxConns: tt.conns, Node: tt.node, NodeLease: tt.lease}) {
				t.Fatalf("%q: path %q, host %q, database %q, options %+v", tt.store, c.Store.Path, host, pg.Database(), c.Store.PostgresOptions)
			}
		})
	}
}
