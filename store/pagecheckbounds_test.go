package store

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boundedCheckWait is how long a page check of a file of a few pages may
// run before the test calls it unbounded. The fixed check takes
// microseconds; the unbounded walks these tests build take minutes to
// forever, so the wait decides nothing on a loaded machine.
const boundedCheckWait = 60 * time.Second

// emptyBoltFile writes an empty bbolt file and returns its path, its page
// size and the meta page bbolt uses.
func emptyBoltFile(t *testing.T) (path string, ps int64, m boltMeta) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "hostile.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, ok := readMeta(f, 0)
	if !ok {
		t.Fatal("meta page 0 of a new bbolt file is invalid")
	}
	if m1, ok := readMeta(f, int64(m.pageSize)); ok && m1.txid > m.txid {
		m = m1
	}
	return path, int64(m.pageSize), m
}

// writeInlineFanout makes the root page of the bbolt file at path a leaf
// of k bucket elements that all name one inline bucket, whose page again
// holds k elements naming one inline bucket, maxBucketDepth levels deep: a
// walk that checks an inline bucket each time it is named checks k^16 of
// them. With pushPage, the deepest inline bucket's elements name page 2
// instead of an inline page, so each of those checks also pushes a page.
func writeInlineFanout(t *testing.T, path string, ps int64, root uint64, k int, pushPage bool) {
	t.Helper()
	p := make([]byte, ps)
	binary.LittleEndian.PutUint64(p, root)
	binary.LittleEndian.PutUint16(p[8:], flagLeaf)
	binary.LittleEndian.PutUint16(p[10:], uint16(k))
	elems := p[pageHeaderSize:]
	for level := 0; level < maxBucketDepth; level++ {
		for i := 0; i < k; i++ {
			e := elems[i*leafElemSize:]
			binary.LittleEndian.PutUint32(e[0:], leafFlagBucket)
			binary.LittleEndian.PutUint32(e[4:], uint32((k-i)*leafElemSize)) // every value starts after the elements
			binary.LittleEndian.PutUint32(e[8:], 0)
			binary.LittleEndian.PutUint32(e[12:], uint32(len(elems)-k*leafElemSize))
		}
		v := elems[k*leafElemSize:]
		if level == maxBucketDepth-1 && pushPage {
			binary.LittleEndian.PutUint64(v, 2) // a bucket on page 2
			break
		}
		inline := v[bucketHeaderLen:]
		binary.LittleEndian.PutUint16(inline[8:], flagLeaf)
		if level < maxBucketDepth-1 {
			binary.LittleEndian.PutUint16(inline[10:], uint16(k))
		}
		elems = inline[pageHeaderSize:]
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, int64(root)*ps); err != nil {
		t.Fatal(err)
	}
}

// verifyBounded runs Verify on path and fails the test if it has not
// returned within boundedCheckWait.
func verifyBounded(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := Verify(path)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(boundedCheckWait):
		t.Fatalf("Verify of a %s file of a few pages still runs after %v: the page check's work is not bounded by the file", filepath.Base(path), boundedCheckWait)
		return nil
	}
}

