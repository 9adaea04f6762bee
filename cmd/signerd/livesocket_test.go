package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// A socket at signerd's path is stale only when connecting to it is
// refused (ECONNREFUSED: nobody listens). A live listener whose backlog is
// full answers EAGAIN, a live datagram or seqpacket socket EPROTOTYPE:
// signerd must leave each of them in place and refuse to start, naming the
// error, instead of removing it and serving in its owner's place.
func TestLiveSocketIsNotTakenForStale(t *testing.T) {
	for _, tc := range []struct {
		name string
		bind func(t *testing.T, path string)
		log  string
	}{
		{"a listener with a full backlog (EAGAIN)", func(t *testing.T, path string) {
			fd := boundSocket(t, path, syscall.SOCK_STREAM)
			if err := syscall.Listen(fd, 0); err != nil {
				t.Fatal(err)
			}
			for filled := false; !filled; { // a live process slow to accept
				c, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { syscall.Close(c) })
				err = syscall.Connect(c, &syscall.SockaddrUnix{Name: path})
				switch {
				case errors.Is(err, syscall.EAGAIN):
					filled = true
				case err != nil:
					t.Fatalf("fill the backlog: %v", err)
				}
			}
		}, "resource temporarily unavailable"},
		{"a datagram socket (EPROTOTYPE)", func(t *testing.T, path string) {
			boundSocket(t, path, syscall.SOCK_DGRAM)
		}, "protocol wrong type for socket"},
		{"a seqpacket listener (EPROTOTYPE)", func(t *testing.T, path string) {
			fd := boundSocket(t, path, syscall.SOCK_SEQPACKET)
			if err := syscall.Listen(fd, 16); err != nil {
				t.Fatal(err)
			}
		}, "protocol wrong type for socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemonProc(t, "")
			tc.bind(t, d.socket)
			live := inode(t, d.socket)
			cmd := exec.Command(signerdBin, "--config", d.config)
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			err := runUntilExitLeaving(t, cmd, d.socket, live)
			if code := exitCode(err); code != exitFailure {
				t.Errorf("exit status %d (%v), want %d\n%s", code, err, exitFailure, &log)
			}
			if !strings.Contains(log.String(), tc.log) || !strings.Contains(log.String(), d.socket) {
				t.Errorf("the refusal does not name the socket and %q:\n%s", tc.log, &log)
			}
		})
	}
}

// boundSocket binds a Unix socket of type typ at path, kept open (its
// owner alive) until the test ends.
func boundSocket(t *testing.T, path string, typ int) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// runUntilExitLeaving runs cmd, expected to refuse to start, to its end;
// that the file at path (inode ino) is removed or replaced meanwhile fails
// the test at once.
func runUntilExitLeaving(t *testing.T, cmd *exec.Cmd, path string, ino uint64) error {
	t.Helper()
	return runWatching(t, cmd, func() string {
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil || st.Ino != ino {
			return fmt.Sprintf("%s: the live socket (inode %d) was removed or replaced (lstat: %v, inode %d)", path, ino, err, st.Ino)
		}
		return ""
	})
}
