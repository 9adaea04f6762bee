package main

import (
	"context"
	"errors"
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

// listen creates the Unix socket: a stale socket file is removed (one a
// live signerd answers on is not), and the file gets mode and group.
func listen(cfg socketCfg) (net.Listener, error) {
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, errors.New(cfg.Path + " exists and is not a socket")
		}
		if c, err := net.Dial("unix", cfg.Path); err == nil {
			c.Close()
			return nil, errors.New(cfg.Path + ": another signerd is serving on it")
		}
		if err := os.Remove(cfg.Path); err != nil {
			return nil, err
		}
	}
	mode := uint64(0o660)
	if cfg.Mode != "" {
		mode, _ = strconv.ParseUint(cfg.Mode, 8, 32) // validated with the config
	}
	// Created with no access at all, then opened up, so there is no moment
	// when the umask's permissions apply.
	old := syscall.Umask(0o777)
	l, err := net.Listen("unix", cfg.Path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	gid := -1
	if cfg.Group != "" {
		g, err := user.LookupGroup(cfg.Group)
		if err != nil {
			l.Close()
			return nil, err
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.Chown(cfg.Path, -1, gid); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(cfg.Path, os.FileMode(mode)); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
