package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"signerd/engine/enginetest"
)

func TestAuditCommands(t *testing.T) {
	sock, ca := startSignerd(t)
	dir := t.TempDir()
	root := enginetest.WritePEM(t, dir, "root.pem", "CERTIFICATE", ca.Root.Raw)
	var serials []string
	for i := range 3 {
		_, csr := enginetest.NewCSR(t)
		csrPath := enginetest.WritePEM(t, dir, fmt.Sprintf("req-%d.pem", i), "CERTIFICATE REQUEST", csr)
		_, stderr, code := signerctl(t, sock, "issue", "-request-id", fmt.Sprintf("audit-%d", i), "-profile", "person-sign",
			"-subject", "CN=李四,C=CN", "-csr", csrPath, "-out", filepath.Join(dir, fmt.Sprintf("cert-%d.pem", i)))
		if code != 0 {
			t.Fatalf("issue: exit %d: %s", code, stderr)
		}
		serial, _, _ := strings.Cut(strings.TrimPrefix(stderr, "serial "), ",")
		serials = append(serials, serial)
	}
	if _, stderr, code := signerctl(t, sock, "revoke", "-serial", serials[1], "-reason", "keyCompromise"); code != 0 {
		t.Fatalf("revoke: %s", stderr)
	}

	// The two commands of the README.
	bundle := filepath.Join(dir, "audit.jsonl")
	out, stderr, code := signerctl(t, sock, "audit", "export", "--out", bundle)
	if code != 0 || strings.Contains(out, "OK:") || !strings.Contains(out, "UNVERIFIED: self-consistent only") || !strings.Contains(out, "NOT CHECKED") {
		t.Fatalf("audit export without --root: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = signerctl(t, sock, "audit", "verify", bundle, "--root", root)
	if code != 0 || !strings.Contains(out, "OK:") || !strings.Contains(out, "chain to the root given") {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := signerctl(t, sock, "audit", "export", "--out", bundle); code != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("export over an existing file: exit %d: %s", code, stderr)
	}

	t.Run("tampered", func(t *testing.T) {
		raw, _ := os.ReadFile(bundle)
		lines := bytes.Split(raw, []byte("\n"))
		// Event on line 5 (the fourth event; the log starts at 1).
		lines[4] = bytes.Replace(lines[4], []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1)
		bad := filepath.Join(dir, "edited.jsonl")
		os.WriteFile(bad, bytes.Join(lines, []byte("\n")), 0o600)
		out, _, code := signerctl(t, sock, "audit", "verify", "--root", root, bad)
		if code != 1 || !strings.Contains(out, "FAILED:   first bad event 4") {
			t.Fatalf("edited bundle: exit %d\n%s", code, out)
		}
		out, _, code = signerctl(t, sock, "audit", "verify", "--json", "--root", root, bad)
		if code != 1 || !strings.Contains(out, `"first_bad_event": 4`) {
			t.Fatalf("edited bundle, JSON: exit %d\n%s", code, out)
		}
		other := enginetest.WritePEM(t, dir, "other-root.pem", "CERTIFICATE", enginetest.SoftwareRoot(t).Raw)
		if out, _, code := signerctl(t, sock, "audit", "verify", "--root", other, bundle); code != 1 || !strings.Contains(out, "does not chain") {
			t.Fatalf("wrong root: exit %d\n%s", code, out)
		}
	})

	t.Run("show", func(t *testing.T) {
		tests := []struct {
			name  string
			args  []string
			lines int
			want  string
		}{
			{"by serial", []string{"--serial", serials[1], bundle}, 2, "certificate.revoke"},
			// signerd's own certificates are issued too: the audit key's,
			// and at start, before the test's, its OCSP responder's.
			{"by action", []string{bundle, "--action", "certificate.issue"}, 5, "signerd-ocsp-responder"},
			{"by action family", []string{"--action", "certificate.*", bundle}, 6, "certificate.revoke"},
			{"by actor", []string{"--actor", fmt.Sprint(os.Getuid()), "--action", "certificate.*", bundle}, 4, "auditor+ra"},
			{"system", []string{"--actor", "system", "--action", "signerd.start", bundle}, 1, "signerd.start"},
			{"future", []string{"--since", "2099-01-01", bundle}, 0, ""},
			// Without a file: a fresh export, which holds the earlier one
			// (each export is recorded after its bundle's last seal).
			{"live", []string{"--action", "audit.export"}, 1, "audit.export"},
		}
		for _, tt := range tests {
			out, stderr, code := signerctl(t, sock, append([]string{"audit", "show"}, tt.args...)...)
			if n := strings.Count(out, "\n"); code != 0 || n != tt.lines || !strings.Contains(out, tt.want) {
				t.Errorf("%s: exit %d, %d lines, want %d with %q\n%s%s", tt.name, code, n, tt.lines, tt.want, out, stderr)
			}
		}
	})
}
