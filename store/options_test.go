package store

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOptionsValidate: each option out of its bounds is refused with its
// field's name and value, zero stands for the default, and the bounds
// themselves pass.
func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		opts   interface{ Validate() error }
		option string // the refused field, "" if none
		err    string
	}{
		{"file defaults", Options{InitialMmapSize: DefaultInitialMmapSize}, "", ""},
		{"no map", Options{}, "", ""},
		{"largest map", Options{InitialMmapSize: MaxInitialMmapSize}, "", ""},
		{"map too large", Options{InitialMmapSize: MaxInitialMmapSize + 1}, "InitialMmapSize", "68719476737: more than 68719476736"},
		{"negative map", Options{InitialMmapSize: -1}, "InitialMmapSize", "-1: negative"},

		{"postgres defaults", PostgresOptions{}, "", ""},
		{"postgres bounds", PostgresOptions{Timeout: MinPostgresTimeout, NodeLease: MinNodeLease, Node: "a"}, "", ""},
		{"longest timeout", PostgresOptions{Timeout: MaxPostgresTimeout}, "", ""},
		{"timeout too short", PostgresOptions{Timeout: 999 * time.Millisecond}, "Timeout", "999ms: below 1s"},
		{"negative timeout", PostgresOptions{Timeout: -time.Second}, "Timeout", "-1s: below 1s"},
		{"timeout too long", PostgresOptions{Timeout: MaxPostgresTimeout + 1}, "Timeout", "more than 5m0s"},
		{"lease too short", PostgresOptions{NodeLease: 100 * time.Millisecond}, "NodeLease", "100ms: below 1s"},
		{"negative connections", PostgresOptions{MaxConns: -1}, "MaxConns", "-1: negative"},
		{"bad node name", PostgresOptions{Node: "A/1"}, "Node", `node name "A/1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.option == "" {
				if err != nil {
					t.Fatalf("%+v refused: %v", tt.opts, err)
				}
				return
			}
			var oe *OptionError
			if !errors.As(err, &oe) || oe.Option != tt.option || !strings.Contains(oe.Err.Error(), tt.err) {
				t.Fatalf("%+v: %v, want option %s refused with %q", tt.opts, err, tt.option, tt.err)
			}
		})
	}
}

// TestParsePostgresDSN: a DSN parsed once names its hosts and database,
// never its password, and refuses what is no DSN without quoting it.
func TestParsePostgresDSN(t *testing.T) {
	d, err := ParsePostgresDSN("postgres://signerd:hunter2@db1:5432,db2:5433/ca?sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Hosts(); !slices.Equal(got, []string{"db1", "db2"}) {
		t.Errorf("hosts %q", got)
	}
	if d.Database() != "ca" || d.String() != "signerd@db1:5432,db2:5433/ca" {
		t.Errorf("database %q, shown as %q", d.Database(), d.String())
	}
	if _, err := ParsePostgresDSN("host=db port=hunter2"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a bad port: %v", err)
	}
}
