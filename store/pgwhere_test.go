package store

import (
	"strings"
	"testing"
)

// TestPostgresLocationNamesEveryHost: a DSN naming a primary and its
// standbys is named with every host and its port, in the DSN's order and
// each once (pgx tries a host twice under sslmode=prefer), and never with
// its password.
func TestPostgresLocationNamesEveryHost(t *testing.T) {
	tests := []struct {
		name, dsn, want string
	}{
		{"one socket", "host=/run/pg port=5441 user=signerd dbname=ca sslmode=disable",
			"signerd@/run/pg:5441/ca"},
		{"two sockets, one port each", "host=/run/pg,/run/pg port=5441,5442 user=signerd dbname=ca sslmode=disable target_session_attrs=read-write",
			"signerd@/run/pg:5441,/run/pg:5442/ca"},
		{"two hosts, one port for both, TLS preferred", "host=db1,db2 port=5432 user=signerd dbname=ca password=hunter2",
			"signerd@db1:5432,db2:5432/ca"},
		{"URL with three hosts and a password", "postgres://signerd:hunter2@db1:5432,db2:5433,[2001:db8::7]:5434/ca?sslmode=require",
			"signerd@db1:5432,db2:5433,[2001:db8::7]:5434/ca"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PostgresLocation(tc.dsn)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("PostgresLocation = %q, want %q", got, tc.want)
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("PostgresLocation shows the password: %q", got)
			}
		})
	}
}
