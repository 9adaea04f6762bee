package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// testSPKI is a SubjectPublicKeyInfo around key, enough for the key index
// (which reads only the subjectPublicKey bits).
func testSPKI(t testing.TB, key string) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier([]int{1, 2, 156, 10197, 1, 301})
		})
		b.AddASN1BitString([]byte(key))
	})
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// testKeyPrefix is the key index prefix of the key in testSPKI(t, key).
func testKeyPrefix(t testing.TB, key string) string {
	t.Helper()
	s := cryptobyte.String(testSPKI(t, key))
	var inner cryptobyte.String
	s.ReadASN1(&inner, casn1.SEQUENCE)
	bits, ok := readPublicKey(inner)
	if !ok {
		t.Fatal("testSPKI: no public key")
	}
	return string(keyIndexPrefix(bits))
}

// prefetchSeen records what a transaction read, in order, so that runs with
// and without a prefetch can be compared.
type prefetchSeen struct {
	r    records
	seen []string
}

func (s *prefetchSeen) get(table, key string) error {
	v, err := s.r.get(table, []byte(key))
	if err != nil {
		return err
	}
	if v == nil {
		s.seen = append(s.seen, fmt.Sprintf("get %s %q: none", table, key))
	} else {
		s.seen = append(s.seen, fmt.Sprintf("get %s %q: %q", table, key, v))
	}
	return nil
}

func (s *prefetchSeen) scan(table, from, prefix string) error {
	var f, p []byte
	if from != "" {
		f = []byte(from)
	}
	if prefix != "" {
		p = []byte(prefix)
	}
	got, err := scanAll(s.r, table, f, p)
	if err != nil {
		return err
	}
	s.seen = append(s.seen, fmt.Sprintf("scan %s from %q under %q: %q", table, from, prefix, got))
	return nil
}

