package ceremony

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds ceremony loading arbitrary files, seeded with the
// documented ceremonies. Nothing panics, and a file either loads as a
// known type or is refused with an error.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob("../docs/ceremonies/*.yaml")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no documented ceremonies to seed with: %v", err)
	}
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("type: root\ntype: root\n"))
	f.Add([]byte("type: token-init\n--- \ntype: root\n"))
	f.Add([]byte("&a [*a, *a]"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "ceremony.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err == nil && (c == nil || c.c == nil || types[c.Type] == nil) {
			t.Fatalf("loaded without a known type: %+v", c)
		}
	})
}
