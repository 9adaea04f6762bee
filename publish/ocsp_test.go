package publish

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOCSPName(t *testing.T) {
	tests := []struct {
		issuer string
		serial []byte
		want   string // "": ErrInvalidName
	}{
		{"0a1b2c", []byte{0x7a, 0x01}, "ocsp/0a1b2c/7a01.der"},
		{"0a1b2c", []byte{0xff}, "ocsp/0a1b2c/ff.der"},
		{"0a1b2c", bytes.Repeat([]byte{0xab}, 20), "ocsp/0a1b2c/" + strings.Repeat("ab", 20) + ".der"},
		{"0A1B2C", []byte{1}, ""},
		{"../x", []byte{1}, ""},
		{"", []byte{1}, ""},
		{"0a1b2c", nil, ""},
		{"0a1b2c", []byte{0, 0x80}, ""},
		{"0a1b2c", bytes.Repeat([]byte{1}, 21), ""},
	}
	for _, tc := range tests {
		got, err := OCSPName(tc.issuer, tc.serial)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("OCSPName(%q, %x) = %q, %v; want ErrInvalidName", tc.issuer, tc.serial, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("OCSPName(%q, %x) = %q, %v; want %q", tc.issuer, tc.serial, got, err, tc.want)
		}
	}
}

func TestPutOCSP(t *testing.T) {
	d := openDir(t, 0)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	batch := []OCSPResponse{
		{Issuer: "0a", Serial: []byte{1}, DER: []byte("one")},
		{Issuer: "0a", Serial: []byte{2}, DER: []byte("two")},
		{Issuer: "0b", Serial: []byte{1}, DER: []byte("other issuer")},
		{Issuer: "0a", Serial: []byte{1}, DER: []byte("one, later in the batch")},
	}
	if err := d.PutOCSP(batch); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ocsp/0a/01.der": "one, later in the batch", "ocsp/0a/02.der": "two", "ocsp/0b/01.der": "other issuer"}
	names := listing(t, d.Path())
	if len(names) != len(want) {
		t.Fatalf("files %q, want %d", names, len(want))
	}
	for name, content := range want {
		if got := readRel(t, d, name); string(got) != content {
			t.Errorf("%s holds %q, want %q", name, got, content)
		}
		fi, err := os.Stat(filepath.Join(d.Path(), name))
		if err != nil || fi.Mode().Perm() != fileMode {
			t.Errorf("%s: mode %v, %v; want %v whatever the umask", name, fi.Mode(), err, os.FileMode(fileMode))
		}
	}
	if got, err := d.ReadOCSP("0a", []byte{2}); err != nil || string(got) != "two" {
		t.Errorf("ReadOCSP = %q, %v", got, err)
	}
	// Replaced by a later batch, then removed (twice: the second is no error).
	if err := d.PutOCSP([]OCSPResponse{{Issuer: "0a", Serial: []byte{2}, DER: []byte("two, refreshed")}}); err != nil {
		t.Fatal(err)
	}
	if got := readRel(t, d, "ocsp/0a/02.der"); string(got) != "two, refreshed" {
		t.Errorf("after refresh: %q", got)
	}
	for range 2 {
		if err := d.RemoveOCSP("0a", []byte{2}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := d.ReadOCSP("0a", []byte{2}); got != nil || err != nil {
		t.Errorf("after RemoveOCSP: %q, %v", got, err)
	}
}

// A batch with one bad entry publishes nothing and leaves no temporary.
func TestPutOCSPRefusesBadBatch(t *testing.T) {
	for _, bad := range []OCSPResponse{
		{Issuer: "0a", Serial: []byte{0, 1}, DER: []byte("x")},
		{Issuer: "0A", Serial: []byte{1}, DER: []byte("x")},
		{Issuer: "0a", Serial: []byte{3}},
	} {
		d := openDir(t, 0)
		err := d.PutOCSP([]OCSPResponse{{Issuer: "0a", Serial: []byte{1}, DER: []byte("good")}, bad})
		if err == nil {
			t.Errorf("%+v accepted", bad)
		}
		if names := listing(t, d.Path()); len(names) != 0 {
			t.Errorf("%+v: files left: %q", bad, names)
		}
	}
}

// A rename that fails mid-batch (a directory where a response should go)
// leaves no temporary: what was renamed before it is published, the rest
// is not, and publishing the batch again is the remedy.
func TestPutOCSPFailureLeavesNoTemporary(t *testing.T) {
	d := openDir(t, 0)
	if err := os.MkdirAll(filepath.Join(d.Path(), "ocsp", "0b", "02.der"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := d.PutOCSP([]OCSPResponse{{Issuer: "0a", Serial: []byte{1}, DER: []byte("a")},
		{Issuer: "0b", Serial: []byte{2}, DER: []byte("b2")}, {Issuer: "0b", Serial: []byte{3}, DER: []byte("b3")}})
	if err == nil {
		t.Fatal("a response renamed over a directory")
	}
	for _, name := range listing(t, d.Path()) {
		if name != "ocsp/0a/01.der" {
			t.Errorf("left %s", name)
		}
	}
}

const ocspCrashDirEnv = "SIGNERD_PUBLISH_OCSP_CRASH_DIR"
const ocspCrashGenEnv = "SIGNERD_PUBLISH_OCSP_CRASH_GEN"

const (
	ocspCrashIssuer  = "c0ffee"
	ocspCrashSerials = 512
	ocspCrashBatch   = 64
	ocspBlobHeader   = 8 + 8 + 8 + 8 + sha256.Size
)

// ocspCrashBatch is the batch of generation gen: which serials, each with
// a response stand-in that says its serial and generation and carries its
// own length and digest, so a torn or misfiled file is seen.
func ocspCrashBatchOf(gen uint64) []OCSPResponse {
	rng := rand.New(rand.NewPCG(gen, 0x0c5b))
	batch := make([]OCSPResponse, ocspCrashBatch)
	for i := range batch {
		serial := uint64(1 + rng.IntN(ocspCrashSerials))
		payload := make([]byte, 512+rng.IntN(16<<10))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		b := make([]byte, ocspBlobHeader, ocspBlobHeader+len(payload))
		copy(b, "OCSPTEST")
		binary.BigEndian.PutUint64(b[8:], serial)
		binary.BigEndian.PutUint64(b[16:], gen)
		binary.BigEndian.PutUint64(b[24:], uint64(len(payload)))
		sum := sha256.Sum256(payload)
		copy(b[32:], sum[:])
		batch[i] = OCSPResponse{Issuer: ocspCrashIssuer, Serial: serialBytes(serial), DER: append(b, payload...)}
	}
	return batch
}

func serialBytes(n uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, n)
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

func checkOCSPBlob(b []byte) (serial, gen uint64, err error) {
	if len(b) < ocspBlobHeader || string(b[:8]) != "OCSPTEST" {
		return 0, 0, fmt.Errorf("no header (%d bytes)", len(b))
	}
	serial, gen = binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:])
	if l := binary.BigEndian.Uint64(b[24:]); l != uint64(len(b)-ocspBlobHeader) {
		return 0, 0, fmt.Errorf("torn: header says %d payload bytes, file has %d", l, len(b)-ocspBlobHeader)
	}
	if sum := sha256.Sum256(b[ocspBlobHeader:]); !bytes.Equal(sum[:], b[32:ocspBlobHeader]) {
		return 0, 0, errors.New("payload digest mismatch")
	}
	return serial, gen, nil
}

// TestHelperOCSPProcess is the child publisher of TestCrashMidOCSPBatch:
// it publishes batch after batch and says on stdout each generation
// PutOCSP returned for. Run on its own it does nothing.
func TestHelperOCSPProcess(t *testing.T) {
	dir := os.Getenv(ocspCrashDirEnv)
	if dir == "" {
		t.Skip("only run as the child of TestCrashMidOCSPBatch")
	}
	gen, _ := strconv.ParseUint(os.Getenv(ocspCrashGenEnv), 10, 64)
	d, err := Open(dir, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	for ; ; gen++ {
		if err := d.PutOCSP(ocspCrashBatchOf(gen)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("done %d\n", gen)
	}
}

// The child is SIGKILLed at random moments in its batches: every file
// under a published name is then one whole response of its own serial, no
// file goes back to an older generation, and every response of a batch
// PutOCSP returned for is published (at that generation or a later one).
func TestCrashMidOCSPBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a publishing child process 30 times")
	}
	dir := filepath.Join(t.TempDir(), "pub")
	const kills = 30
	seen := map[string]uint64{} // published name → highest generation seen
	var temps, partial int
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOCSPProcess$", "-test.count=1")
		// Generations keep rising across children, so "never older" can be checked.
		cmd.Env = append(os.Environ(), ocspCrashDirEnv+"="+dir, ocspCrashGenEnv+"="+strconv.Itoa((i+1)*1_000_000))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: child did not start: %q; stderr: %s", i, lines.Text(), stderr.String())
		}
		done := make(chan []uint64)
		go func() {
			var gens []uint64
			for lines.Scan() {
				if g, ok := strings.CutPrefix(lines.Text(), "done "); ok {
					n, _ := strconv.ParseUint(g, 10, 64)
					gens = append(gens, n)
				}
			}
			done <- gens
		}()
		time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		completed := <-done
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: child ended by itself (%v): %s", i, err, stderr.String())
		}
		files, tmp := checkOCSPCrashDir(t, dir, seen)
		temps += tmp
		for _, g := range completed {
			for _, r := range ocspCrashBatchOf(g) {
				name, _ := OCSPName(r.Issuer, r.Serial)
				if files[name] < g {
					t.Errorf("kill %d: batch %d returned, but %s holds generation %d", i, g, name, files[name])
				}
			}
		}
		// A kill between the first and the last rename of a batch leaves it
		// partly published: counted to show the kills landed there.
		interrupted := uint64((i+1)*1_000_000 + len(completed))
		newer, batch := 0, ocspCrashBatchOf(interrupted)
		for _, r := range batch {
			name, _ := OCSPName(r.Issuer, r.Serial)
			if files[name] == interrupted {
				newer++
			}
		}
		if newer > 0 && newer < len(batch) {
			partial++
		}
		if t.Failed() {
			t.Fatalf("after kill %d; child's stderr: %s", i, stderr.String())
		}
	}
	t.Logf("%d kills: %d temporaries found, %d batches found partly renamed; %d responses published", kills, temps, partial, len(seen))

	d, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range listing(t, dir) {
		if strings.Contains(name, tempPrefix) {
			t.Errorf("Open left %s", name)
		}
	}
}