// TestPrefetchIsAHint: every read after a prefetch returns what it returns
// without one, on both engines, whatever the transaction wrote, deleted,
// cleared or sent to the server (a scan sends its table's pending writes)
// before and after the prefetch.
func TestPrefetchIsAHint(t *testing.T) {
	k1, k2 := testKeyPrefix(t, "key one"), testKeyPrefix(t, "key two")
	all := &Prefetch{
		Requests:        []string{"r1", "r2", "absent"},
		Serials:         [][]byte{[]byte("s1"), []byte("s2"), []byte("absent")},
		CompromisedKeys: [][]byte{[]byte("c-empty"), []byte("c1"), []byte("absent")},
		KeySPKIs:        [][]byte{testSPKI(t, "key one"), testSPKI(t, "key two"), testSPKI(t, "no certificates"), []byte("not DER")},
	}
	seed := func(r records) error {
		return errors.Join(
			putAll(r, tableRequests, "r1", "request one", "r2", "request two"),
			putAll(r, tableSerials, "s1", "serial one", "s2", ""),
			putAll(r, tableCerts, "s1", "certificate one", "s2", "certificate two"),
			putAll(r, tableCompromisedKeys, "c-empty", "", "c1", "s1"),
			putAll(r, tableKeys, k1+"s1", "", k1+"s2", "", k2+"s3", "", "key-index-at-head", "head"),
		)
	}
	readAll := func(s *prefetchSeen) error {
		return errors.Join(
			s.get(tableRequests, "r1"), s.get(tableRequests, "r2"), s.get(tableRequests, "absent"),
			s.get(tableSerials, "s1"), s.get(tableSerials, "s2"), s.get(tableSerials, "absent"),
			s.get(tableCerts, "s1"), s.get(tableCerts, "s2"), s.get(tableCerts, "absent"),
			s.get(tableCompromisedKeys, "c-empty"), s.get(tableCompromisedKeys, "c1"), s.get(tableCompromisedKeys, "absent"),
			s.scan(tableKeys, "", k1), s.scan(tableKeys, "", k2), s.scan(tableKeys, k1+"s2", k1),
		)
	}
	// A test's steps run in one write transaction; prefetch marks where
	// the prefetch goes in the run that has one.
	type step struct {
		prefetch bool
		do       func(s *prefetchSeen) error
	}
	prefetch := step{prefetch: true}
	do := func(fn func(s *prefetchSeen) error) step { return step{do: fn} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"reads only", []step{prefetch, do(readAll)}},
		{"prefetched twice", []step{prefetch, do(readAll), prefetch, do(readAll)}},
		{"puts and deletes after", []step{prefetch, do(func(s *prefetchSeen) error {
			return errors.Join(
				putAll(s.r, tableRequests, "r1", "request one again", "absent", "now there"),
				s.r.delete(tableSerials, []byte("s1")), putAll(s.r, tableCerts, "s2", ""),
				s.r.delete(tableCompromisedKeys, []byte("c-empty")),
				putAll(s.r, tableKeys, k1+"s0", ""), s.r.delete(tableKeys, []byte(k2+"s3")))
		}), do(readAll)}},
		{"puts and deletes before", []step{do(func(s *prefetchSeen) error {
			return errors.Join(
				putAll(s.r, tableRequests, "r1", "request one again"), s.r.delete(tableCerts, []byte("s1")),
				putAll(s.r, tableKeys, k1+"s0", ""))
		}), prefetch, do(readAll)}},
		{"pending writes sent by a scan", []step{prefetch, do(func(s *prefetchSeen) error {
			return errors.Join(
				putAll(s.r, tableRequests, "r1", "request one again", "absent", "now there"),
				s.r.delete(tableCerts, []byte("s1")), putAll(s.r, tableCompromisedKeys, "c-empty", "s9"),
				s.r.delete(tableKeys, []byte(k1+"s1")), putAll(s.r, tableKeys, k2+"s4", ""),
				// The whole of each table, which sends its pending writes.
				s.scan(tableRequests, "", ""), s.scan(tableCerts, "", ""),
				s.scan(tableCompromisedKeys, "", ""), s.scan(tableKeys, "", "key-"))
		}), do(readAll)}},
		{"pending writes sent, then prefetched again", []step{prefetch, do(func(s *prefetchSeen) error {
			return errors.Join(
				putAll(s.r, tableRequests, "r2", "request two again"), s.r.delete(tableKeys, []byte(k2+"s3")),
				s.scan(tableRequests, "", ""), s.scan(tableKeys, "", "key-"))
		}), prefetch, do(readAll)}},
		{"cleared", []step{prefetch, do(func(s *prefetchSeen) error {
			return errors.Join(s.r.clear(tableRequests), s.r.clear(tableCerts), s.r.clear(tableKeys),
				putAll(s.r, tableCerts, "s2", "certificate two again"))
		}), do(readAll)}},
		{"cleared, then prefetched again", []step{do(func(s *prefetchSeen) error {
			return errors.Join(s.r.clear(tableSerials), s.r.clear(tableKeys), putAll(s.r, tableKeys, k2+"s5", ""))
		}), prefetch, do(readAll)}},
	}
	for _, bc := range backendCases {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.open(t)
			mustUpdate(t, b, seed)
			run := func(t *testing.T, steps []step, withPrefetch bool) []string {
				t.Helper()
				s := &prefetchSeen{}
				// Rolled back, so every run starts from the seed.
				err := b.update(func(r records) error {
					s.r = r
					for _, st := range steps {
						if st.prefetch {
							if !withPrefetch {
								continue
							}
							if err := r.prefetch(all); err != nil {
								return err
							}
							s.seen = append(s.seen, "prefetch")
							continue
						}
						if err := st.do(s); err != nil {
							return err
						}
					}
					return errTest
				})
				if !errors.Is(err, errTest) {
					t.Fatalf("transaction: %v", err)
				}
				return s.seen
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					without := run(t, tt.steps, false)
					with := run(t, tt.steps, true)
					var kept []string
					for _, s := range with {
						if s != "prefetch" {
							kept = append(kept, s)
						}
					}
					if strings.Join(kept, "\n") != strings.Join(without, "\n") {
						t.Errorf("with a prefetch:\n%s\nwithout:\n%s", strings.Join(with, "\n"), strings.Join(without, "\n"))
					}
				})
			}
			// And in a read transaction.
			var with, without []string
			mustView(t, b, func(r records) error {
				s := &prefetchSeen{r: r}
				err := readAll(s)
				without = s.seen
				return err
			})
			mustView(t, b, func(r records) error {
				s := &prefetchSeen{r: r}
				if err := r.prefetch(all); err != nil {
					return err
				}
				err := readAll(s)
				with = s.seen
				return err
			})
			if strings.Join(with, "\n") != strings.Join(without, "\n") {
				t.Errorf("read transaction with a prefetch:\n%s\nwithout:\n%s", strings.Join(with, "\n"), strings.Join(without, "\n"))
			}
		})
	}
}

