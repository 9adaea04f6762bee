package crl

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// MaxShards bounds an issuer's shard count. Serials drawn by
// issuance.NewSerial begin with two bytes in 0x0100..0x7fff, 0x7f00
// prefixes; at 1024 shards each shard spans 31 or 32 of them, so shards
// differ in expected size by at most one part in 31, and every bound is
// distinct.
const MaxShards = 1024

// shardSpan is the number of two-byte prefixes the bounds divide: those
// of serials whose first byte is 0x01..0x7f.
const shardSpan = 0x7f00

// lo is shard k's lower bound as a number, for 1 ≤ k < n: its two bytes
// big-endian (crl20.md).
func lo(k, n int) int { return 0x0100 + k*shardSpan/n }

// Shard is serial's shard among n: the k with Bounds(k, n) containing
// serial bytewise, which is the order the store scans serials in (so a
// range scan of shard k's bounds yields exactly the serials Shard puts in
// k, whatever their length or leading byte). n outside 1..MaxShards is
// taken as 1 shard: the caller's configuration check refuses it earlier.
func Shard(serial []byte, n int) int {
	if n <= 1 || n > MaxShards {
		return 0
	}
	// v is where serial falls among the two-byte bounds: a bound b is ≤
	// serial bytewise iff b ≤ v. A one-byte serial {x} sorts below every
	// two-byte string beginning x (a proper prefix sorts first), so it
	// sits just below x<<8; the empty serial sits below every bound.
	var v int
	switch len(serial) {
	case 0:
		return 0
	case 1:
		v = int(serial[0])<<8 - 1
	default:
		v = int(binary.BigEndian.Uint16(serial))
	}
	d := v - 0x0100 // lo(k) ≤ v ⇔ k*span/n ≤ d (integer division) ⇔ k*span < (d+1)*n
	if d < 0 {
		return 0
	}
	// The largest k with k*span < (d+1)*n, capped at the last shard.
	k := ((d+1)*n - 1) / shardSpan
	return min(k, n-1)
}

// Bounds is shard k's range of serials among n shards: [lo, hi) bytewise,
// lo empty for shard 0 and hi nil for the last (open above), so the
// shards cover every byte string once.
func Bounds(k, n int) (lo_, hi []byte) {
	if k > 0 {
		lo_ = binary.BigEndian.AppendUint16(nil, uint16(lo(k, n)))
	}
	if k+1 < n {
		hi = binary.BigEndian.AppendUint16(nil, uint16(lo(k+1, n)))
	}
	return lo_, hi
}

// shardPlaceholder is what URL replaces in a distribution point template.
const shardPlaceholder = "{shard}"

// URL fills a distribution point template: every "{shard}" becomes k in
// decimal. The certificate's CRL distribution point and its shard's IDP
// are both this URL, so they match byte for byte as RFC 5280 §6.3.3
// requires of a relying party comparing them.
func URL(template string, k int) string {
	return strings.ReplaceAll(template, shardPlaceholder, strconv.Itoa(k))
}

// ValidateTemplate checks a distribution point template for n shards: n
// within 1..MaxShards, "{shard}" present when n > 1 (else every shard
// would name one URL and a relying party could not tell shards apart),
// and every filled URL absolute and ASCII, as the IA5String an IDP and a
// CDP carry it in must be.
func ValidateTemplate(template string, n int) error {
	if n < 1 || n > MaxShards {
		return fmt.Errorf("shard count %d: must be 1 to %d", n, MaxShards)
	}
	if n > 1 && !strings.Contains(template, shardPlaceholder) {
		return fmt.Errorf("distribution point %q: %d shards need %q in the URL, so each shard has its own", template, n, shardPlaceholder)
	}
	return validURL(URL(template, 0))
}

// validURL checks a distribution point URL as NewTBS needs it: absolute,
// ASCII, printable.
func validURL(u string) error {
	for i := 0; i < len(u); i++ {
		if u[i] < 0x21 || u[i] > 0x7e {
			return fmt.Errorf("distribution point %q: byte %d is not printable ASCII (an IA5String URI)", u, i)
		}
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("distribution point %q: %w", u, err)
	}
	if p.Scheme == "" || p.Host == "" {
		return fmt.Errorf("distribution point %q: not an absolute URL", u)
	}
	return nil
}
