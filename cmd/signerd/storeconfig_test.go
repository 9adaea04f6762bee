package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"signerd/store"
)

// TestStoreConfig: the store is a path, or a mapping with the path, the
// memory map reserved ahead and the stall threshold; anything else in it
// is refused, as an unknown key anywhere is.
func TestStoreConfig(t *testing.T) {
	const head = "hsm: {module: /m.so, token: ca, pin_file: /p}\nissuers: [{key: k, certificate: /c.pem}]\nsocket: {path: /s}\n"
	tests := []struct {
		name, store string
		path        string
		mmap        int
		stall       time.Duration
		err         string
	}{
		{name: "a path", store: "store: /var/lib/signerd/signerd.db", path: "/var/lib/signerd/signerd.db", mmap: store.DefaultInitialMmapSize},
		{name: "a mapping", store: "store: {path: /s.db}", path: "/s.db", mmap: store.DefaultInitialMmapSize},
		{name: "map in GiB", store: "store: {path: /s.db, initial_mmap_size: 4GiB}", path: "/s.db", mmap: 4 << 30},
		{name: "map in MiB", store: "store: {path: /s.db, initial_mmap_size: 512 MiB}", path: "/s.db", mmap: 512 << 20},
		{name: "map in bytes", store: "store: {path: /s.db, initial_mmap_size: 65536}", path: "/s.db", mmap: 65536},
		{name: "no map reserved", store: "store: {path: /s.db, initial_mmap_size: 0}", path: "/s.db", mmap: 0},
		{name: "stall threshold", store: "store: {path: /s.db, write_stall_after: 3s}", path: "/s.db", mmap: store.DefaultInitialMmapSize, stall: 3 * time.Second},
		{name: "no store", store: "", err: "store is required"},
		{name: "mapping without path", store: "store: {write_stall_after: 3s}", err: "store is required"},
		{name: "unknown key", store: "store: {path: /s.db, mmap: 1GiB}", err: `unknown key "mmap"`},
		{name: "bad size", store: "store: {path: /s.db, initial_mmap_size: lots}", err: "want a size"},
		{name: "negative size", store: "store: {path: /s.db, initial_mmap_size: -1}", err: "want a size"},
		{name: "size out of range", store: "store: {path: /s.db, initial_mmap_size: 9999999999GiB}", err: "want a size"},
		{name: "map too large", store: "store: {path: /s.db, initial_mmap_size: 65GiB}", err: "more than"},
		{name: "negative stall", store: "store: {path: /s.db, write_stall_after: -1s}", err: "below 100ms"},
		{name: "stall too short", store: "store: {path: /s.db, write_stall_after: 10ms}", err: "below 100ms"},
		{name: "a list", store: "store: [/s.db]", err: "a path, or a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.yaml")
			if err := os.WriteFile(path, []byte(head+tt.store+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("loaded with %q: %v, want an error with %q", tt.store, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Store.Path != tt.path || c.Store.options().InitialMmapSize != tt.mmap || c.Store.WriteStallAfter.Duration != tt.stall {
				t.Fatalf("%q: path %q, map %d, stall %v", tt.store, c.Store.Path, c.Store.options().InitialMmapSize, c.Store.WriteStallAfter.Duration)
			}
		})
	}
}
