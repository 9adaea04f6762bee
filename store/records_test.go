package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"signerd/store/pgtest"
)

// backendCases are the engines the records conformance table runs on: both
// must keep the same bytes under the same keys, in the same order.
var backendCases = []struct {
	name string
	open func(t *testing.T) backend
}{
	{"postgres", func(t *testing.T) backend { return openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{}) }},
	{"bolt", func(t *testing.T) backend {
		return openedForTest[*boltBackend](t)(openBoltBackend(filepath.Join(t.TempDir(), "store.db"), Options{}))
	}},
}

// openedForTest takes what a backend's open function returns, fails t on
// its error, and closes the backend when the test ends.
func openedForTest[B backend](t testing.TB) func(B, error) B {
	return func(b B, err error) B {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.close(); err != nil {
				t.Error(err)
			}
		})
		return b
	}
}

// newPostgresDatabase is a new database on the test binary's shared
// server, holding the current schema: a copy of schemaTemplate, which
// costs a test less than applying the migrations anew.
func newPostgresDatabase(t testing.TB) string {
	t.Helper()
	server := pgtest.Shared(t)
	name := fmt.Sprintf("store_%d", schemaTemplate.copies.Add(1))
	server.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, schemaTemplateName(t, server)))
	return server.DSN(name)
}

// schemaTemplate is the database the tests' databases are copied from:
// made on first use, upgraded by UpgradePostgres, then never opened again
// (a database is copied only while no session is connected to it).
var schemaTemplate struct {
	mu     sync.Mutex
	name   string
	copies atomic.Int64
}

func schemaTemplateName(t testing.TB, server *pgtest.Server) string {
	t.Helper()
	schemaTemplate.mu.Lock()
	defer schemaTemplate.mu.Unlock()
	if schemaTemplate.name == "" {
		dsn := server.CreateDatabase(t)
		if _, err := UpgradePostgres(t.Context(), dsn); err != nil {
			t.Fatal(err)
		}
		schemaTemplate.name = pgtest.DatabaseName(t, dsn)
	}
	return schemaTemplate.name
}

// openTestPostgres opens dsn, closed when the test ends.
func openTestPostgres(t testing.TB, dsn string, o PostgresOptions) *pgBackend {
	t.Helper()
	return openedForTest[*pgBackend](t)(openPostgresBackend(dsn, o))
}