// checkOCSPCrashDir fails the test for a published name that does not hold
// one whole response of its own serial, or holds an older generation than
// seen before; it returns each published name's generation and the number
// of temporaries.
func checkOCSPCrashDir(t *testing.T, dir string, seen map[string]uint64) (map[string]uint64, int) {
	t.Helper()
	files := map[string]uint64{}
	temps := 0
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(e.Name(), tempPrefix) {
			temps++
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		serial, gen, err := checkOCSPBlob(b)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if want := "ocsp/" + ocspCrashIssuer + "/" + hex.EncodeToString(serialBytes(serial)) + ".der"; rel != want {
			t.Errorf("%s holds the response of %s", rel, want)
		}
		if gen < seen[rel] {
			t.Errorf("%s went back from generation %d to %d", rel, seen[rel], gen)
		}
		seen[rel], files[rel] = gen, gen
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, temps
}

// BenchmarkPutOCSP publishes batches of 256 responses of 1 KiB (about a
// delegated responder's response with its certificate) over a pool of
// 100,000 serials: responses/s is the rate a refresh can publish at.
func BenchmarkPutOCSP(b *testing.B) {
	d, err := Open(filepath.Join(b.TempDir(), "pub"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	const batchSize = 256
	der := bytes.Repeat([]byte{0x30}, 1024)
	batch := make([]OCSPResponse, batchSize)
	serial := uint64(0)
	b.ResetTimer()
	for b.Loop() {
		for i := range batch {
			serial = serial%100_000 + 1
			batch[i] = OCSPResponse{Issuer: "c0ffee", Serial: serialBytes(serial), DER: der}
		}
		if err := d.PutOCSP(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "responses/s")
}
