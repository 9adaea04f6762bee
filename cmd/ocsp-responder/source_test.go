package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/publish"
)

func TestLRU(t *testing.T) {
	c := newLRU(3)
	r := map[string]*response{}
	for _, k := range []string{"a", "b", "c"} {
		r[k] = &response{etag: k}
		c.put(k, r[k])
	}
	c.get("a") // b is now the least recently used
	c.put("d", &response{etag: "d"})
	if c.len() != 3 || c.get("b") != nil || c.get("a") != r["a"] || c.get("c") != r["c"] || c.get("d") == nil {
		t.Fatalf("after eviction: len %d, b %v", c.len(), c.get("b"))
	}
	c.remove("a")
	if c.get("a") != nil || c.len() != 2 {
		t.Fatal("remove")
	}
	for i := range 100 {
		c.put(fmt.Sprint(i), &response{})
	}
	if c.len() != 3 {
		t.Fatalf("len %d, want the bound 3", c.len())
	}
	off := newLRU(0)
	off.put("a", &response{})
	if off.get("a") != nil || off.len() != 0 {
		t.Fatal("a cache of 0 entries keeps one")
	}
}

// The directory source serves a cached response while its file is the
// same, and reads the file again once it is replaced.
func TestDirSourceCache(t *testing.T) {
	ca := newCA(t, hsm.SM2, "CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{9}
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: ca.sign(t, good(serial, time.Hour), ocsp.SHA1)})
	src, err := openDirSource(pub, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	ctx := context.Background()
	first, err := src.response(ctx, ca.id(), serial)
	if err != nil || first == nil {
		t.Fatal(first, err)
	}
	if again, _ := src.response(ctx, ca.id(), serial); again != first {
		t.Fatal("an unchanged file read again rather than served from the cache")
	}
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: ca.sign(t, good(serial, 2*time.Hour), ocsp.SHA1)})
	if next, _ := src.response(ctx, ca.id(), serial); next == first || next.times.NextUpdate.Equal(first.times.NextUpdate) {
		t.Fatal("a replaced file served from the cache")
	}
	if none, err := src.response(ctx, ca.id(), []byte{10}); none != nil || err != nil {
		t.Fatal(none, err)
	}
}

// The name the source opens is publish's, for every serial length.
func TestSourceNameIsPublishName(t *testing.T) {
	for n := 1; n <= publish.MaxSerialBytes; n++ {
		serial := make([]byte, n)
		for i := range serial {
			serial[i] = byte(0x80 + i)
		}
		want, err := publish.OCSPName("0a1b", serial)
		if err != nil {
			t.Fatal(err)
		}
		if got := publish.OCSPDir + "/0a1b/" + fmt.Sprintf("%x", serial) + ".der"; got != want {
			t.Fatalf("%q, publish says %q", got, want)
		}
	}
}
