package ceremony_test

import (
	"os"
	"strings"
	"testing"

	"signerd/hsm"
)

// Two custodians given one share file: the second share cannot be
// written, so the first, the one file this run created, is taken back
// (once), no token is made, and the ceremony runs once the file is fixed.
func TestTokenInitDuplicateSharePath(t *testing.T) {
	r := newRoom(t)
	file := r.variant(t, "01-token-init.yaml", "x-token-init.yaml", "share: pin-share-4.pem", "share: ./pin-share-2.pem")
	out, err := r.run(t, file, false)
	if err == nil || !strings.Contains(out, "pin-share-2.pem exists") {
		t.Fatalf("duplicate share path: %v, want refused as existing\n%s", err, out)
	}
	if strings.Count(out, "removed "+r.path("pin-share-2.pem")) != 1 {
		t.Errorf("the shared file was not taken back exactly once:\n%s", out)
	}
	if present, err := hsm.TokenPresent(os.Getenv("SIGNERD_SOFTHSM_SM2"), "ca"); err != nil || present {
		t.Fatalf("token present %v (%v) after a failed share write", present, err)
	}
	for _, s := range []string{"pin-share-1.pem", "pin-share-2.pem", "pin-share-3.pem", "pin-share-5.pem"} {
		if _, err := os.Lstat(r.path(s)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", s, err)
		}
	}
	if out := r.mustRun(t, "01-token-init.yaml"); !strings.Contains(out, "read back") {
		t.Errorf("re-run did not write and read back its shares:\n%s", out)
	}
}
