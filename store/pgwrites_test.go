package store

import (
	"fmt"
	"strings"
	"testing"

	"signerd/store/pgtest"
)

// TestPostgresKnownAbsentWrites: a record this write transaction read as
// absent is written by a plain insert, and that never costs a write. A
// key written, sent to the server by a scan, and written again is
// updated, not inserted twice; a key read present is updated. And should
// a record read as absent appear meanwhile, written by a session that did
// not take the writer lock, the transaction fails and the record keeps
// what that session wrote: an insert, never an overwrite.
func TestPostgresKnownAbsentWrites(t *testing.T) {
	const (
		serial  = "serial 1"
		present = "serial 0"
	)
	spki := testSPKI(t, "key 1")
	indexKey := testKeyPrefix(t, "key 1") + "serial 1"
	tests := []struct {
		name  string
		fn    func(t *testing.T, dsn string, r records) error
		fails bool
		want  map[string]string // table "/" key: value
	}{
		{
			name: "read absent, written, scanned, written again",
			fn: func(t *testing.T, dsn string, r records) error {
				if err := r.prefetch(&Prefetch{Serials: [][]byte{[]byte(serial), []byte(present)}, KeySPKIs: [][]byte{spki}}); err != nil {
					return err
				}
				if v, err := r.get(tableSerials, []byte(serial)); err != nil || v != nil {
					return fmt.Errorf("get %q: %q, %v; want none", serial, v, err)
				}
				if err := putAll(r, tableSerials, serial, "first", present, "updated"); err != nil {
					return err
				}
				if err := putAll(r, tableKeys, indexKey, "first"); err != nil {
					return err
				}
				// Each scan sends its table's writes.
				if _, err := scanAll(r, tableSerials, nil, nil); err != nil {
					return err
				}
				if _, err := scanAll(r, tableKeys, nil, nil); err != nil {
					return err
				}
				if err := putAll(r, tableSerials, serial, "second"); err != nil {
					return err
				}
				return putAll(r, tableKeys, indexKey, "second")
			},
			want: map[string]string{tableSerials + "/" + serial: "second", tableSerials + "/" + present: "updated", tableKeys + "/" + indexKey: "second"},
		},
		{
			name: "read absent, then written by a session without the writer lock",
			fn: func(t *testing.T, dsn string, r records) error {
				if err := r.prefetch(&Prefetch{Serials: [][]byte{[]byte(serial)}}); err != nil {
					return err
				}
				if v, err := r.get(tableSerials, []byte(serial)); err != nil || v != nil {
					return fmt.Errorf("get %q: %q, %v; want none", serial, v, err)
				}
				pgtest.Shared(t).Exec(t, dsn, fmt.Sprintf(`INSERT INTO serials (k, v) VALUES ('%s'::bytea, 'other'::bytea)`, serial))
				return putAll(r, tableSerials, serial, "mine")
			},
			fails: true,
			want:  map[string]string{tableSerials + "/" + serial: "other"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := newPostgresDatabase(t)
			b := openTestPostgres(t, dsn, PostgresOptions{})
			mustUpdate(t, b, func(r records) error { return putAll(r, tableSerials, present, "before") })
			err := b.update(func(r records) error { return tt.fn(t, dsn, r) })
			if tt.fails != (err != nil) {
				t.Fatalf("update: %v; want failure %v", err, tt.fails)
			}
			mustView(t, b, func(r records) error {
				for tk, want := range tt.want {
					table, key, _ := strings.Cut(tk, "/")
					v, err := r.get(table, []byte(key))
					if err != nil || string(v) != want {
						t.Errorf("%s %q: %q, %v; want %q", table, key, v, err, want)
					}
				}
				return nil
			})
		})
	}
}
