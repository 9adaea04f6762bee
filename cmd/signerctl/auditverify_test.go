package main

import (
	"path/filepath"
	"strings"
	"testing"

	"signerd/engine/enginetest"
)

// TestAuditVerifyNeedsRoot: a bundle checked against nothing but its own
// certificates proves nothing (whoever forges a bundle makes them too), so
// audit verify gives no verdict without --root: it refuses, as bad usage,
// and never prints OK. Against the right root it is OK; against another
// it fails. The bundles are audit's fixtures, a CA made in
// software: to verify without a root, that is as good as a forgery.
func TestAuditVerifyNeedsRoot(t *testing.T) {
	fixtures := filepath.Join("..", "..", "audit", "testdata")
	bundle, root := filepath.Join(fixtures, "bundle-5.jsonl"), filepath.Join(fixtures, "root.pem")
	other := enginetest.WritePEM(t, t.TempDir(), "other-root.pem", "CERTIFICATE", enginetest.SoftwareRoot(t).Raw)
	tests := []struct {
		name       string
		args       []string
		code       int
		out, notIn string // on stdout (or stderr for a refusal)
	}{
		{"no root", []string{bundle}, 2, "needs --root", "OK"},
		{"no root, JSON", []string{"--json", bundle}, 2, "needs --root", "ok"},
		{"its root", []string{"--root", root, bundle}, 0, "OK:       every hash link and seal verifies", "PROBLEM"},
		{"its root, JSON", []string{"--json", "--root", root, bundle}, 0, `"ok": true`, "PROBLEM"},
		{"another root", []string{"--root", other, bundle}, 1, "does not chain to root", "OK"},
		{"another root, JSON", []string{"--root", other, "--json", bundle}, 1, `"ok": false`, `"ok": true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := signerctl(t, "", append([]string{"audit", "verify"}, tt.args...)...)
			got := stdout
			if code == 2 {
				if stdout != "" {
					t.Errorf("refused, yet printed %q", stdout)
				}
				got = stderr
			}
			if code != tt.code || !strings.Contains(got, tt.out) || strings.Contains(got, tt.notIn) {
				t.Fatalf("exit %d, want %d with %q and without %q:\n%s%s", code, tt.code, tt.out, tt.notIn, stdout, stderr)
			}
		})
	}
}
