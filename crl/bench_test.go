package crl_test

import (
	"encoding/binary"
	"testing"
	"time"

	"signerd/crl"
	"signerd/lint"
	"signerd/revocation"
)

// BenchmarkBuildAndLint100k builds and lints the TBS of a 100k-entry CRL
// shard, as a store scan feeds it (ascending 16-byte serials): what it
// costs in allocations and bytes is the figure issue 20's memory bound
// rests on. The TBS is about 4.3 MB.
func BenchmarkBuildAndLint100k(b *testing.B) {
	const n = 100_000
	ca := newSoftCA(b, true)
	now := time.Now()
	s := crl.Scope{Number: 1, ThisUpdate: now, NextUpdate: now.Add(time.Hour), IDP: "http://crl.example.cn/0.crl"}
	serial := make([]byte, 16)
	serial[0] = 0x01
	b.ReportAllocs()
	for b.Loop() {
		t, err := crl.NewTBS(ca.cert, ca.alg, s)
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			binary.BigEndian.PutUint64(serial[8:], uint64(i)*0x9e3779b97f4a7c15>>20|uint64(i)<<44)
			binary.BigEndian.PutUint32(serial[1:], uint32(i))
			if err := t.Add(crl.Entry{Serial: serial, RevokedAt: now.Add(-time.Hour), Reason: revocation.Reason(i % 3)}); err != nil {
				b.Fatal(err)
			}
		}
		tbs, err := t.Finish()
		if err != nil {
			b.Fatal(err)
		}
		if err := lint.CRLTBS(tbs, ca.cert); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(tbs)), "tbs-bytes")
	}
}
