package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditVerifyChains: a bundle of several nodes' chains is reported
// chain by chain, each with its range, its seals and its verdict, and a
// chain not included with why; an edit to node b's chain fails the
// bundle naming node b and the event; audit show prefixes each event
// with its node and filters by --node. The bundle is audit's
// fixture of chains (nodes a and b, c omitted).
func TestAuditVerifyChains(t *testing.T) {
	fixtures := filepath.Join("..", "..", "audit", "testdata")
	bundle, root := filepath.Join(fixtures, "bundle-chains.jsonl"), filepath.Join(fixtures, "chains-root.pem")
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(raw, []byte("\n"))
	// Line 7 is b's first event (a's header and 4 events, b's header).
	if !bytes.HasPrefix(lines[6], []byte(`{"seq":1,`)) {
		t.Fatalf("fixture line 7 is not b's first event: %.40s", lines[6])
	}
	lines[6] = bytes.Replace(lines[6], []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1)
	edited := filepath.Join(t.TempDir(), "edited.jsonl")
	if err := os.WriteFile(edited, bytes.Join(lines, []byte("\n")), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		args      []string
		code      int
		out       []string
		notIn     string
		lineCount int // of stdout, when not 0
	}{
		{"verify", []string{"audit", "verify", "--root", root, bundle}, 0, []string{
			"chain:    node a: events 1–4, 2 seals, 2 events after its last seal not yet sealed (not in the bundle): OK",
			"chain:    node b: events 1–2, 1 seals, 2 events after its last seal not yet sealed (not in the bundle): OK",
			"chain:    node c: NOT INCLUDED, NOT CHECKED: never sealed",
			"OK:       every hash link and seal verifies, under audit keys certified by the root; NOT CHECKED (not in the bundle): node c\n"}, "PROBLEM", 0},
		{"verify edited", []string{"audit", "verify", "--root", root, edited}, 1, []string{
			"chain:    node a: events 1–4, 2 seals, 2 events after its last seal not yet sealed (not in the bundle): no problem of its own",
			"node b: events 1–2, 1 seals, 2 events after its last seal not yet sealed (not in the bundle): FAILED at event 1 of node b",
			"PROBLEM:  node b: event 1 (line 7): edited",
			"FAILED:   first bad event 1 of node b"}, "OK", 0},
		{"verify edited, JSON", []string{"audit", "verify", "--json", "--root", root, edited}, 1, []string{
			`"first_bad_event": 1`, `"first_bad_node": "b"`, `"omitted": "never sealed`, `"checked": false`, "\n  \"ok\": false"}, "", 0},
		{"show", []string{"audit", "show", "--root", root, bundle}, 0, []string{"a             4  ", "b             2  "}, "", 6},
		{"show node b", []string{"audit", "show", "--root", root, "--node", "b", bundle}, 0, []string{"b             1  "}, "a    ", 2},
		{"show the unnamed chain", []string{"audit", "show", "--root", root, "--node", "-", bundle}, 0, nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := signerctl(t, "", tt.args...)
			ok := code == tt.code && (tt.notIn == "" || !strings.Contains(stdout, tt.notIn))
			for _, want := range tt.out {
				ok = ok && strings.Contains(stdout, want)
			}
			if n := strings.Count(stdout, "\n"); tt.lineCount != 0 && n != tt.lineCount {
				ok = false
			}
			if !ok {
				t.Fatalf("exit %d, want %d with %q and without %q:\n%s%s", code, tt.code, tt.out, tt.notIn, stdout, stderr)
			}
		})
	}
}

// TestAuditVerifyExpectedNodes: --nodes names the chains the auditor
// expects: each must be in the bundle or listed as not included, or the
// bundle fails, naming the node; a name that cannot be a node's is bad
// usage. The bundle is audit's fixture of chains (nodes a and b,
// c listed as never sealed).
func TestAuditVerifyExpectedNodes(t *testing.T) {
	fixtures := filepath.Join("..", "..", "audit", "testdata")
	bundle, root := filepath.Join(fixtures, "bundle-chains.jsonl"), filepath.Join(fixtures, "chains-root.pem")
	tests := []struct {
		name  string
		nodes string
		code  int
		out   []string // on stdout, or stderr for bad usage
		notIn string
	}{
		{"the nodes it holds", "a,b", 0, []string{"OK:  "}, "PROBLEM"},
		{"and the one it lists as not included", "a, b,c", 0, []string{"OK:  ", "NOT CHECKED (not in the bundle): node c"}, "PROBLEM"},
		{"a node it does not list", "a,b,d", 1, []string{
			"PROBLEM:  line 1: node d's chain, expected, is neither in the bundle nor listed as not included", "FAILED"}, "OK:"},
		{"the unnamed chain, which it does not list", "a,-", 1, []string{"PROBLEM:  line 1: the unnamed chain, expected"}, "OK:"},
		{"not a node's name", "a,B", 2, []string{`node name "B"`}, ""},
		{"a node twice", "a,a", 2, []string{`node "a" named twice`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := signerctl(t, "", "audit", "verify", "--root", root, "--nodes", tt.nodes, bundle)
			got := stdout
			if code == 2 {
				got = stderr
			}
			ok := code == tt.code && (tt.notIn == "" || !strings.Contains(got, tt.notIn))
			for _, want := range tt.out {
				ok = ok && strings.Contains(got, want)
			}
			if !ok {
				t.Fatalf("exit %d, want %d with %q and without %q:\n%s%s", code, tt.code, tt.out, tt.notIn, stdout, stderr)
			}
		})
	}
}
