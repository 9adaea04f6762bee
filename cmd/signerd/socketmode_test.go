package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Between binding its socket and giving it group and mode, signerd's path
// may have been swapped (by whoever can write the socket's folder) for a
// symlink to another file, or for another socket. openUp must then change
// nothing, refuse, and leave the file the path leads to as it was; on the
// socket it bound it sets group and mode.
func TestSocketOpenUpDoesNotFollowASwappedPath(t *testing.T) {
	const gid, mode = 1005, 0o666
	for _, tc := range []struct {
		name string
		swap func(t *testing.T, path string) (victim string)
	}{
		{"not swapped", nil},
		{"swapped for a symlink to a file", func(t *testing.T, path string) string {
			victim := filepath.Join(filepath.Dir(path), "victim")
			if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			renameOver(t, path, path+".moved")
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
			return victim
		}},
		{"swapped for a symlink to a socket", func(t *testing.T, path string) string {
			victim := filepath.Join(filepath.Dir(path), "victim.sock")
			staleSocket(t, victim, true)
			os.Chmod(victim, 0o600)
			renameOver(t, path, path+".moved")
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
			return victim
		}},
		{"swapped for another socket", func(t *testing.T, path string) string {
			other := filepath.Join(filepath.Dir(path), "other.sock")
			staleSocket(t, other, true)
			os.Chmod(other, 0o600)
			renameOver(t, other, path)
			return path
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.sock")
			l := staleSocket(t, path, true)
			defer l.Close()
			os.Chmod(path, 0o600)
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil {
				t.Fatal(err)
			}
			s := &ownedSocket{path: path, dev: st.Dev, ino: st.Ino}
			if tc.swap == nil {
				if err := s.openUp(gid, mode); err != nil {
					t.Fatal(err)
				}
				checkModeAndGroup(t, path, mode, gid)
				return
			}
			victim := tc.swap(t, path)
			var before syscall.Stat_t
			if err := syscall.Stat(victim, &before); err != nil {
				t.Fatal(err)
			}
			err := s.openUp(gid, mode)
			if err == nil || !strings.Contains(err.Error(), "replaced") {
				t.Errorf("openUp on a swapped path: %v, want refused as replaced", err)
			}
			checkModeAndGroup(t, victim, before.Mode&0o7777, int(before.Gid))
		})
	}
}

// A kernel without fchmodat2 (before 6.6) gets the mode set through
// /proc/self/fd, which names the inode a handle holds, never a path.
func TestChmodThroughProcSetsTheHandlesInode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l := staleSocket(t, path, true)
	defer l.Close()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	renameOver(t, path, path+".moved")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // the path now names another file
		t.Fatal(err)
	}
	if err := chmodThroughProc(fd, 0o640); err != nil {
		t.Fatal(err)
	}
	checkModeAndGroup(t, path+".moved", 0o640, -1)
	checkModeAndGroup(t, path, 0o600, -1)
}

// checkModeAndGroup fails the test unless path (followed) has the mode
// and, unless gid is -1, the group.
func checkModeAndGroup(t *testing.T, path string, mode uint32, gid int) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != mode || gid != -1 && int(st.Gid) != gid {
		t.Errorf("%s: mode %04o gid %d, want %04o gid %d", path, st.Mode&0o7777, st.Gid, mode, gid)
	}
}
