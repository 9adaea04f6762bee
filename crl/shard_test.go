package crl_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"testing"

	"signerd/crl"
)

var shardCounts = []int{1, 2, 3, 7, 16, 100, 255, 1000, crl.MaxShards}

// shardByBounds is the shard whose Bounds hold s, found by comparing s
// with the bounds bytewise (as a store scan does), not by Shard's
// arithmetic; -1 if none does.
func shardByBounds(t *testing.T, s []byte, n int) int {
	t.Helper()
	k := sort.Search(n, func(k int) bool {
		_, hi := crl.Bounds(k, n)
		return hi == nil || bytes.Compare(s, hi) < 0
	})
	if k == n {
		return -1
	}
	if lo, _ := crl.Bounds(k, n); bytes.Compare(lo, s) > 0 {
		return -1
	}
	return k
}

// The bounds tile the byte strings: shard 0 starts at the empty string,
// each shard ends where the next begins, the last is open, and the bounds
// strictly increase, so every byte string is in exactly one shard.
func TestBoundsTile(t *testing.T) {
	for _, n := range shardCounts {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var prevHi []byte
			for k := 0; k < n; k++ {
				lo, hi := crl.Bounds(k, n)
				switch {
				case k == 0 && len(lo) != 0:
					t.Fatalf("shard 0 starts at %x, not at the empty string", lo)
				case k > 0 && !bytes.Equal(lo, prevHi):
					t.Fatalf("shard %d starts at %x; shard %d ended at %x", k, lo, k-1, prevHi)
				case k == n-1 && hi != nil:
					t.Fatalf("last shard ends at %x, want open", hi)
				case k < n-1 && (len(hi) != 2 || bytes.Compare(lo, hi) >= 0):
					t.Fatalf("shard %d: [%x, %x) is not a two-byte bound above its start", k, lo, hi)
				}
				prevHi = hi
			}
		})
	}
}

// Shard agrees with Bounds for every byte string of up to two bytes, at
// and around every bound, and for random serials of every length.
func TestShardAgreesWithBounds(t *testing.T) {
	var probes [][]byte
	probes = append(probes, nil, []byte{})
	for v := 0; v < 0x10000; v++ {
		probes = append(probes, binary.BigEndian.AppendUint16(nil, uint16(v)))
		if v < 0x100 {
			probes = append(probes, []byte{byte(v)})
		}
	}
	for range 2000 {
		s := make([]byte, 1+len(probes)%20)
		rand.Read(s)
		probes = append(probes, s)
	}
	for _, n := range shardCounts {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			around := probes
			for k := 0; k < n; k++ {
				lo, _ := crl.Bounds(k, n)
				if len(lo) == 0 {
					continue
				}
				below := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(lo)-1)
				around = append(around, lo, lo[:1], append(bytes.Clone(lo), 0), append(bytes.Clone(lo), 0xff, 0xff),
					below, append(bytes.Clone(below), 0xff), append(bytes.Clone(lo[:1]), 0xff))
			}
			for _, s := range around {
				want := shardByBounds(t, s, n)
				if want < 0 {
					t.Fatalf("%x is in no shard of %d", s, n)
				}
				if got := crl.Shard(s, n); got != want {
					t.Fatalf("Shard(%x, %d) = %d; Bounds put it in %d", s, n, got, want)
				}
			}
		})
	}
}

// One shard is every serial.
func TestOneShard(t *testing.T) {
	lo, hi := crl.Bounds(0, 1)
	if len(lo) != 0 || hi != nil {
		t.Fatalf("Bounds(0, 1) = [%x, %x), want everything", lo, hi)
	}
	for _, s := range [][]byte{nil, {1}, {0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x7f}, 16)} {
		if k := crl.Shard(s, 1); k != 0 {
			t.Fatalf("Shard(%x, 1) = %d", s, k)
		}
	}
}

// Serials shaped as NewSerial draws them (16 bytes, first 0x01..0x7f)
// spread evenly over the shards.
func TestShardUniform(t *testing.T) {
	const n, draws = 16, 160_000
	counts := make([]int, n)
	s := make([]byte, 16)
	for range draws {
		for {
			rand.Read(s)
			if s[0] &= 0x7f; s[0] != 0 {
				break
			}
		}
		counts[crl.Shard(s, n)]++
	}
	// Expect 10000 each (σ ≈ 97): ±10% is ten σ, and what a skewed
	// bound (one prefix in 127 misassigned) would break.
	for k, c := range counts {
		if c < draws/n*9/10 || c > draws/n*11/10 {
			t.Errorf("shard %d holds %d of %d serials, want about %d: %v", k, c, draws, draws/n, counts)
		}
	}
}

func TestValidateTemplate(t *testing.T) {
	for _, tc := range []struct {
		template string
		n        int
		want     string // "" = valid
	}{
		{"http://crl.example.cn/issuing/{shard}.crl", 16, ""},
		{"http://crl.example.cn/issuing.crl", 1, ""},
		{"http://crl.example.cn/issuing/{shard}.crl", 1, ""},
		{"ldap://ldap.example.cn/cn=issuing-{shard},o=signerd?certificateRevocationList", 4, ""},
		{"http://crl.example.cn/issuing.crl", 2, "{shard}"},
		{"http://crl.example.cn/{shard}.crl", 0, "shard count"},
		{"http://crl.example.cn/{shard}.crl", crl.MaxShards + 1, "shard count"},
		{"/issuing/{shard}.crl", 4, "absolute"},
		{"http://crl.example.cn/证书/{shard}.crl", 4, "ASCII"},
		{"http://crl.example.cn/a b/{shard}.crl", 4, "ASCII"},
		{"", 1, "absolute"},
	} {
		err := crl.ValidateTemplate(tc.template, tc.n)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ValidateTemplate(%q, %d) = %v, want %q", tc.template, tc.n, err, tc.want)
		}
	}
	if got := crl.URL("http://x/{shard}/{shard}.crl", 12); got != "http://x/12/12.crl" {
		t.Errorf("URL = %q", got)
	}
}
