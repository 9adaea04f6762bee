package main

import (
	"os"
	"runtime/debug"
)

// signerd's garbage collector settings, unless the environment sets its
// own (GOGC, GOMEMLIMIT: an operator's choice wins). Issuance allocates
// fast over a small live heap (a few MiB), so at the default GOGC of 100
// the collector runs every few MiB of requests and costs about a tenth of
// signerd's CPU per certificate. GOGC 400 lets the heap grow to five
// times the live heap between collections: signerctl bench, 64 clients,
// 1.08 (0.96–1.11) ms of signerd CPU per certificate with it against 1.20
// (1.04–1.74) without, anonymous RSS 31 against 16 MiB on an empty store.
// The soft limit bounds the heap GOGC 400 would let grow over a large
// live heap: a CRL's build. CRLs are encoded straight to DER one shard at
// a time (package crl), so their live heap is small (about 21 MB while a
// shard of a 16-shard CRL of a million entries is built), but at GOGC 400
// the heap grew to 105 MB of garbage before a collection: peak anonymous
// RSS 110 MiB with the 160 MiB limit of before, 47 MiB with 48 MiB
// (signerctl bench -prefill 1000000 -revoked 1000000 -shards 16; a CRL of
// 100,000 entries in one shard: 63 against 46 MiB). Issuing on an empty
// store, the heap stays below it: 64 clients, alternating runs of one
// sitting, 1,278 and 1,378 certs/s with 48 MiB against 1,328 with 160 MiB
// (noise, the machine shared).
const (
	gcPercent   = 400
	memoryLimit = 48 << 20
)

// tuneGC applies gcPercent and memoryLimit when the environment sets
// neither; an empty value counts as unset, as the runtime reads it.
func tuneGC() {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(gcPercent)
	debug.SetMemoryLimit(memoryLimit)
}
