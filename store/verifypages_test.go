package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// branchyStore writes a store whose certificates bucket is big enough to
// have a branch page at its root, closes it, and returns its path, its
// page size and that root page.
func branchyStore(t *testing.T) (path string, pageSize int, root uint64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCerts)
		for i := 0; i < 3000; i++ {
			if err := b.Put([]byte(fmt.Sprintf("%016x", i)), make([]byte, 100)); err != nil {
				return err
			}
		}
		// Values larger than a page, on overflow pages, as long audit
		// events are (and larger ones each time, so that the check's
		// page buffer must grow).
		for i := 1; i <= 3; i++ {
			if err := b.Put([]byte(fmt.Sprintf("big-%d", i)), bytes.Repeat([]byte{'x'}, i*10000)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket(bucketCerts).Root()); return nil })
	return path, db.Info().PageSize, root
}

// TestVerifyStopsAtDamagedPageStructure damages the page tree of a store
// file the ways that make bbolt loop, crash or allocate without bound (a
// page naming itself as its child, a child naming its parent, a child
// past the file, element and freelist counts larger than their page) and
// expects Verify to return a DamageError naming the page, before any
// record is read and without running out of memory. Run on code without
// the page check, the loop case ends the test process with "fatal error:
// out of memory" (under ulimit -v 3000000).
func TestVerifyStopsAtDamagedPageStructure(t *testing.T) {
	path, ps, root := branchyStore(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := int(root) * ps
	if flags := binary.LittleEndian.Uint16(raw[at+8:]); flags != flagBranch {
		t.Fatalf("the certificates bucket's root page %d has flags %#x, want a branch", root, flags)
	}
	firstChild := binary.LittleEndian.Uint64(raw[at+pageHeaderSize+8:])
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m0, _ := readMeta(f, 0)
	m1, _ := readMeta(f, int64(ps))
	f.Close()
	if m1.txid > m0.txid {
		m0 = m1
	}
	freelist := int(m0.freelist) * ps
	if f, err := os.Open(path); err != nil {
		t.Fatal(err)
	} else if err := checkPages(f, int64(len(raw))); err != nil {
		t.Fatalf("the undamaged file: %v", err)
	} else {
		f.Close()
	}
	cases := []struct {
		name   string
		damage func(b []byte)
		want   string
	}{
		{"page is its own child", func(b []byte) {
			binary.LittleEndian.PutUint64(b[at+pageHeaderSize+8:], root)
		}, fmt.Sprintf("page %d of bucket \"certificates\" is reached twice", root)},
		{"child names its parent", func(b []byte) {
			// the first child's first element (a leaf's flags) is left;
			// the root's second child is pointed back at the root.
			binary.LittleEndian.PutUint64(b[at+pageHeaderSize+branchElemSize+8:], root)
		}, "is reached twice"},
		{"two parents share a child", func(b []byte) {
			binary.LittleEndian.PutUint64(b[at+pageHeaderSize+branchElemSize+8:], firstChild)
		}, fmt.Sprintf("page %d of bucket \"certificates\" is reached twice", firstChild)},
		{"child past the file", func(b []byte) {
			binary.LittleEndian.PutUint64(b[at+pageHeaderSize+8:], 1<<40)
		}, "is outside the file's"},
		{"branch counts more elements than it holds", func(b []byte) {
			binary.LittleEndian.PutUint16(b[at+10:], 0xffff)
		}, "branch page counts 65535 elements"},
		{"overflow past the file", func(b []byte) {
			binary.LittleEndian.PutUint32(b[at+12:], 1<<31)
		}, "pages past the file's"},
		{"freelist counts more than it holds", func(b []byte) {
			binary.LittleEndian.PutUint16(b[freelist+10:], 0xffff)
			binary.LittleEndian.PutUint64(b[freelist+pageHeaderSize:], 1<<62)
		}, "the freelist, counts 4611686018427387904 free pages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), raw...)
			tc.damage(b)
			p := filepath.Join(t.TempDir(), "damaged.db")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := Verify(p)
			var de *DamageError
			if !errors.As(err, &de) || !errors.Is(err, ErrPageStructure) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify: %+v, %v; want a DamageError saying %q", r, err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}
