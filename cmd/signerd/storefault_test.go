package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onTmpfs moves d's store onto a tmpfs of its own, so the test can fill
// it; it needs root, as do the tests that connect as other uids.
func onTmpfs(t *testing.T, d *daemonProc, size string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("a small file system for the store needs root (mount -t tmpfs)")
	}
	fs := filepath.Join(d.dir, "storefs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", fs, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs for the store: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fs, unix.MNT_DETACH) })
	store := filepath.Join(fs, "signerd.db")
	d.editConfig(t, "store: "+d.store+"\n", "store: "+store+"\n")
	d.store = store
	return fs
}

// fill takes every free block of the file system at dir and returns the
// file that holds them.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestStoreFaultsFailRequestsCleanly fills the store's file system, and
// then makes its writes fail as on a file system gone read-only (EROFS,
// injected into signerd's system calls by strace): requests that cannot
// be recorded fail with store_unavailable and no certificate, reads and
// health are still answered, and once the store takes writes again the
// same requests succeed without a restart. The store afterwards holds
// exactly what the RA was told.
func TestStoreFaultsFailRequestsCleanly(t *testing.T) {
	d := newDaemonProc(t, "")
	fs := onTmpfs(t, d, "4m")
	d.start(t)
	l := newRALedger()
	issue := func(id string) reply { t.Helper(); return l.issue(t, d, id) }
	if r := issue("before"); r.status != 201 {
		t.Fatalf("issue before any fault: %d %s", r.status, r.body)
	}
	first := l.issued["before"]

	faults := []struct {
		name  string
		start func(t *testing.T) (end func())
	}{
		{"file system full", func(t *testing.T) func() {
			filler := fill(t, fs)
			return func() { os.Remove(filler) }
		}},
		{"file system read-only", func(t *testing.T) func() {
			return injectEROFS(t, d)
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			var once sync.Once
			stop := f.start(t)
			end := func() { once.Do(stop) }
			defer end()
			var failed []string
			for i := 0; i < 300 && len(failed) == 0; i++ {
				id := fmt.Sprintf("%s-%d", strings.ReplaceAll(f.name, " ", "-"), i)
				switch r := issue(id); {
				case r.status == 201:
				case r.status == 503 && r.code == "store_unavailable":
					failed = append(failed, id)
					t.Logf("request %d: %s", i, r.body)
				default:
					t.Fatalf("issue with the %s: %d %s", f.name, r.status, r.body)
				}
			}
			if len(failed) == 0 {
				t.Fatalf("300 requests with the %s and none failed", f.name)
			}
			want(t, "status read", d.call(t, "GET", "/v1/certificates/"+first, ""), 200, "")
			want(t, "health", d.callAs(t, operatorUID, "GET", "/v1/health"), 503, "store_unavailable")
			if v := d.metric(t, "signerd_store_writable"); v != 0 {
				t.Errorf("signerd_store_writable %v while writes fail", v)
			}
			end()
			for _, id := range failed {
				if r := issue(id); r.status != 201 {
					t.Fatalf("retry of %s once the store takes writes: %d %s", id, r.status, r.body)
				}
			}
			want(t, "health", d.callAs(t, operatorUID, "GET", "/v1/health"), 200, "")
			if v := d.metric(t, "signerd_store_writable"); v != 1 {
				t.Errorf("signerd_store_writable %v once writes work again", v)
			}
		})
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	l.checkStore(t, d, 0, true)
}

// injectEROFS makes signerd's file writes and syncs fail with EROFS, as on
// a file system remounted read-only under it (Linux refuses to remount one
// with files open for writing, so the fault is injected), until the
// returned end is called.
func injectEROFS(t *testing.T, d *daemonProc) (end func()) {
	t.Helper()
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace is needed to inject EROFS (make deps installs it)")
	}
	cmd := exec.Command("strace", "-f", "-qq", "-o", "/dev/null", "-p", fmt.Sprint(d.cmd.Process.Pid),
		"-e", "trace=pwrite64,fdatasync,fsync,ftruncate,fallocate",
		"-e", "inject=pwrite64,fdatasync,fsync,ftruncate,fallocate:error=EROFS")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let it attach to every thread
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}
