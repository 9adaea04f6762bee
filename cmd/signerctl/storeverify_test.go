package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"signerd/store"
)

// TestStoreVerifyLoopedFile: a store file whose audit bucket has a branch
// page naming itself as its child gets one line naming the page and the
// bucket, exit 1, and no crash. On the code before, store verify walked
// the loop until the stack or memory ran out ("fatal error: stack
// overflow" or "out of memory", exit 2).
func TestStoreVerifyLoopedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "looped.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		for i := 0; i < 3000; i++ {
			if err := b.Put([]byte(fmt.Sprintf("%016x", i)), make([]byte, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket([]byte("audit")).Root()); return nil })
	ps := int64(db.Info().PageSize)
	db.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var child [8]byte
	binary.LittleEndian.PutUint64(child[:], root)
	if _, err := f.WriteAt(child[:], int64(root)*ps+16+8); err != nil { // first branch element's page
		t.Fatal(err)
	}
	f.Close()
	stdout, stderr, code := signerctl(t, "", "store", "verify", path)
	lines := strings.Split(strings.TrimSpace(stdout+stderr), "\n")
	want := fmt.Sprintf(`page %d of bucket "audit" is reached twice`, root)
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Fatalf("store verify of a looped file: exit %d, %q; want exit 1 and one line saying %s", code, stdout+stderr, want)
	}
	t.Log(lines[0])
}
