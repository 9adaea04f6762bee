package main

import (
	"bufio"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// unitDirectives reads a unit file in systemd/ into its directives, each
// key with its values in order (comments and section headers dropped).
func unitDirectives(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", name, line)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The unit skips signerd while the PIN refusal marker exists, at the path
// signerd itself uses by default for the store the README configures
// (/var/lib/signerd/signerd.db in StateDirectory=signerd).
func TestUnitSkipsStartWhilePINRefused(t *testing.T) {
	svc := unitDirectives(t, "signerd.service")
	state := svc["StateDirectory"]
	if len(state) != 1 {
		t.Fatalf("StateDirectory= %q, want one", state)
	}
	store := path.Join("/var/lib", state[0], "signerd.db")
	want := "!" + defaultPINRefusedMarker(store)
	found := false
	for _, v := range svc["ConditionPathExists"] {
		found = found || v == want
	}
	if !found {
		t.Errorf("ConditionPathExists= %q does not include %q", svc["ConditionPathExists"], want)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "path: "+store) {
		t.Errorf("README's configuration does not put the store at %s", store)
	}
}
