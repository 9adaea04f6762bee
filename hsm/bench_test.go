package hsm_test

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// The HSM ceiling: signatures per second on one key straight through this
// package (software re-verification included), with one session and with
// GOMAXPROCS sessions. Every later throughput figure is held against it.

func BenchmarkSM2Sign(b *testing.B) {
	for _, sessions := range sessionCounts() {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			tok := hsmtest.NewToken(b, hsmtest.SM2Module(b), "bench")
			cfg := tok.Config(hsmtest.SoftHSMProfile(b))
			cfg.Sessions = sessions
			m := tok.Open(b, cfg)
			_, s := newSM2Signer(b, m)
			e := s.Digest([]byte("a to-be-signed certificate"))
			signConcurrently(b, sessions, func() error {
				_, err := s.SignDigest(context.Background(), e)
				return err
			})
		})
	}
}

func BenchmarkECDSAP256Sign(b *testing.B) {
	for _, sessions := range sessionCounts() {
		b.Run(fmt.Sprintf("sessions=%d", sessions), func(b *testing.B) {
			tok := hsmtest.NewToken(b, hsmtest.StockModule(b), "bench")
			cfg := tok.Config(nil)
			cfg.Sessions = sessions
			m := tok.Open(b, cfg)
			k, err := m.GenerateKey(context.Background(), hsm.KeySpec{Label: "k", Algorithm: hsm.ECDSAP256})
			if err != nil {
				b.Fatal(err)
			}
			s, err := k.ECDSASigner()
			if err != nil {
				b.Fatal(err)
			}
			d := sha256.Sum256([]byte("a to-be-signed certificate"))
			signConcurrently(b, sessions, func() error {
				_, err := s.SignContext(context.Background(), d[:], crypto.SHA256)
				return err
			})
		})
	}
}

func sessionCounts() []int {
	if n := runtime.GOMAXPROCS(0); n > 1 {
		return []int{1, n}
	}
	return []int{1}
}

// signConcurrently runs b.N signatures from workers goroutines and reports
// signatures per second.
func signConcurrently(b *testing.B, workers int, sign func() error) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := sign(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}