func mustUpdate(t testing.TB, b backend, fn func(r records) error) {
	t.Helper()
	if err := b.update(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func mustView(t testing.TB, b backend, fn func(r records) error) {
	t.Helper()
	if err := b.view(fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// putAll writes the records of kv (key, value, key, value...) to table.
func putAll(r records, table string, kv ...string) error {
	for i := 0; i < len(kv); i += 2 {
		if err := r.put(table, []byte(kv[i]), []byte(kv[i+1])); err != nil {
			return err
		}
	}
	return nil
}

// scanAll is every record scan gives, as key, value, key, value...
func scanAll(r records, table string, from, prefix []byte) ([]string, error) {
	var got []string
	err := r.scan(table, from, prefix, func(k, v []byte) error {
		got = append(got, string(k), string(v))
		return nil
	})
	return got, err
}

// wantRecords fails the test unless table holds exactly kv, in that order.
func wantRecords(t testing.TB, r records, table string, kv ...string) {
	t.Helper()
	got, err := scanAll(r, table, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", kv) {
		t.Errorf("%s holds %q, want %q", table, got, kv)
	}
}

func wantValue(t testing.TB, r records, table, key string, want []byte) {
	t.Helper()
	got, err := r.get(table, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
		t.Errorf("get %s %q = %q (nil %v), want %q (nil %v)", table, key, got, got == nil, want, want == nil)
	}
}

var errTest = errors.New("test failure")

func TestRecords(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, b backend)
	}{
		{"put get delete", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "k1", "v1", "k2", "v2") })
			mustView(t, b, func(r records) error {
				wantValue(t, r, tableCerts, "k1", []byte("v1"))
				wantValue(t, r, tableCerts, "k2", []byte("v2"))
				wantValue(t, r, tableCerts, "k3", nil)
				wantValue(t, r, tableSerials, "k1", nil)
				return nil
			})
			mustUpdate(t, b, func(r records) error {
				if err := r.delete(tableCerts, []byte("k1")); err != nil {
					return err
				}
				if err := r.delete(tableCerts, []byte("never there")); err != nil {
					return err
				}
				return r.put(tableCerts, []byte("k2"), []byte("v2 again"))
			})
			mustView(t, b, func(r records) error {
				wantValue(t, r, tableCerts, "k1", nil)
				wantRecords(t, r, tableCerts, "k2", "v2 again")
				return nil
			})
		}},
		{"an empty key is refused", func(t *testing.T, b backend) {
			if err := b.update(func(r records) error { return r.put(tableCerts, []byte{}, []byte("v")) }); err == nil {
				t.Error("a record with an empty key was written")
			}
		}},
		{"every table", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				for _, table := range tables {
					if err := r.put(table, []byte("key"), []byte(table)); err != nil {
						return err
					}
				}
				return nil
			})
			mustView(t, b, func(r records) error {
				for _, table := range tables {
					wantValue(t, r, table, "key", []byte(table))
				}
				return nil
			})
		}},
		{"read your writes", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error { return putAll(r, tableRequests, "old", "1") })
			mustUpdate(t, b, func(r records) error {
				if err := putAll(r, tableRequests, "new", "2"); err != nil {
					return err
				}
				wantValue(t, r, tableRequests, "new", []byte("2"))
				if err := r.delete(tableRequests, []byte("old")); err != nil {
					return err
				}
				wantValue(t, r, tableRequests, "old", nil)
				if err := r.delete(tableRequests, []byte("new")); err != nil {
					return err
				}
				wantValue(t, r, tableRequests, "new", nil)
				if err := putAll(r, tableRequests, "new", "3"); err != nil {
					return err
				}
				wantValue(t, r, tableRequests, "new", []byte("3"))
				return nil
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableRequests, "new", "3")
				return nil
			})
		}},
		{"fn's error rolls back", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				return errors.Join(putAll(r, tableCerts, "a", "1", "b", "2"), putAll(r, tableKeys, "x", "y"))
			})
			err := b.update(func(r records) error {
				if err := putAll(r, tableCerts, "a", "changed", "c", "3"); err != nil {
					return err
				}
				if err := r.delete(tableCerts, []byte("b")); err != nil {
					return err
				}
				if err := r.clear(tableKeys); err != nil {
					return err
				}
				// Seen by a scan, so sent to a server that keeps it in the
				// transaction until commit.
				if _, err := scanAll(r, tableCerts, nil, nil); err != nil {
					return err
				}
				return errTest
			})
			if err != errTest {
				t.Fatalf("update returned %v, want fn's error as it is", err)
			}
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableCerts, "a", "1", "b", "2")
				wantRecords(t, r, tableKeys, "x", "y")
				return nil
			})
		}},
		{"scan order is bytewise, shortest first", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				return putAll(r, tableAudit, "b", "3", "\xff", "4", "a\x00", "2", "a", "1")
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableAudit, "a", "1", "a\x00", "2", "b", "3", "\xff", "4")
				return nil
			})
		}},
		{"scan from and prefix", func(t *testing.T, b backend) {
			keys := []string{"a", "ab", "ab\x00", "abc", "abd", "ac", "b", "\xff", "\xff\xff", "\xff\xff\x01"}
			mustUpdate(t, b, func(r records) error {
				for _, k := range keys {
					if err := r.put(tableSerials, []byte(k), nil); err != nil {
						return err
					}
				}
				return nil
			})
			scans := []struct {
				from, prefix string
				want         []string
			}{
				{"", "", keys},
				{"", "ab", []string{"ab", "ab\x00", "abc", "abd"}},
				{"abc", "ab", []string{"abc", "abd"}},
				{"ab\x01", "ab", []string{"abc", "abd"}},
				{"a", "ab", []string{"ab", "ab\x00", "abc", "abd"}},
				{"b", "ab", nil},
				{"ac", "", []string{"ac", "b", "\xff", "\xff\xff", "\xff\xff\x01"}},
				{"", "\xff", []string{"\xff", "\xff\xff", "\xff\xff\x01"}},
				{"", "\xff\xff", []string{"\xff\xff", "\xff\xff\x01"}},
				{"zz", "", []string{"\xff", "\xff\xff", "\xff\xff\x01"}},
				{"", "x", nil},
				{"\xff\xff\x02", "", nil},
			}
			mustView(t, b, func(r records) error {
				for _, s := range scans {
					var got []string
					err := r.scan(tableSerials, []byte(s.from), []byte(s.prefix), func(k, v []byte) error {
						got = append(got, string(k))
						return nil
					})
					if err != nil {
						return err
					}
					if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", s.want) {
						t.Errorf("scan from %q prefix %q = %q, want %q", s.from, s.prefix, got, s.want)
					}
				}
				return nil
			})
		}},
		{"scanRange is lo up to, not including, hi", func(t *testing.T, b backend) {
			keys := []string{"a", "ab", "ab\x00", "ab\x00\x01", "ab\x00\x20\xc0", "ab\x00\x20\xc0\x00", "ab\x01", "abc", "b", "\xff"}
			mustUpdate(t, b, func(r records) error {
				for _, k := range keys {
					if err := r.put(tableRevoked, []byte(k), []byte(k)); err != nil {
						return err
					}
				}
				return nil
			})
			ranges := []struct {
				lo, hi string
				open   bool // hi nil
				want   []string
			}{
				{"", "", true, keys},
				{"ab\x00", "ab\x01", false, []string{"ab\x00", "ab\x00\x01", "ab\x00\x20\xc0", "ab\x00\x20\xc0\x00"}},
				{"ab\x00", "ab\x00\x20\xc0", false, []string{"ab\x00", "ab\x00\x01"}},
				{"ab\x00\x20\xc0", "ab\x01", false, []string{"ab\x00\x20\xc0", "ab\x00\x20\xc0\x00"}},
				{"ab\x00\x01\x00", "ab\x00\x20\xc0\x00", false, []string{"ab\x00\x20\xc0"}},
				{"abc", "", true, []string{"abc", "b", "\xff"}},
				{"b", "a", false, nil},
				{"ab", "ab", false, nil},
				{"\xff\x00", "", true, nil},
			}
			mustView(t, b, func(r records) error {
				for _, rg := range ranges {
					var hi []byte
					if !rg.open {
						hi = []byte(rg.hi)
					}
					var got []string
					err := r.scanRange(tableRevoked, []byte(rg.lo), hi, func(k, v []byte) error {
						if !bytes.Equal(k, v) {
							return fmt.Errorf("record %q holds %q", k, v)
						}
						got = append(got, string(k))
						return nil
					})
					if err != nil {
						return err
					}
					if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", rg.want) {
						t.Errorf("scanRange [%q, %q) = %q, want %q", rg.lo, hi, got, rg.want)
					}
				}
				return nil
			})
		}},
		{"scanRange over pages ends at hi", func(t *testing.T, b backend) {
			const n = 2*pgRangePage + 3
			key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("r"), uint32(i)) }
			mustUpdate(t, b, func(r records) error {
				for i := range n {
					if err := r.put(tableRevoked, key(i), nil); err != nil {
						return err
					}
				}
				return nil
			})
			for _, rg := range [][2]int{{0, n}, {1, pgRangePage + 1}, {pgRangePage, 2 * pgRangePage}, {pgRangePage - 1, pgRangePage + 1}, {7, 7}, {n - 1, n}} {
				mustView(t, b, func(r records) error {
					i := rg[0]
					err := r.scanRange(tableRevoked, key(rg[0]), key(rg[1]), func(k, _ []byte) error {
						if !bytes.Equal(k, key(i)) {
							return fmt.Errorf("record %d of [%d, %d) is %x", i, rg[0], rg[1], k)
						}
						i++
						return nil
					})
					if err == nil && i != rg[1] {
						err = fmt.Errorf("scanRange [%d, %d) ended at %d", rg[0], rg[1], i)
					}
					return err
				})
			}
		}},
		{"scan sees the transaction's writes", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error { return putAll(r, tableRevoked, "a", "1", "b", "2", "c", "3") })
			mustUpdate(t, b, func(r records) error {
				if err := putAll(r, tableRevoked, "bb", "new", "c", "changed"); err != nil {
					return err
				}
				if err := r.delete(tableRevoked, []byte("b")); err != nil {
					return err
				}
				wantRecords(t, r, tableRevoked, "a", "1", "bb", "new", "c", "changed")
				if err := putAll(r, tableRevoked, "d", "after the scan"); err != nil {
					return err
				}
				wantRecords(t, r, tableRevoked, "a", "1", "bb", "new", "c", "changed", "d", "after the scan")
				return nil
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableRevoked, "a", "1", "bb", "new", "c", "changed", "d", "after the scan")
				return nil
			})
		}},
		{"scan stops at fn's first error", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error { return putAll(r, tableStats, "1", "", "2", "", "3", "") })
			mustView(t, b, func(r records) error {
				calls := 0
				err := r.scan(tableStats, nil, nil, func(k, v []byte) error {
					if calls++; calls == 2 {
						return errTest
					}
					return nil
				})
				if !errors.Is(err, errTest) || calls != 2 {
					t.Errorf("scan returned %v after %d calls, want %v after 2", err, calls, errTest)
				}
				return nil
			})
		}},
		{"fn reads and writes other tables during a scan", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				return errors.Join(putAll(r, tableCerts, "c1", "k1", "c2", "k2", "c3", "k3"),
					putAll(r, tableSerials, "c1", "s1", "c2", "s2", "c3", "s3"))
			})
			mustUpdate(t, b, func(r records) error {
				return r.scan(tableCerts, nil, nil, func(k, v []byte) error {
					serial, err := r.get(tableSerials, k)
					if err != nil {
						return err
					}
					// A scan of another table, inside this one's.
					if _, err := scanAll(r, tableKeys, nil, nil); err != nil {
						return err
					}
					return r.put(tableKeys, v, serial)
				})
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableKeys, "k1", "s1", "k2", "s2", "k3", "s3")
				return nil
			})
		}},
		{"an empty value is a value", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				if err := r.put(tableInFlight, []byte("empty"), []byte{}); err != nil {
					return err
				}
				wantValue(t, r, tableInFlight, "empty", []byte{})
				return nil
			})
			mustView(t, b, func(r records) error {
				wantValue(t, r, tableInFlight, "empty", []byte{})
				wantValue(t, r, tableInFlight, "none", nil)
				return r.scan(tableInFlight, nil, nil, func(k, v []byte) error {
					if v == nil || len(v) != 0 {
						t.Errorf("scan gave %q (nil %v) for an empty value", v, v == nil)
					}
					return nil
				})
			})
		}},
		{"clear", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error {
				return errors.Join(putAll(r, tableKeys, "a", "1", "b", "2"), putAll(r, tableCRL, "a", "kept"))
			})
			mustUpdate(t, b, func(r records) error {
				if err := putAll(r, tableKeys, "c", "3"); err != nil {
					return err
				}
				if err := r.clear(tableKeys); err != nil {
					return err
				}
				wantValue(t, r, tableKeys, "a", nil)
				wantValue(t, r, tableKeys, "c", nil)
				wantRecords(t, r, tableKeys)
				return putAll(r, tableKeys, "d", "4")
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableKeys, "d", "4")
				wantRecords(t, r, tableCRL, "a", "kept")
				return nil
			})
		}},
		{"a read transaction does not write", func(t *testing.T, b backend) {
			mustUpdate(t, b, func(r records) error { return putAll(r, tableCRL, "a", "1") })
			mustView(t, b, func(r records) error {
				if err := r.put(tableCRL, []byte("b"), []byte("2")); err == nil {
					t.Error("put in a read transaction succeeded")
				}
				if err := r.delete(tableCRL, []byte("a")); err == nil {
					t.Error("delete in a read transaction succeeded")
				}
				if err := r.clear(tableCRL); err == nil {
					t.Error("clear in a read transaction succeeded")
				}
				return nil
			})
			mustView(t, b, func(r records) error {
				wantRecords(t, r, tableCRL, "a", "1")
				return nil
			})
		}},
		{"scan of many records", func(t *testing.T, b backend) {
			const n = 3*pgScanPage + 7
			key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte("r"), uint32(i)) }
			mustUpdate(t, b, func(r records) error {
				for i := range n {
					if err := r.put(tableRAReplay, key(i), []byte{byte(i)}); err != nil {
						return err
					}
				}
				return nil
			})
			// Between pages, fn's writes to another table go to the server.
			mustUpdate(t, b, func(r records) error {
				return r.scan(tableRAReplay, nil, []byte("r"), func(k, v []byte) error {
					if err := r.put(tableCompromisedKeys, k, v); err != nil {
						return err
					}
					_, err := r.get(tableCompromisedKeys, k)
					return err
				})
			})
			mustView(t, b, func(r records) error {
				for _, table := range []string{tableRAReplay, tableCompromisedKeys} {
					i := 0
					err := r.scan(table, nil, nil, func(k, v []byte) error {
						if !bytes.Equal(k, key(i)) || !bytes.Equal(v, []byte{byte(i)}) {
							return fmt.Errorf("%s record %d is %x=%x", table, i, k, v)
						}
						i++
						return nil
					})
					if err != nil {
						return err
					}
					if i != n {
						t.Errorf("scan of %s gave %d records, want %d", table, i, n)
					}
				}
				return nil
			})
		}},
	}
	for _, bc := range backendCases {
		for _, tc := range tests {
			t.Run(bc.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, bc.open(t))
			})
		}
	}
}
