package publish

import (
	"path/filepath"
	"testing"
)

// BenchmarkPutCRLRound publishes a CRL and a delta for each of 1024 shards of an issuer whose
// directory already holds keep numbered files per series (about 22,000 files): what a round
// of shards costs when nothing lists that directory per CRL, which leaves the four fsyncs of
// each PutCRL (file and directory, for the numbered and the stable name).
func BenchmarkPutCRLRound(b *testing.B) {
	const shards, keep = 1024, 10
	d, err := Open(filepath.Join(b.TempDir(), "pub"), keep)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	der := make([]byte, 1<<10)
	next := uint64(1)
	round := func() {
		for shard := range shards {
			for _, delta := range []bool{false, true} {
				if _, err := d.PutCRL(Series{Issuer: "ab", Shard: shard, Delta: delta}, next, der); err != nil {
					b.Fatal(err)
				}
			}
		}
		next++
		der[0]++
	}
	for range keep {
		round()
	}
	b.ResetTimer()
	for b.Loop() {
		round()
	}
}
