package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"signerd/store"
)

const (
	roleRA       = "ra"
	roleOperator = "operator"
	roleAuditor  = "auditor"
)

// peer is who is on the other end of a connection, as the kernel says
// (SO_PEERCRED), and the roles the configuration gives them (none for a
// stranger).
type peer struct {
	UID, GID, PID int
	Roles         []string
	evidence      []byte // the RA's signed request, if it signed one
}

func (p peer) actor() store.Actor {
	return store.Actor{UID: p.UID, GID: p.GID, PID: p.PID, Role: strings.Join(p.Roles, "+"), Evidence: p.evidence}
}

type peerKey struct{}

// peerCred reads the connecting process's credentials.
func peerCred(c net.Conn) (peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{}, errors.New("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if credErr != nil {
		return peer{}, credErr
	}
	return peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}, nil
}

// rolesOf maps a peer to its roles: those naming its uid, or if none do,
// those naming its gid. Separation of duties means one role per principal;
// a small CA that gives one principal several (see overlaps) is warned at
// start-up.
func (r roles) rolesOf(p peer) []string {
	var byUID, byGID []string
	for role, ids := range r {
		if slices.Contains(ids.UIDs, p.UID) {
			byUID = append(byUID, role)
		}
		if slices.Contains(ids.GIDs, p.GID) {
			byGID = append(byGID, role)
		}
	}
	if len(byUID) > 0 {
		slices.Sort(byUID)
		return byUID
	}
	slices.Sort(byGID)
	return byGID
}

// namesUID reports whether a role names uid, so that the uid alone gives
// the peer its roles (rolesOf).
func (r roles) namesUID(uid int) bool {
	for _, ids := range r {
		if slices.Contains(ids.UIDs, uid) {
			return true
		}
	}
	return false
}

// overlaps lists uids and gids named in more than one role.
func (r roles) overlaps() []string {
	seen := map[string][]string{}
	for role, ids := range r {
		for _, u := range ids.UIDs {
			seen["uid "+strconv.Itoa(u)] = append(seen["uid "+strconv.Itoa(u)], role)
		}
		for _, g := range ids.GIDs {
			seen["gid "+strconv.Itoa(g)] = append(seen["gid "+strconv.Itoa(g)], role)
		}
	}
	var out []string
	for id, rs := range seen {
		if len(rs) > 1 {
			slices.Sort(rs)
			out = append(out, id+" holds "+strings.Join(rs, ", "))
		}
	}
	slices.Sort(out)
	return out
}

func withPeer(ctx context.Context, c net.Conn) context.Context {
	if cc, ok := c.(*countedConn); ok {
		return context.WithValue(ctx, peerKey{}, cc.peer)
	}
	p, err := peerCred(c)
	if err != nil {
		p = peer{UID: -1, GID: -1}
	}
	return context.WithValue(ctx, peerKey{}, p)
}

func peerFrom(ctx context.Context) peer {
	p, _ := ctx.Value(peerKey{}).(peer)
	return p
}

// ownedSocket is the socket file signerd created: the file it bound (by
// device and inode) and the lock beside it that it holds while it serves.
type ownedSocket struct {
	path     string
	dev, ino uint64
	lock     *os.File
}

// lockSuffix names the lock file beside a socket signerd creates. Every
// signerd takes it before it looks at the socket path and keeps it until
// it has removed its socket, so replacing a stale socket is never raced by
// another signerd. The lock file itself stays: removing it would let two
// processes lock two different files of the same name.
const lockSuffix = ".lock"

// listen creates the Unix socket: under the lock beside it, a stale
// socket file (one that refuses connections) is removed, and the new file
// gets mode and group. release removes the socket only if the path still
// names the file listen bound, then drops the lock.
func listen(cfg socketConfig) (l net.Listener, release func(), err error) {
	lock, err := os.OpenFile(cfg.Path+lockSuffix, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("socket lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil, fmt.Errorf("%s is locked: another signerd holds this socket", cfg.Path+lockSuffix)
		}
		return nil, nil, fmt.Errorf("socket lock %s: %w", cfg.Path+lockSuffix, err)
	}
	s := &ownedSocket{path: cfg.Path, lock: lock}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, nil, errors.New(cfg.Path + " exists and is not a socket")
		}
		// Only a refused connection means nobody listens. A live listener
		// with a full backlog answers EAGAIN, a live datagram or seqpacket
		// socket EPROTOTYPE, one signerd may not reach EACCES: each has an
		// owner, who keeps it.
		c, err := net.Dial("unix", cfg.Path)
		switch {
		case err == nil:
			c.Close()
			return nil, nil, errors.New(cfg.Path + ": another process is serving on it")
		case !errors.Is(err, syscall.ECONNREFUSED):
			return nil, nil, fmt.Errorf("%s: a socket signerd cannot tell is stale, left in place: %w", cfg.Path, err)
		}
		if err := os.Remove(cfg.Path); err != nil {
			return nil, nil, err
		}
	}
	// Created with no access at all, then opened up, so there is no moment
	// when the umask's permissions apply.
	old := syscall.Umask(0o777)
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, nil, err
	}
	// Closing the listener must not unlink the path: by then it may name
	// someone else's file. release decides.
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, func(), error) {
		ul.Close()
		s.removeIfOurs()
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(cfg.Path, &st); err != nil {
		return fail(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fail(errors.New(cfg.Path + " was replaced while signerd bound it"))
	}
	s.dev, s.ino = st.Dev, st.Ino
	gid := -1
	if cfg.Group != "" {
		g, err := user.LookupGroup(cfg.Group)
		if err != nil {
			return fail(err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := s.openUp(gid, cfg.Mode); err != nil {
		return fail(err)
	}
	return ul, s.release, nil
}

// openUp gives the socket signerd bound its group (unless gid is -1) and
// mode. Whoever can write the socket's folder may have swapped the path
// since the bind, for another socket or a symlink to any file (signerd run
// as root would chmod /etc/shadow through it): so the path is opened as a
// handle that does not follow a symlink, the handle is checked to be the
// socket bound (device and inode), and group and mode are set through the
// handle, never the path.
func (s *ownedSocket) openUp(gid int, mode uint32) error {
	fd, err := unix.Open(s.path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Dev != s.dev || st.Ino != s.ino {
		return errors.New(s.path + " was replaced after signerd bound it")
	}
	if gid >= 0 {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown %s: %w", s.path, err)
		}
	}
	err = unix.Fchmodat(fd, "", mode, unix.AT_EMPTY_PATH) // fchmodat2: Linux 6.6
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = chmodThroughProc(fd, mode)
	}
	if err != nil {
		return fmt.Errorf("chmod %s: %w", s.path, err)
	}
	return nil
}

// chmodThroughProc sets the mode of the inode an O_PATH handle holds, as
// glibc does where fchmodat2 is missing: /proc/self/fd/N leads to that
// inode, whatever its path names now.
func chmodThroughProc(fd int, mode uint32) error {
	return unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode)
}

// release removes the socket file if the path still names the one signerd
// bound (whatever replaced it is left alone), then unlocks.
func (s *ownedSocket) release() {
	s.removeIfOurs()
	s.lock.Close()
}

// removeIfOurs removes the path if it names the file signerd bound. Only a
// process that may write the socket's folder can swap the file between
// the check and the removal; every signerd is kept out by the lock.
func (s *ownedSocket) removeIfOurs() {
	var st unix.Stat_t
	if s.ino != 0 && unix.Lstat(s.path, &st) == nil && st.Dev == s.dev && st.Ino == s.ino {
		os.Remove(s.path)
	}
}
