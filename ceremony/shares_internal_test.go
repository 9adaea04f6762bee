package ceremony

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"signerd/hsm/split"
)

// A share file that someone else creates after the ceremony checked its
// outputs, and before it creates the file itself, is not the ceremony's:
// the write fails (a ceremony never overwrites), and taking back the
// shares of the failed run removes exactly the files this run created,
// never the other's. The other's file is put in the way from inside the
// exclusive open, the one moment no real file system offers on demand.
func TestFailedShareWriteTakesBackOnlyItsOwnFiles(t *testing.T) {
	dir := t.TempDir()
	spec := SplitSpec{Threshold: 2}
	for _, name := range []string{"a", "b", "c"} {
		spec.Custodians = append(spec.Custodians, Custodian{Name: name, Share: filepath.Join(dir, "share-"+name)})
	}
	shares, err := split.Split(split.PIN, []byte("share-race-pin"), 2, spec.names())
	if err != nil {
		t.Fatal(err)
	}
	theirs := spec.Custodians[1].Share
	r := &runner{openFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
		if name == theirs {
			if err := os.WriteFile(name, []byte("someone else's file\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return os.OpenFile(name, flag, perm)
	}}
	if err := r.outputsAbsent(spec.outputs()...); err != nil {
		t.Fatal(err)
	}
	written, err := r.writeShares(spec, shares, make([][]byte, len(shares)))
	if err == nil {
		t.Fatal("a share written over someone else's file")
	}
	if want := []string{spec.Custodians[0].Share}; !slices.Equal(written, want) {
		t.Errorf("written %q, want only %q (the file this run created)", written, want)
	}
	r.removeShares(written)
	if got, err := os.ReadFile(theirs); err != nil || string(got) != "someone else's file\n" {
		t.Errorf("the other's file after the take-back: %q, %v", got, err)
	}
	for _, c := range []Custodian{spec.Custodians[0], spec.Custodians[2]} {
		if _, err := os.Lstat(c.Share); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", c.Share, err)
		}
	}
}

// A share file this run created and someone then replaced (renamed their
// own file over it) before the take-back is theirs now, and stays.
func TestShareTakeBackLeavesAReplacedFile(t *testing.T) {
	dir := t.TempDir()
	spec := SplitSpec{Threshold: 2, Custodians: []Custodian{{Name: "a", Share: filepath.Join(dir, "share-a")},
		{Name: "b", Share: filepath.Join(dir, "share-b")}}}
	shares, err := split.Split(split.PIN, []byte("share-replace-pin"), 2, spec.names())
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{}
	written, err := r.writeShares(spec, shares, make([][]byte, len(shares)))
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("someone else's file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, spec.Custodians[0].Share); err != nil {
		t.Fatal(err)
	}
	r.removeShares(written)
	if got, err := os.ReadFile(spec.Custodians[0].Share); err != nil || string(got) != "someone else's file\n" {
		t.Errorf("the replacement after the take-back: %q, %v", got, err)
	}
	if _, err := os.Lstat(spec.Custodians[1].Share); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", spec.Custodians[1].Share, err)
	}
}
