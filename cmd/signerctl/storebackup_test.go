package main

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// backupServer answers each store backup on a Unix socket with the
// headers of a copy of copyBytes and then body; stall keeps the
// connection open after that without sending the rest (a signerd that
// stalls cannot be had on demand: a real one sends at disk speed).
// received, unless nil, runs once a request has been read, before the
// answer.
func backupServer(t *testing.T, copyBytes, body []byte, stall bool, received func()) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	sum := sha256.Sum256(copyBytes)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				if received != nil {
					received()
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"+
					"Signerd-Backup-Sha256: %x\r\nSignerd-Backup-Audit-Head: 0\r\nSignerd-Backup-Last-Seal: 0\r\n\r\n", len(copyBytes), sum)
				c.Write(body)
				if stall {
					<-done
				}
			}()
		}
	}()
	return sock
}

// TestInterruptedStoreBackupLeavesNoTempFile: signerctl store backup
// stopped by SIGINT, SIGTERM or SIGHUP while it receives the copy removes its
// partial copy (exit 1, the folder as it was). On the code before, the
// signal's default action left FILE.tmp, and the next backup refused to
// run ("FILE.tmp exists").
func TestInterruptedStoreBackupLeavesNoTempFile(t *testing.T) {
	copyBytes := make([]byte, 1<<20)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			sock := backupServer(t, copyBytes, copyBytes[:64<<10], true, nil)
			dir := t.TempDir()
			cmd := exec.Command(bins.signerctl, "store", "backup", "--out", filepath.Join(dir, "backup.db"))
			cmd.Env = append(os.Environ(), "SIGNERD_SOCKET="+sock)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			// Signalled once the partial copy is on disk.
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if receiving(dir) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("signerctl wrote nothing of the copy in 20s: %s", stderr.String())
				}
			}
			cmd.Process.Signal(sig)
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit status %d after %v, want 1 (%s)", code, sig, cmd.ProcessState)
			}
			left, _ := os.ReadDir(dir)
			for _, e := range left {
				t.Errorf("left after %v: %s", sig, e.Name())
			}
			t.Logf("stderr: %s", stderr.String())
		})
	}
}

// receiving reports whether a partial copy with some bytes is in dir.
func receiving(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}

// TestStoreBackupNotBlockedByLeftovers: temporary files an earlier run
// left (FILE.tmp of the old naming, one of the new) do not stop the next
// backup, which writes FILE and leaves them as they were. On the code
// before, FILE.tmp made it refuse.
func TestStoreBackupNotBlockedByLeftovers(t *testing.T) {
	raw := storeCopyBytes(t)
	sock := backupServer(t, raw, raw, false, nil)
	dir := t.TempDir()
	out := filepath.Join(dir, "backup.db")
	leftovers := []string{out + ".tmp", filepath.Join(dir, ".backup.db.123456.tmp")}
	for _, l := range leftovers {
		if err := os.WriteFile(l, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, code := signerctl(t, sock, "store", "backup", "--out", out)
	if code != 0 {
		t.Fatalf("backup with leftovers beside FILE: exit %d: %s%s", code, stdout, stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != int64(len(raw)) {
		t.Fatalf("backup.db: %v, %v; want %d bytes, 0600", fi, err, len(raw))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1+len(leftovers) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("folder holds %v; want backup.db and the leftovers only", names)
	}
}
