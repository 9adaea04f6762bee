package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"signerd/hsm/hsmtest"
)

// TestCeremonyCommand runs the first documented ceremony through the
// binary, with --dry-run on either side of the file, and checks the exit
// codes operators script against.
func TestCeremonyCommand(t *testing.T) {
	hsmtest.NewDir(t)
	t.Setenv("SIGNERD_SOFTHSM_SM2", hsmtest.SM2Module(t))
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(hsmtest.RepoRoot(t), "docs/ceremonies/01-token-init.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "init.yaml")
	os.WriteFile(file, data, 0o644)
	os.WriteFile(filepath.Join(dir, "so.pin"), []byte("so-pin-0000\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "chen-jie.passphrase"), []byte("plum blossom in winter\n"), 0o600)

	run := func(args ...string) (string, int) {
		out, err := exec.Command(bins.signerctl, args...).CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ceremony", "run", file, "--dry-run"}, 0, "dry run: all checks passed"},
		{[]string{"ceremony", "run", "--dry-run", file}, 0, "dry run: all checks passed"},
		{[]string{"ceremony", "run"}, 2, "usage"},
		{[]string{"ceremony", "run", file, "--force"}, 2, "unknown flag"},
		{[]string{"ceremony", "run", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{[]string{"ceremony", "run", file}, 0, "ceremony complete"},
		{[]string{"ceremony", "run", file}, 1, "exists"},
	} {
		out, code := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Fatalf("signerctl %v: exit %d, want %d with %q\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pin-share-3.pem")); err != nil {
		t.Fatal(err)
	}
}
