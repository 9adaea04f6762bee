package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
)

// BenchmarkIssue measures certificates per second through the engine
// (checks, lint-before-sign, two fsynced store transactions per batch, HSM
// signature, verification), with batches of one and of the default size,
// against the HSM's own signing rate measured in the same run:
// of-ceiling = certs/s ÷ hsm-signs/s.
func BenchmarkIssue(b *testing.B) {
	ca := enginetest.NewCA(b)
	ceiling := hsmCeiling(b, ca, time.Second)
	_, csr := enginetest.NewCSR(b)
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			e := ca.Engine(b, enginetest.OpenStore(b), engine.Config{BatchSize: batch})
			var next atomic.Int64
			prefix := fmt.Sprintf("bench-%d-%d-", batch, b.N)
			b.SetParallelism(64) // enough callers to keep batches full
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := prefix + fmt.Sprint(next.Add(1))
					req := engine.Request{ID: id, Profile: "person-sign", Subject: engine.Subject{CommonName: id}, CSR: csr}
					if _, err := e.Issue(context.Background(), ra, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			rate := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(rate, "certs/s")
			b.ReportMetric(ceiling, "hsm-signs/s")
			b.ReportMetric(rate/ceiling, "of-ceiling")
		})
	}
}

// hsmCeiling is the rate at which the token signs e values with the
// issuing key on all its sessions at once: the most the engine could do.
func hsmCeiling(b *testing.B, ca *enginetest.CA, d time.Duration) float64 {
	b.Helper()
	e := ca.Signer.Digest([]byte("ceiling"))
	var n atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, err := ca.Signer.SignDigest(context.Background(), e); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}
