package store

import (
	"crypto/rand"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// BenchmarkRevokedRange reads 100,000 revoked index entries of one issuer
// with RevokedRange on each engine: the whole issuer as one shard, and
// one of four shards. It reports the time and allocations per entry, and
// the heap in use after the scan, which must not grow with the range (a
// shard is scanned, never gathered).
func BenchmarkRevokedRange(b *testing.B) {
	const entries = 100_000
	opens := []struct {
		name string
		open func(b *testing.B) *Store
	}{
		{"bolt", func(b *testing.B) *Store {
			s, err := Open(filepath.Join(b.TempDir(), "signerd.db"))
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"postgres", func(b *testing.B) *Store {
			s, err := OpenPostgres(newPostgresDatabase(b), PostgresOptions{Timeout: time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, o := range opens {
		b.Run(o.name, func(b *testing.B) {
			s := o.open(b)
			b.Cleanup(func() { s.Close() })
			revokedAt, notAfter := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			for written := 0; written < entries; written += 10_000 {
				if err := s.Update(func(tx *Tx) error {
					for range 10_000 {
						serial := make([]byte, 16)
						rand.Read(serial)
						serial[0] = 0x01 + serial[0]%0x7f
						c := &Certificate{Serial: serial, RevokedAt: revokedAt, NotAfter: notAfter, Reason: 1}
						if err := tx.r.put(tableRevoked, revokedKey("ab", serial), revokedValue(c)); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			for _, r := range []struct {
				name   string
				lo, hi []byte
			}{{"whole", nil, nil}, {"shard-1-of-4", shardBounds4[1][0], shardBounds4[1][1]}} {
				b.Run(r.name, func(b *testing.B) {
					var n int
					var heap uint64
					b.ReportAllocs()
					for b.Loop() {
						n = 0
						if err := s.View(func(tx *Tx) error {
							return tx.RevokedRange("ab", r.lo, r.hi, func(e RevokedEntry) error {
								n++
								if n%(entries/10) == 0 {
									var m runtime.MemStats
									runtime.ReadMemStats(&m)
									heap = max(heap, m.HeapInuse)
								}
								return nil
							})
						}); err != nil {
							b.Fatal(err)
						}
					}
					if n == 0 {
						b.Fatal("no entries in the range")
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
					b.ReportMetric(float64(n), "entries")
					if heap > 0 {
						b.ReportMetric(float64(heap)/(1<<20), "MiB-heap-in-use")
					}
				})
			}
		})
	}
}
