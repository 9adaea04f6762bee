package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestUnitFile runs systemd's own checks on systemd/ocsp-responder.service
// and prints its exposure level. What remains exposed is what a network
// service needs: AF_INET/AF_INET6, and IP traffic from anyone (no
// IPAddressDeny=: the responder serves the public).
func TestUnitFile(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not installed: make deps installs it (Debian package systemd)")
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "systemd", "ocsp-responder.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict", "PrivateDevices=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service", "MemoryMax="} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	dir := t.TempDir()
	// verify wants ExecStart's binary to exist.
	text := strings.ReplaceAll(string(raw), "/usr/local/bin/ocsp-responder", responderBin)
	unit := filepath.Join(dir, "ocsp-responder.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for ocsp-responder.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure level %.1f; still exposed:\n%s", level, exposed(string(out)))
	if level > 1.1 {
		t.Errorf("exposure level %.1f, want at most 1.1:\n%s", level, out)
	}
}

// exposed is the lines of systemd-analyze security that count against the unit.
func exposed(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "✗") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}
