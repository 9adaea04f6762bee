package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// signerd removes only the socket file it created: whatever has taken the
// path by the time it stops (another process's socket, a file) stays.
func TestSocketReplacedWhileRunningIsLeftAlone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, path string)
	}{
		{"another socket", func(t *testing.T, path string) {
			l := staleSocket(t, filepath.Join(filepath.Dir(path), "other.sock"), true)
			t.Cleanup(func() { l.Close() })
			renameOver(t, filepath.Join(filepath.Dir(path), "other.sock"), path)
		}},
		{"a regular file", func(t *testing.T, path string) {
			tmp := filepath.Join(filepath.Dir(path), "other.file")
			if err := os.WriteFile(tmp, []byte("not signerd's\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			renameOver(t, tmp, path)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemonProc(t, "")
			d.start(t)
			tc.replace(t, d.socket)
			before := inode(t, d.socket)
			if err := d.stop(t); err != nil {
				t.Fatalf("signerd exit: %v\n%s", err, d.log)
			}
			if after := inode(t, d.socket); after != before {
				t.Fatalf("signerd removed what replaced its socket (inode %d, now %d)\n%s", before, after, d.log)
			}
		})
	}
}

// Its own socket signerd does remove, and a stale socket (its owner gone)
// it replaces; while the lock beside the socket is held (another signerd
// starting), it touches neither and refuses to start.
func TestStaleSocketAndTheLockBesideIt(t *testing.T) {
	d := newDaemonProc(t, "")
	staleSocket(t, d.socket, false)

	lock, err := os.OpenFile(d.socket+lockSuffix, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	stale := inode(t, d.socket)
	cmd := exec.Command(signerdBin, "--config", d.config)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	err = runUntilExit(t, cmd, d.socket)
	if code := exitCode(err); code != 1 || !strings.Contains(log.String(), "another signerd holds this socket") {
		t.Fatalf("signerd with the socket's lock held elsewhere: exit %d (%v), want 1 and the lock named\n%s", code, err, &log)
	}
	if got := inode(t, d.socket); got != stale {
		t.Fatalf("signerd replaced the socket while another held its lock")
	}
	lock.Close()

	d.start(t) // serves: the stale socket, which refuses connections, was replaced
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	if _, err := os.Lstat(d.socket); !os.IsNotExist(err) {
		t.Fatalf("signerd left its own socket behind: %v", err)
	}
}

// staleSocket binds a Unix socket at path; unless keep, it is closed at
// once, leaving the file as a crashed process leaves it.
func staleSocket(t *testing.T, path string, keep bool) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if !keep {
		l.Close()
		return nil
	}
	return l
}

func renameOver(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// inode is the inode number path names, without following a symlink.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// runUntilExit runs cmd, expected to fail at start-up, to its end; that
// it serves on socket instead fails the test at once.
func runUntilExit(t *testing.T, cmd *exec.Cmd, socket string) error {
	t.Helper()
	return runWatching(t, cmd, func() string {
		c, err := net.Dial("unix", socket)
		if err != nil {
			return ""
		}
		c.Close()
		return fmt.Sprintf("%s serves on %s", cmd.Path, socket)
	})
}

// runWatching runs cmd to its end, calling wrong while it runs; the first
// thing wrong reports, or cmd still running after 60s, kills cmd and
// fails the test.
func runWatching(t *testing.T, cmd *exec.Cmd, wrong func() string) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		what := wrong()
		if what == "" {
			select {
			case err := <-done:
				return err
			default:
			}
			if time.Now().After(deadline) {
				what = fmt.Sprintf("%s still running after 60s", cmd.Path)
			}
		}
		if what != "" {
			cmd.Process.Kill()
			<-done
			t.Fatal(what)
		}
	}
}

// exitCode is the status a finished process exited with (0 for none).
func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
