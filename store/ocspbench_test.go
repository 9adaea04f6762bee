package store

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkOCSP measures, on each engine, against a store holding 1 M
// certificates due for an OCSP response: a pre-signer's read of the next
// 1,000 due (DueOCSP, in a read transaction), and its recording of a
// batch of 256 signed responses in one write transaction (read ahead, as
// the engine does, and not). It reports the time and allocations per
// operation and per entry.
func BenchmarkOCSP(b *testing.B) {
	const (
		certificates = 1_000_000
		perTx        = 50_000
		batch        = 256
		due          = 1000
	)
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
			s, err := OpenPostgres(newPostgresDatabase(b), PostgresOptions{Timeout: 5 * time.Minute})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	// Issuer ids are hex SKIs (SHA-1: 40 digits); serials 16 random bytes.
	issuers := []string{hex.EncodeToString(make([]byte, 20)), hex.EncodeToString([]byte("an issuer's key id 2"))}
	serialOf := func(i int) []byte {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		s := binary.BigEndian.AppendUint64(nil, rng.Uint64())
		s = binary.BigEndian.AppendUint64(s, rng.Uint64())
		s[0] &= 0x7f
		return s
	}
	issuerOf := func(i int) string { return issuers[i%len(issuers)] }
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A response of the size of an SM2 one without certificates.
	der := make([]byte, 320)
	der[0], der[1], der[2] = 0x30, 0x82, 0x01
	der[3] = byte(len(der) - 4)
	for _, o := range opens {
		b.Run(o.name, func(b *testing.B) {
			s := o.open(b)
			b.Cleanup(func() { s.Close() })
			for from := 0; from < certificates; from += perTx {
				if err := s.Update(func(tx *Tx) error {
					// Raw records, as MarkOCSPDue writes them, without
					// its read of each.
					for i := from; i < from+perTx; i++ {
						key, err := ocspResponseKey(issuerOf(i), serialOf(i))
						if err != nil {
							return err
						}
						rec := &ocspRecord{dueAt: base.Add(time.Duration(i%(certificates/10)) * time.Second)}
						if err := tx.r.put(tableOCSPResponses, key, rec.encode()); err != nil {
							return err
						}
						if err := tx.r.put(tableOCSPDue, ocspDueKey(rec.dueAt, key), nil); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("DueOCSP-1000", func(b *testing.B) {
				b.ReportAllocs()
				var n int
				for b.Loop() {
					n = 0
					if err := s.View(func(tx *Tx) error {
						return tx.DueOCSP(base.AddDate(1, 0, 0), due, func(string, []byte, time.Time) error { n++; return nil })
					}); err != nil {
						b.Fatal(err)
					}
				}
				if n != due {
					b.Fatalf("%d due, want %d", n, due)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/due, "ns/entry")
			})
			next := 0
			for _, prefetch := range []bool{true, false} {
				name := "PutOCSPResponse-256"
				if !prefetch {
					name += "-unprefetched"
				}
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						keys := make([]OCSPKey, batch)
						for j := range keys {
							i := next % certificates
							next++
							keys[j] = OCSPKey{issuerOf(i), serialOf(i)}
						}
						thisUpdate := base.Add(time.Duration(next) * time.Millisecond)
						if err := s.Update(func(tx *Tx) error {
							if prefetch {
								if err := tx.Prefetch(Prefetch{OCSP: keys}); err != nil {
									return err
								}
							}
							for _, k := range keys {
								r := &OCSPResponse{Issuer: k.Issuer, Serial: k.Serial, ThisUpdate: thisUpdate,
									NextUpdate: thisUpdate.Add(7 * 24 * time.Hour), DER: der}
								if err := tx.PutOCSPResponse(r, thisUpdate.Add(84*time.Hour)); err != nil {
									return err
								}
							}
							return nil
						}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/response")
				})
			}
		})
	}
}