// TestPageCheckInlineFanout names one inline bucket from every element of
// a page, nested maxBucketDepth deep (13 elements fit a 4 KiB page: 13^16
// inline pages for a walk that checks each one each time it is named).
// Verify must refuse the second naming with a DamageError at once. On
// code without the inline set and the budget, the test fails at
// boundedCheckWait (run it under ulimit -v 3000000).
func TestPageCheckInlineFanout(t *testing.T) {
	for _, tc := range []struct {
		name     string
		k        int
		pushPage bool
		want     string
	}{
		{"inline pages", 13, false, "is named by two elements"},
		// The deepest page's elements, checked first, name page 2 twice;
		// refused before the second is pushed, so the stack holds at most
		// one entry a page. (k is 2: on code that pushes each naming, 13
		// would fill memory, not the wait.)
		{"inline pages naming a page", 2, true, "page 2 is reached twice"},
		{"two elements", 2, false, "is named by two elements"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, ps, m := emptyBoltFile(t)
			writeInlineFanout(t, path, ps, m.root, tc.k, tc.pushPage)
			err := verifyBounded(t, path)
			var de *DamageError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify: %v; want a DamageError saying %q", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// TestPageCheckWorkBudget gives the check of one real page a budget
// smaller than the page's own header and elements: the walk stops with
// the budget's finding rather than reading on. (checkPages gives each
// page a budget of its own bytes: bbolt never writes a page whose header,
// elements and inline buckets hold more; only overlapping values can.)
func TestPageCheckWorkBudget(t *testing.T) {
	p := make([]byte, 4096)
	binary.LittleEndian.PutUint16(p[8:], flagLeaf)
	binary.LittleEndian.PutUint16(p[10:], 100)
	for _, tc := range []struct {
		budget uint64
		want   error
	}{
		{pageHeaderSize + 100*leafElemSize, nil},
		{pageHeaderSize + 100*leafElemSize - 1, errBudget},
		{pageHeaderSize - 1, errBudget},
	} {
		c := &treeCheck{budget: tc.budget, push: func(pageWalk) error { return nil }}
		if err := checkTreePage(p, 0, pageWalk{id: 3}, c); !errors.Is(err, tc.want) {
			t.Errorf("budget %d: %v, want %v", tc.budget, err, tc.want)
		}
	}
}

// TestPageCheckSparseFile makes sparse files (a few KiB on disk) whose
// meta page counts every page of their size: one of 256 MiB whose root
// page claims an overflow to the end, which the check must refuse without
// allocating the span, and one of 1 TiB, whose undamaged pages the check
// must pass without allocating for the pages it never reaches. On code
// that reads a page span whatever its size, the first fails on the
// allocation (256 MiB; the attack's 16 GiB file ends the process); on
// code that sizes its set of pages by the count, the second does (32 MiB;
// 16 TiB of 512-byte pages would be 4 GiB).
func TestPageCheckSparseFile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size     int64
		overflow bool   // the root page claims every page after it
		want     string // in the DamageError; "" for none
		maxAlloc uint64
	}{
		{"overflow to the end", 256 << 20, true, "overflow pages", maxPageSpan},
		{"a terabyte", 1 << 40, false, "", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, ps, m := emptyBoltFile(t)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(tc.size); err != nil {
				t.Skipf("this file system holds no sparse file of %d bytes: %v", tc.size, err)
			}
			hwm := uint64(tc.size / ps)
			for _, off := range []int64{0, ps} {
				b := make([]byte, ps)
				if _, err := f.ReadAt(b, off); err != nil {
					t.Fatal(err)
				}
				d := b[pageHeaderSize:]
				binary.LittleEndian.PutUint64(d[32:], noFreelist)
				binary.LittleEndian.PutUint64(d[40:], hwm)
				h := fnv.New64a()
				h.Write(d[:56])
				binary.LittleEndian.PutUint64(d[56:], h.Sum64())
				if _, err := f.WriteAt(b, off); err != nil {
					t.Fatal(err)
				}
			}
			if tc.overflow {
				r := make([]byte, ps)
				if _, err := f.ReadAt(r, int64(m.root)*ps); err != nil {
					t.Fatal(err)
				}
				binary.LittleEndian.PutUint32(r[12:], uint32(hwm-m.root-1))
				if _, err := f.WriteAt(r, int64(m.root)*ps); err != nil {
					t.Fatal(err)
				}
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err = checkPages(f, tc.size)
			runtime.ReadMemStats(&after)
			if allocated := after.TotalAlloc - before.TotalAlloc; allocated > tc.maxAlloc {
				t.Errorf("the check allocated %d bytes for a file of %d pages; want at most %d", allocated, hwm, tc.maxAlloc)
			}
			var de *DamageError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("checkPages: %v; want no finding", err)
			case tc.want != "" && (!errors.As(err, &de) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("checkPages: %v; want a DamageError saying %q", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// TestPageCheckPassesInlineBuckets writes, through bbolt, chains of
// buckets nested maxBucketDepth deep side by side (bbolt keeps the
// deepest of each, small and without sub-buckets, inline in its parent's
// leaf) and expects the page check to find nothing: the inline
// set and the budget refuse only what bbolt never writes.
func TestPageCheckPassesInlineBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inline.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 20; i++ {
			b, err := tx.CreateBucket([]byte{'a' + byte(i)})
			if err != nil {
				return err
			}
			for d := 0; d < maxBucketDepth-1; d++ {
				if err := b.Put([]byte("k"), []byte("v")); err != nil {
					return err
				}
				if b, err = b.CreateBucket([]byte{'n'}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPages(f, fi.Size()); err != nil {
		t.Fatalf("checkPages of a file bbolt wrote: %v", err)
	}
}
