package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMENamesEveryPackage keeps the README's architecture table true:
// every folder holding Go code is named in it, and it names no folder
// that is gone.
func TestREADMENamesEveryPackage(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "## Architecture\n")
	end := strings.Index(readme[start+1:], "\n## ")
	if start < 0 || end < 0 {
		t.Fatal("README has no Architecture section")
	}
	section := readme[start : start+1+end]
	root := filepath.Join("..", "..")
	packages := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root ||
			path != root && filepath.Dir(path) == root && (d.Name() == "demo" || d.Name() == "demo-ha" || d.Name() == "bin")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".go") {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			packages[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(packages) < 10 {
		t.Fatalf("found %d packages under %s; the walk went wrong", len(packages), root)
	}
	for p := range packages {
		if !strings.Contains(section, "`"+p+"`") {
			t.Errorf("package %s is not in the README's architecture table", p)
		}
	}
	for _, name := range strings.FieldsFunc(section, func(r rune) bool { return r == '`' }) {
		if strings.Contains(name, " ") || !strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz") || strings.ContainsAny(name, "*→.") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(root, name)); err == nil && fi.IsDir() && !packages[name] {
			t.Errorf("the architecture table names %s, which holds no Go code", name)
		}
	}
}
