package publish

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs a publisher in a child process (this test binary again, running
// TestHelperProcess) and SIGKILLs it at random moments: no deferred cleanup, no buffered
// writes flushed, exactly what a crashed or OOM-killed signerd leaves. A power cut is another
// matter: that the directory fsync after the rename is what makes it durable cannot be shown
// without cutting power, so it is checked by reading the code (and strace), not here.

const crashDirEnv = "SIGNERD_PUBLISH_CRASH_DIR"

var crashSeries = []Series{
	{Issuer: "c0ffee", Shard: 0},
	{Issuer: "c0ffee", Shard: 0, Delta: true},
	{Issuer: "c0ffee", Shard: 7},
}

const blobHeader = 8 + 8 + 8 + 8 + sha256.Size

// crashBlob is a CRL stand-in of 1 to 4 MiB that says which series and number it is and
// carries its own length and digest, so a torn or misnamed file is seen. Its bytes are a
// function of series and number, as a signed CRL stored in the store is: a republish after a
// crash offers the same bytes again.
func crashBlob(s Series, n uint64) []byte {
	id := seriesID(s)
	rng := rand.New(rand.NewChaCha8(seed(id, n)))
	payload := make([]byte, 1<<20+rng.IntN(3<<20))
	for i := 0; i+8 <= len(payload); i += 8 {
		binary.LittleEndian.PutUint64(payload[i:], rng.Uint64())
	}
	b := make([]byte, blobHeader, blobHeader+len(payload))
	copy(b, "PUBTEST1")
	binary.BigEndian.PutUint64(b[8:], id)
	binary.BigEndian.PutUint64(b[16:], n)
	binary.BigEndian.PutUint64(b[24:], uint64(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[32:], sum[:])
	return append(b, payload...)
}

func seriesID(s Series) uint64 {
	id := uint64(s.Shard) << 1
	if s.Delta {
		id |= 1
	}
	return id
}

func seed(id, n uint64) (s [32]byte) {
	binary.BigEndian.PutUint64(s[:], id)
	binary.BigEndian.PutUint64(s[8:], n)
	return s
}

// checkBlob returns the series id and number a file's bytes claim, or an error if the
// bytes are not one complete blob.
func checkBlob(b []byte) (id, n uint64, err error) {
	if len(b) < blobHeader || string(b[:8]) != "PUBTEST1" {
		return 0, 0, fmt.Errorf("no header (%d bytes)", len(b))
	}
	id, n = binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:])
	if l := binary.BigEndian.Uint64(b[24:]); l != uint64(len(b)-blobHeader) {
		return 0, 0, fmt.Errorf("torn: header says %d payload bytes, file has %d", l, len(b)-blobHeader)
	}
	if sum := sha256.Sum256(b[blobHeader:]); !bytes.Equal(sum[:], b[32:blobHeader]) {
		return 0, 0, errors.New("payload digest mismatch")
	}
	return id, n, nil
}

// TestHelperProcess is the child publisher of TestCrashMidWrite; run on its own it does nothing.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("only run as the child of TestCrashMidWrite")
	}
	d, err := Open(dir, 3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("ready")
	for {
		for _, s := range crashSeries {
			// Next is one above what the stable name holds: after a crash between the
			// numbered and stable writes that is the interrupted number, republished.
			n, _, err := d.LatestCRL(s)
			if err == nil {
				_, err = d.PutCRL(s, n+1, crashBlob(s, n+1))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
}

func TestCrashMidWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a publishing child process 30 times")
	}
	dir := filepath.Join(t.TempDir(), "pub")
	const kills = 30
	stableSeen := map[Series]uint64{}
	var tempsSeen, laggingSeen int
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill only once Open has run, so the kills land in the publishing loop.
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: child did not start: %q, %v; stderr: %s", i, line, err, stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: child ended by itself (%v): %s", i, err, stderr.String())
		}
		temps, lagging := checkCrashDir(t, dir, stableSeen)
		tempsSeen += temps
		laggingSeen += lagging
	}
	// How often a kill hit mid-write is chance; logged so a run that never did is visible.
	t.Logf("%d kills: %d temporaries and %d stable names behind their highest number found after kills; published up to %v",
		kills, tempsSeen, laggingSeen, stableSeen)

	d, err := Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range listing(t, dir) {
		if strings.Contains(name, tempPrefix) {
			t.Errorf("Open left %s", name)
		}
	}
	// Recovery: the same loop the child runs brings every stable name to its highest number.
	for _, s := range crashSeries {
		n, _, err := d.LatestCRL(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.PutCRL(s, n+1, crashBlob(s, n+1)); err != nil {
			t.Fatal(err)
		}
		nums := numbersOnDisk(t, d, s)
		if got, ok, err := d.LatestCRL(s); err != nil || !ok || got != nums[len(nums)-1] {
			t.Errorf("%+v: stable holds %d, %v, %v after recovery; highest numbered is %d", s, got, ok, err, nums[len(nums)-1])
		}
	}
}

// checkCrashDir fails the test for any file a reader would take (stable or numbered name)
// that is not a complete blob of its own series and number, and for a stable name that went
// back. It returns how many temporaries it saw and how many stable names lag their highest
// numbered file (a kill between the two writes).
func checkCrashDir(t *testing.T, dir string, stableSeen map[Series]uint64) (temps, lagging int) {
	t.Helper()
	highest := map[Series]uint64{}
	stable := map[Series]uint64{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		base := e.Name()
		if strings.HasPrefix(base, tempPrefix) {
			temps++
			return nil
		}
		issuerDir := filepath.Dir(rel)
		var s Series
		var number uint64
		numbered := false
		if shard, delta, n, ok := parseNumbered(base); ok {
			s, number, numbered = Series{Issuer: issuerDir, Shard: shard, Delta: delta}, n, true
		} else {
			found := false
			for _, c := range crashSeries {
				if filepath.ToSlash(rel) == c.latestName() {
					s, found = c, true
				}
			}
			if !found {
				t.Errorf("unexpected file %s", rel)
				return nil
			}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		id, n, err := checkBlob(b)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if id != seriesID(s) || (numbered && n != number) {
			t.Errorf("%s holds series %d number %d", rel, id, n)
		}
		if numbered {
			highest[s] = max(highest[s], n)
		} else {
			stable[s] = n
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for s, n := range stable {
		if n < stableSeen[s] {
			t.Errorf("%s went back from %d to %d", s.latestName(), stableSeen[s], n)
		}
		stableSeen[s] = n
		if n < highest[s] {
			lagging++
		}
	}
	return temps, lagging
}
