package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const issuer = "0a1b2c"

func openDir(t *testing.T, keep int) *Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "pub"), keep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func readRel(t *testing.T, d *Dir, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Path(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listing is every name under the directory, sorted, with "/" separators.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func crl(s Series, n uint64) []byte {
	return fmt.Appendf(nil, "crl %s/%d/%v/%d", s.Issuer, s.Shard, s.Delta, n)
}

func TestPutCRLSequence(t *testing.T) {
	full := Series{Issuer: issuer, Shard: 1}
	delta := Series{Issuer: issuer, Shard: 1, Delta: true}
	shard10 := Series{Issuer: issuer, Shard: 10}
	type put struct {
		s          Series
		n          uint64
		der        []byte // nil: crl(s, n)
		wantLatest bool
		wantErr    error
	}
	tests := []struct {
		name  string
		keep  int
		puts  []put
		files []string
		// stable content expected per series: the number whose crl() it holds
		stable map[Series]uint64
	}{
		{
			name:   "names of full and delta",
			keep:   5,
			puts:   []put{{s: full, n: 1, wantLatest: true}, {s: delta, n: 2, wantLatest: true}},
			files:  []string{"0a1b2c/1-1.crl", "0a1b2c/1-delta-2.crl", "0a1b2c/1-delta.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 1, delta: 2},
		},
		{
			name: "keep prunes the lowest numbers",
			keep: 3,
			puts: []put{
				{s: full, n: 1, wantLatest: true}, {s: full, n: 2, wantLatest: true}, {s: full, n: 3, wantLatest: true},
				{s: full, n: 4, wantLatest: true}, {s: full, n: 15, wantLatest: true},
			},
			files:  []string{"0a1b2c/1-15.crl", "0a1b2c/1-3.crl", "0a1b2c/1-4.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 15},
		},
		{
			name: "pruning one series leaves the others",
			keep: 1,
			puts: []put{
				{s: full, n: 1, wantLatest: true}, {s: delta, n: 1, wantLatest: true}, {s: shard10, n: 1, wantLatest: true},
				{s: full, n: 2, wantLatest: true},
			},
			files: []string{
				"0a1b2c/1-2.crl", "0a1b2c/1-delta-1.crl", "0a1b2c/1-delta.crl", "0a1b2c/1.crl",
				"0a1b2c/10-1.crl", "0a1b2c/10.crl",
			},
			stable: map[Series]uint64{full: 2, delta: 1, shard10: 1},
		},
		{
			name: "latest never goes back",
			keep: 5,
			puts: []put{
				{s: full, n: 5, wantLatest: true}, {s: full, n: 3, wantLatest: false}, {s: full, n: 4, wantLatest: false},
			},
			files:  []string{"0a1b2c/1-3.crl", "0a1b2c/1-4.crl", "0a1b2c/1-5.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 5},
		},
		{
			name:   "a number below the kept window is not kept",
			keep:   2,
			puts:   []put{{s: full, n: 5, wantLatest: true}, {s: full, n: 6, wantLatest: true}, {s: full, n: 1, wantLatest: false}},
			files:  []string{"0a1b2c/1-5.crl", "0a1b2c/1-6.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 6},
		},
		{
			name: "republishing the same bytes is idempotent",
			keep: 5,
			puts: []put{
				{s: full, n: 1, wantLatest: true}, {s: full, n: 2, wantLatest: true},
				{s: full, n: 2, wantLatest: true}, {s: full, n: 1, wantLatest: false},
			},
			files:  []string{"0a1b2c/1-1.crl", "0a1b2c/1-2.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 2},
		},
		{
			name: "other bytes under a published number are refused",
			keep: 5,
			puts: []put{
				{s: full, n: 1, wantLatest: true}, {s: full, n: 2, wantLatest: true},
				{s: full, n: 2, der: []byte("other"), wantErr: ErrConflict},
				{s: full, n: 1, der: crl(full, 1)[:5], wantErr: ErrConflict},
			},
			files:  []string{"0a1b2c/1-1.crl", "0a1b2c/1-2.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 2},
		},
		{
			name:   "number zero and the largest number",
			keep:   5,
			puts:   []put{{s: full, n: 0, wantLatest: true}, {s: full, n: 1<<64 - 1, wantLatest: true}},
			files:  []string{"0a1b2c/1-0.crl", "0a1b2c/1-18446744073709551615.crl", "0a1b2c/1.crl"},
			stable: map[Series]uint64{full: 1<<64 - 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := openDir(t, tt.keep)
			for i, p := range tt.puts {
				der := p.der
				if der == nil {
					der = crl(p.s, p.n)
				}
				latest, err := d.PutCRL(p.s, p.n, der)
				if !errors.Is(err, p.wantErr) {
					t.Fatalf("put %d (%+v #%d): err %v, want %v", i, p.s, p.n, err, p.wantErr)
				}
				if err != nil {
					if !strings.Contains(err.Error(), d.Path()) {
						t.Errorf("put %d: error %q does not name the file", i, err)
					}
					continue
				}
				if latest != p.wantLatest {
					t.Errorf("put %d (%+v #%d): latest %v, want %v", i, p.s, p.n, latest, p.wantLatest)
				}
			}
			if got := listing(t, d.Path()); !slices.Equal(got, tt.files) {
				t.Errorf("files\n got %q\nwant %q", got, tt.files)
			}
			for s, n := range tt.stable {
				if got := readRel(t, d, s.latestName()); !bytes.Equal(got, crl(s, n)) {
					t.Errorf("%s holds %q, want number %d", s.latestName(), got, n)
				}
				got, ok, err := d.LatestCRL(s)
				if err != nil || !ok || got != n {
					t.Errorf("LatestCRL(%+v) = %d, %v, %v; want %d", s, got, ok, err, n)
				}
			}
			// Every numbered file holds what was published under its number.
			for _, f := range tt.files {
				shard, isDelta, n, ok := parseNumbered(filepath.Base(f))
				if !ok {
					continue
				}
				s := Series{Issuer: issuer, Shard: shard, Delta: isDelta}
				if got := readRel(t, d, f); !bytes.Equal(got, crl(s, n)) {
					t.Errorf("%s holds %q", f, got)
				}
			}
		})
	}
}

func TestModesWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	d := openDir(t, 0)
	if d.keep != DefaultKeep {
		t.Errorf("keep %d, want the default %d", d.keep, DefaultKeep)
	}
	s := Series{Issuer: issuer, Shard: 0}
	if _, err := d.PutCRL(s, 1, crl(s, 1)); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFile("ocsp/deep/er/resp.der", []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]os.FileMode{
		".": fs.ModeDir | 0o755, issuer: fs.ModeDir | 0o755, "ocsp/deep/er": fs.ModeDir | 0o755,
		"0a1b2c/0.crl": 0o644, "0a1b2c/0-1.crl": 0o644, "ocsp/deep/er/resp.der": 0o640,
	} {
		fi, err := os.Stat(filepath.Join(d.Path(), rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
	}
}

func TestBadNamesRefused(t *testing.T) {
	d := openDir(t, 3)
	for _, s := range []Series{
		{Issuer: ""}, {Issuer: "../x"}, {Issuer: "ABCD"}, {Issuer: "0g"}, {Issuer: "/abs"},
		{Issuer: "ab/cd"}, {Issuer: strings.Repeat("a", 129)}, {Issuer: "ab", Shard: -1},
		{Issuer: "ab", Shard: 65536}, {Issuer: "ab\n"}, {Issuer: ".tmp-ab"},
	} {
		if _, err := d.PutCRL(s, 1, []byte("x")); !errors.Is(err, ErrInvalidName) {
			t.Errorf("PutCRL(%+v): err %v, want ErrInvalidName", s, err)
		}
		if _, _, err := d.LatestCRL(s); !errors.Is(err, ErrInvalidName) {
			t.Errorf("LatestCRL(%+v): err %v, want ErrInvalidName", s, err)
		}
	}
	if _, err := d.PutCRL(Series{Issuer: strings.Repeat("f", 128)}, 1, []byte("x")); err != nil {
		t.Errorf("a 128-digit issuer: %v", err)
	}
	if _, err := d.PutCRL(Series{Issuer: "ab"}, 1, nil); err == nil {
		t.Error("an empty CRL was published")
	}
	for _, rel := range []string{
		"", ".", "/abs", "/", "../x", "a/../../x", "a/../b", "a//b", "./a", "a/", "a/.", "..",
		".tmp-x", "a/.tmp-x", ".tmp-d/x", `a\b`,
	} {
		if err := d.WriteFile(rel, []byte("x"), 0o644); !errors.Is(err, ErrInvalidName) {
			t.Errorf("WriteFile(%q): err %v, want ErrInvalidName", rel, err)
		}
	}
	want := []string{strings.Repeat("f", 128) + "/0-1.crl", strings.Repeat("f", 128) + "/0.crl"}
	if got := listing(t, filepath.Dir(d.Path())); !slices.Equal(got, prefixed("pub/", want)) {
		t.Errorf("refused writes left files: %q", got)
	}
}

func prefixed(p string, names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, p+n)
	}
	return out
}

// A symbolic link inside the directory must not carry a write outside it: the directory is
// served to the world, and whoever can plant a link there must not gain signerd's writes.
func TestSymlinkOutsideRefused(t *testing.T) {
	d := openDir(t, 3)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(d.Path(), "abcd")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.PutCRL(Series{Issuer: "abcd"}, 1, []byte("x")); err == nil {
		t.Error("published through a link leading outside")
	}
	if err := d.WriteFile("abcd/x", []byte("x"), 0o644); err == nil {
		t.Error("wrote through a link leading outside")
	}
	if got := listing(t, outside); len(got) != 0 {
		t.Errorf("files appeared outside: %q", got)
	}
}

func TestOpen(t *testing.T) {
	t.Run("keep below zero", func(t *testing.T) {
		if _, err := Open(t.TempDir(), -1); err == nil {
			t.Error("keep -1 accepted")
		}
	})
	t.Run("missing parent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "no", "pub")
		if _, err := Open(dir, 1); err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("err %v, want one naming %s", err, dir)
		}
	})
	t.Run("a file, not a directory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		if _, err := Open(f, 1); err == nil {
			t.Error("a regular file opened as the directory")
		}
	})
	t.Run("leftover temporaries removed, everything else kept", func(t *testing.T) {
		dir := t.TempDir()
		for _, rel := range []string{".tmp-1", "ab/.tmp-2", "ab/cd/.tmp-3", "ab/1.crl", "ab/.hidden", "ab/tmp-4", ".tmpx"} {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755)
			if err := os.WriteFile(filepath.Join(dir, rel), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d, err := Open(dir, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		want := []string{".tmpx", "ab/.hidden", "ab/1.crl", "ab/tmp-4"}
		if got := listing(t, dir); !slices.Equal(got, want) {
			t.Errorf("after Open: %q, want %q", got, want)
		}
	})
}

// LatestCRL reports what the stable name holds, not merely the highest number present: a
// crash after the numbered write and before the stable write must show as unpublished.
func TestLatestAfterInterruptedPublish(t *testing.T) {
	d := openDir(t, 3)
	s := Series{Issuer: issuer, Shard: 2, Delta: true}
	if n, ok, err := d.LatestCRL(s); n != 0 || ok || err != nil {
		t.Fatalf("empty: LatestCRL = %d, %v, %v", n, ok, err)
	}
	for n := uint64(1); n <= 4; n++ {
		if _, err := d.PutCRL(s, n, crl(s, n)); err != nil {
			t.Fatal(err)
		}
	}
	// What a crash between the two writes of number 5 leaves.
	if err := d.WriteFile(s.numberedName(5), crl(s, 5), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := d.LatestCRL(s); n != 4 || !ok || err != nil {
		t.Fatalf("interrupted: LatestCRL = %d, %v, %v; want 4", n, ok, err)
	}
	if latest, err := d.PutCRL(s, 5, crl(s, 5)); !latest || err != nil {
		t.Fatalf("republish: %v, %v", latest, err)
	}
	if n, ok, err := d.LatestCRL(s); n != 5 || !ok || err != nil {
		t.Fatalf("republished: LatestCRL = %d, %v, %v; want 5", n, ok, err)
	}
	// A stable name matching no numbered file (removed by hand) is reported as nothing known.
	os.Remove(filepath.Join(d.Path(), s.numberedName(5)))
	if n, ok, err := d.LatestCRL(s); ok || err != nil {
		t.Fatalf("stable without its number: LatestCRL = %d, %v, %v; want none", n, ok, err)
	}
	os.Remove(filepath.Join(d.Path(), s.latestName()))
	if n, ok, err := d.LatestCRL(s); ok || err != nil {
		t.Fatalf("no stable name: LatestCRL = %d, %v, %v; want none", n, ok, err)
	}
}

func TestConcurrentPuts(t *testing.T) {
	d := openDir(t, 4)
	const writers, each = 8, 25
	var series []Series
	for shard := range 3 {
		series = append(series, Series{Issuer: issuer, Shard: shard}, Series{Issuer: "ff", Shard: shard, Delta: true})
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*len(series))
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := uint64(i*writers + w + 1)
				for _, s := range series {
					if _, err := d.PutCRL(s, n, crl(s, n)); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	const highest = writers * each
	for _, s := range series {
		if got := readRel(t, d, s.latestName()); !bytes.Equal(got, crl(s, highest)) {
			t.Errorf("%s holds %q, want number %d", s.latestName(), got, highest)
		}
		nums := numbersOnDisk(t, d, s)
		if want := []uint64{highest - 3, highest - 2, highest - 1, highest}; !slices.Equal(nums, want) {
			t.Errorf("%+v keeps %v, want %v", s, nums, want)
		}
	}
	for _, name := range listing(t, d.Path()) {
		if strings.Contains(name, tempPrefix) {
			t.Errorf("temporary left behind: %s", name)
		}
	}
}

// numbersOnDisk lists the series' numbered files as the directory has them, not as the Dir
// remembers them.
func numbersOnDisk(t *testing.T, d *Dir, s Series) []uint64 {
	t.Helper()
	found, err := d.scanIssuer(s.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	return found[s]
}

func TestOneOwnerAtATime(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 1); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: err %v, want ErrInUse", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Open(dir, 1)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	d2.Close()
}

// A Dir opened on a directory a previous process published into goes by the files there:
// the latest name does not go back and pruning counts the old numbers.
func TestReopenGoesByTheFilesPresent(t *testing.T) {
	dir := t.TempDir()
	s := Series{Issuer: issuer, Shard: 3}
	d, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for n := uint64(1); n <= 3; n++ {
		if _, err := d.PutCRL(s, n, crl(s, n)); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	d, err = Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, ok, err := d.LatestCRL(s); n != 3 || !ok || err != nil {
		t.Fatalf("LatestCRL = %d, %v, %v; want 3", n, ok, err)
	}
	if latest, err := d.PutCRL(s, 2, crl(s, 2)); latest || err != nil {
		t.Fatalf("republish of 2: latest %v, %v; want not latest", latest, err)
	}
	if _, err := d.PutCRL(s, 3, []byte("other")); !errors.Is(err, ErrConflict) {
		t.Fatalf("other bytes under 3: %v", err)
	}
	if latest, err := d.PutCRL(s, 4, crl(s, 4)); !latest || err != nil {
		t.Fatalf("4: latest %v, %v", latest, err)
	}
	if got := numbersOnDisk(t, d, s); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("kept %v, want [3 4]", got)
	}
	if got := readRel(t, d, s.latestName()); !bytes.Equal(got, crl(s, 4)) {
		t.Errorf("stable holds %q", got)
	}
}
