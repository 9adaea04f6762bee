package pglocal

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ownDataDir makes s.dataDir one PostgreSQL accepts: owned by the server's
// user, mode 0700, reachable by that user.
func (s *Server) ownDataDir() error {
	if s.cred != nil {
		if err := letSearch(s.dataDir, s.cred); err != nil {
			return err
		}
		uid, gid := int(s.cred.Uid), int(s.cred.Gid)
		err := filepath.WalkDir(s.dataDir, func(path string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, uid, gid)
		})
		if err != nil {
			return fmt.Errorf("give %s to uid %d: %w", s.dataDir, uid, err)
		}
	}
	if err := os.Chmod(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory mode: %w", err)
	}
	return nil
}

// letSearch lets cred's user reach path: each ancestor it may not search
// gets search permission for others (o+x, which lists nothing), provided
// it is a directory of this process's user below the system temporary
// directory, where t.TempDir() and os.MkdirTemp make their owner-only
// directories. Others are left alone, and the error says where to put the
// directory instead.
func letSearch(path string, cred *syscall.Credential) error {
	tmp := filepath.Clean(os.TempDir())
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		info, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("reach %s: %w", path, err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("reach %s: no owner for %s", path, dir)
		}
		if !searchable(st, cred) {
			if !below(dir, tmp) || int(st.Uid) != os.Geteuid() {
				return fmt.Errorf("uid %d cannot reach %s through %s: put it under %s", cred.Uid, path, dir, tmp)
			}
			if err := os.Chmod(dir, info.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let uid %d through %s: %w", cred.Uid, dir, err)
			}
		}
		if parent := filepath.Dir(dir); parent == dir {
			return nil
		}
	}
}

// searchable reports whether cred's user, without supplementary groups
// (the server programs run without), may search the directory st is of.
func searchable(st *syscall.Stat_t, cred *syscall.Credential) bool {
	switch {
	case st.Uid == cred.Uid:
		return st.Mode&0o100 != 0
	case st.Gid == cred.Gid:
		return st.Mode&0o010 != 0
	default:
		return st.Mode&0o001 != 0
	}
}

// below reports whether dir lies strictly inside root.
func below(dir, root string) bool {
	rel, err := filepath.Rel(root, dir)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}
