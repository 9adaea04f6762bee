package ceremony_test

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"signerd/hsm"
)

// token-init writes and reads back every PIN share before it initialises
// the token. When a share cannot be written (its folder is read-only), the
// token is left untouched, the shares already written are taken back, and
// the same ceremony runs again once the folder is writable.
func TestTokenInitWritesSharesBeforeTheToken(t *testing.T) {
	r := newRoom(t)
	vault := r.path("vault")
	if err := os.Mkdir(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	writable := readOnlyFolder(t, vault)
	file := r.variant(t, "01-token-init.yaml", "x-token-init.yaml", "share: pin-share-5.pem", "share: vault/pin-share-5.pem")

	out, err := r.run(t, file, false)
	if err == nil || !strings.Contains(err.Error(), "pin-share-5.pem") {
		t.Fatalf("token-init with a read-only share folder: %v, want the share named\n%s", err, out)
	}
	if present, err := hsm.TokenPresent(os.Getenv("SIGNERD_SOFTHSM_SM2"), "ca"); err != nil || present {
		t.Fatalf("token ca present %v (%v) after the shares failed: its PIN is held by nobody\n%s", present, err, out)
	}
	for _, s := range []string{"pin-share-1.pem", "pin-share-2.pem", "pin-share-3.pem", "pin-share-4.pem", "vault/pin-share-5.pem"} {
		if _, err := os.Lstat(r.path(s)); !os.IsNotExist(err) {
			t.Errorf("%s left behind by the failed ceremony: %v", s, err)
		}
	}

	writable()
	out = r.mustRun(t, file)
	if !strings.Contains(out, "all 5 share files read back") {
		t.Errorf("transcript does not show the shares read back before the token:\n%s", out)
	}
	m, err := r.open(t, "ca", tokens["ca"]...)
	if err != nil {
		t.Fatalf("log in with three shares of the re-run: %v", err)
	}
	m.Close()
}

// readOnlyFolder makes dir refuse new files, even to root (a read-only
// tmpfs mounted on it; for other users, mode 0500), and returns what makes
// it writable again.
func readOnlyFolder(t *testing.T, dir string) (writable func()) {
	t.Helper()
	if os.Getuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		return func() { os.Chmod(dir, 0o700) }
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount a read-only tmpfs on %s: %v", dir, err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Fatalf("unmount %s: %v", dir, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// A run stopped between its shares and the token (a crash) leaves shares
// and no token: the next run refuses to overwrite them, and says that they
// hold a PIN no token has and may be removed.
func TestTokenInitAfterAStopBeforeTheToken(t *testing.T) {
	r := newRoom(t)
	if err := os.WriteFile(r.path("pin-share-3.pem"), []byte("left by a stopped run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := r.run(t, "01-token-init.yaml", false)
	if err == nil || !strings.Contains(err.Error(), "hold a PIN no token has") {
		t.Fatalf("token-init over a stopped run's shares: %v, want the shares explained\n%s", err, out)
	}
	if data, _ := os.ReadFile(r.path("pin-share-3.pem")); string(data) != "left by a stopped run\n" {
		t.Fatal("token-init changed a share it did not write")
	}
}