// TestPostgresPrefetchRoundTrips: after a prefetch, the reads a batch stage
// makes for each request (its record, serial, certificate, whether its key
// is compromised, the certificates of its key) cost no round trip: a stage
// of many requests costs what a stage of a few does. Without the prefetch
// each read is one.
func TestPostgresPrefetchRoundTrips(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	type request struct {
		id, serial, digest string
		spki               []byte
	}
	requests := func(n int) []request {
		rs := make([]request, n)
		for i := range rs {
			rs[i] = request{id: fmt.Sprintf("%d-%d", n, i), serial: fmt.Sprintf("serial %d-%d", n, i),
				digest: fmt.Sprintf("digest %d-%d", n, i), spki: testSPKI(t, fmt.Sprintf("key %d-%d", n, i))}
		}
		return rs
	}
	few, many := requests(5), requests(100)
	mustUpdate(t, b, func(r records) error {
		tx := &Tx{r: r}
		for _, q := range append(few, many...) {
			if err := tx.PutRequest(&Request{ID: q.id, State: RequestIssued}); err != nil {
				return err
			}
			if err := putAll(r, tableSerials, q.serial, `{"state":"issued"}`); err != nil {
				return err
			}
		}
		return nil
	})
	// stage reads what the batch's reserve stage reads for each request.
	stage := func(rs []request, prefetch bool) (requests int64) {
		t.Helper()
		b.ending.Wait()
		r0 := b.traffic.requests.Load()
		mustView(t, b, func(r records) error {
			tx := &Tx{r: r}
			if prefetch {
				var p Prefetch
				for _, q := range rs {
					p.Requests = append(p.Requests, q.id)
					p.Serials = append(p.Serials, []byte(q.serial))
					p.CompromisedKeys = append(p.CompromisedKeys, []byte(q.digest))
					p.KeySPKIs = append(p.KeySPKIs, q.spki)
				}
				if err := tx.Prefetch(p); err != nil {
					return err
				}
			}
			for _, q := range rs {
				if _, err := tx.Request(q.id); err != nil {
					return err
				}
				if _, err := tx.Serial([]byte(q.serial)); err != nil {
					return err
				}
				if _, err := tx.Certificate([]byte(q.serial)); !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("certificate %q: %v, want none", q.serial, err)
				}
				if c, err := tx.KeyCompromised([]byte(q.digest)); err != nil || c != nil {
					return fmt.Errorf("key %q compromised: %x, %v", q.digest, c, err)
				}
				if err := tx.CertificatesWithKey(q.spki, func(*Certificate) error { return errTest }); err != nil {
					return err
				}
			}
			return nil
		})
		b.ending.Wait() // the view's end is sent after it returns
		return b.traffic.requests.Load() - r0
	}
	fewPrefetched, manyPrefetched := stage(few, true), stage(many, true)
	if fewPrefetched != manyPrefetched {
		t.Errorf("a prefetched stage of %d requests took %d round trips, of %d requests %d; want the same",
			len(few), fewPrefetched, len(many), manyPrefetched)
	}
	// The count is of reads: without the prefetch it grows with them.
	fewRead, manyRead := stage(few, false), stage(many, false)
	if manyRead-fewRead < int64(5*(len(many)-len(few))) {
		t.Errorf("a stage of %d requests took %d round trips, of %d requests %d without a prefetch; want at least 5 a request",
			len(few), fewRead, len(many), manyRead)
	}
}

// TestPostgresTransactionRoundTrips: a transaction's beginning goes with
// its first request, and a prefetch with the next request, which may be a
// scan's page: a write transaction that reads ahead, scans the requests
// being signed and reads what it read ahead costs one round trip and its
// commit; a read transaction that reads ahead and reads costs one and its
// end. Each of the table's cases fails if a beginning or a prefetch costs
// a round trip of its own.
func TestPostgresTransactionRoundTrips(t *testing.T) {
	b := openTestPostgres(t, newPostgresDatabase(t), PostgresOptions{})
	mustUpdate(t, b, func(r records) error {
		return errors.Join(putAll(r, tableRequests, "a", "1", "b", "2"), putAll(r, tableInFlight, "a", ""))
	})
	stage := func(r records) error {
		if err := r.prefetch(&Prefetch{Requests: []string{"a", "b", "c"}}); err != nil {
			return err
		}
		n := 0
		if err := r.scan(tableInFlight, nil, nil, func(k, v []byte) error { n++; return nil }); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("scanned %d requests being signed, want 1", n)
		}
		for key, want := range map[string]string{"a": "1", "b": "2", "c": ""} {
			v, err := r.get(tableRequests, []byte(key))
			if err != nil {
				return err
			}
			if string(v) != want {
				return fmt.Errorf("request %s: %q, want %q", key, v, want)
			}
		}
		return nil
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, fn func(records) error)
		want int64
	}{
		{"write", func(t *testing.T, fn func(records) error) {
			t.Helper()
			mustUpdate(t, b, func(r records) error {
				if err := fn(r); err != nil {
					return err
				}
				// Sent at commit, and read there as written.
				return putAll(r, tableStats, "k", "v")
			})
		}, 2},
		{"read", func(t *testing.T, fn func(records) error) { t.Helper(); mustView(t, b, fn) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.ending.Wait()
			r0 := b.traffic.requests.Load()
			tc.run(t, stage)
			b.ending.Wait()
			if got := b.traffic.requests.Load() - r0; got != tc.want {
				t.Errorf("%d round trips, want %d", got, tc.want)
			}
		})
	}
}
