package pglocal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// BinEnv names the environment variable that, when set, is the
	// folder of the PostgreSQL server programs to run.
	BinEnv     = "SIGNERD_PG_BIN"
	debianRoot = "/usr/lib/postgresql"
	minVersion = 15
	// installHint ends every error about missing or unusable binaries.
	installHint = "make deps installs Debian's postgresql; or set " + BinEnv + " to the bin folder of PostgreSQL 15 or newer"

	// startTimeout bounds a server start, WAL recovery after Kill or from a
	// base backup included.
	startTimeout = 60 * time.Second
	// stopTimeout bounds a fast shutdown; past it the server is killed.
	stopTimeout = 60 * time.Second
	// orphanTimeout bounds the wait for a killed postmaster's processes,
	// which notice its death within a few seconds at most.
	orphanTimeout = 30 * time.Second
	pollInterval  = 20 * time.Millisecond
)

var versionPattern = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// findBinaries is the folder of the PostgreSQL server programs:
// $SIGNERD_PG_BIN, or the newest /usr/lib/postgresql/<version>/bin.
func findBinaries() (string, error) {
	bin := os.Getenv(BinEnv)
	if bin == "" {
		bin = newestDebianBin(debianRoot)
		if bin == "" {
			return "", fmt.Errorf("no PostgreSQL server in %s/<version>/bin: %s", debianRoot, installHint)
		}
	}
	for _, name := range []string{"initdb", "postgres", "pg_basebackup"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return "", fmt.Errorf("PostgreSQL program %s missing: %w: %s", name, err, installHint)
		}
	}
	out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", filepath.Join(bin, "postgres"), err, installHint)
	}
	m := versionPattern.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s --version printed %q, not a PostgreSQL version: %s", filepath.Join(bin, "postgres"), bytes.TrimSpace(out), installHint)
	}
	if v, _ := strconv.Atoi(string(m[1])); v < minVersion {
		return "", fmt.Errorf("PostgreSQL %d in %s is older than %d: %s", v, bin, minVersion, installHint)
	}
	return bin, nil
}

// newestDebianBin is the bin folder of the highest major version installed
// under root (Debian installs each major version beside the others), or "".
func newestDebianBin(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return ""
	}
	best, bestVersion := "", -1
	for _, e := range entries {
		major, _, _ := strings.Cut(e.Name(), ".") // 9.6 before 10
		v, err := strconv.Atoi(major)
		if err != nil || v <= bestVersion {
			continue
		}
		bin := filepath.Join(root, e.Name(), "bin")
		if _, err := os.Stat(filepath.Join(bin, "postgres")); err == nil {
			best, bestVersion = bin, v
		}
	}
	return best
}

// serverUser is the user server programs run as: nobody:nogroup when the
// caller runs as root (PostgreSQL refuses root), nil (the caller's own
// user) otherwise.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("look up the user PostgreSQL runs as: %w", err)
	}
	gidText := u.Gid
	if g, err := user.LookupGroup("nogroup"); err == nil {
		gidText = g.Gid
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid %q of nobody: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(gidText, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid %q of nogroup: %w", gidText, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// command runs a PostgreSQL program as the server's user, in the server's
// directory (the caller's working directory may be closed to that user),
// with an environment of its own: no PG* variables of the caller's leak in.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.root
	// TZ: initdb otherwise probes the system's time zone, which is slow.
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "HOME=" + s.root, "LC_ALL=C", "TZ=UTC"}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// postmaster is a running postgres process, a child of this process.
type postmaster struct {
	pid  int
	done chan struct{} // closed once it has exited and been reaped
	err  error         // its exit status; read after done
}

func (p *postmaster) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// launch starts postgres on s.dataDir and waits until it accepts
// connections. postgres runs as a child of a goroutine locked to its OS
// thread for the process's whole life: its parent-death signal (SIGKILL)
// fires when that thread ends, which is then only when this process ends,
// so a process that dies without stopping its servers (a test binary's
// timeout, a panic, an interrupted benchmark) takes them with it.
func (s *Server) launch() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close()
	p := &postmaster{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, after postgres.
		runtime.LockOSThread()
		cmd := s.command("postgres", "-D", s.dataDir)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	s.proc = p
	if err := s.waitReady(p); err != nil {
		syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
		s.proc = nil
		return err
	}
	return nil
}

// waitReady waits until postgres says in postmaster.pid that it accepts
// connections, as pg_ctl start -w does.
func (s *Server) waitReady(p *postmaster) error {
	pidFile := filepath.Join(s.dataDir, "postmaster.pid")
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited while starting (%v); server log:\n%s", p.err, s.logTail())
		case <-time.After(pollInterval):
		}
		// A killed server leaves its postmaster.pid behind: only a file
		// naming this process counts.
		if raw, err := os.ReadFile(pidFile); err == nil {
			lines := strings.Split(string(raw), "\n")
			if len(lines) >= 8 && lines[0] == strconv.Itoa(p.pid) {
				if status := strings.TrimSpace(lines[7]); status == "ready" || status == "standby" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %v; server log:\n%s", startTimeout, s.logTail())
		}
	}
}

// stop shuts a running server down (fast), killing it if that takes too
// long. Its error reports a server that had exited by itself.
func (s *Server) stop() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if p.exited() {
		return fmt.Errorf("postgres had exited by itself (%v); server log:\n%s", p.err, s.logTail())
	}
	if err := syscall.Kill(p.pid, syscall.SIGINT); err != nil {
		return fmt.Errorf("signal postgres %d: %w", p.pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("fast shutdown took over %v; killed it; server log:\n%s", stopTimeout, s.logTail())
	}
	if p.err != nil {
		return fmt.Errorf("fast shutdown: postgres exited with %v; server log:\n%s", p.err, s.logTail())
	}
	return nil
}

// kill SIGKILLs the postmaster and waits for its processes to go.
func (s *Server) kill() error {
	p := s.proc
	s.proc = nil
	// Stopped, the postmaster forks no process between listing its
	// children and its death.
	if err := syscall.Kill(p.pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop postgres %d: %w", p.pid, err)
	}
	children, err := childrenOf(p.pid)
	if err != nil {
		syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
		return err
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill postgres %d: %w", p.pid, err)
	}
	<-p.done
	deadline := time.Now().Add(orphanTimeout)
	for {
		var left []string
		for _, c := range children {
			if !c.gone() {
				left = append(left, strconv.Itoa(c.pid))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %s of the killed postmaster %d still run after %v", strings.Join(left, ", "), p.pid, orphanTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// process is one process, told apart from a later one with the same pid
// by its start time.
type process struct {
	pid   int
	start string
}

// procStat is the state, parent pid and start time of pid from
// /proc/<pid>/stat.
func procStat(pid int) (state byte, ppid int, start string, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", err
	}
	// The command name, field 2, may hold spaces and parentheses.
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return 0, 0, "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(raw[end+1:])) // from field 3, the state
	if len(fields) < 20 {
		return 0, 0, "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, "", fmt.Errorf("/proc/%d/stat: parent pid: %w", pid, err)
	}
	return fields[0][0], ppid, fields[19], nil
}

func childrenOf(parent int) ([]process, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var children []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, ppid, start, err := procStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		if ppid == parent {
			children = append(children, process{pid: pid, start: start})
		}
	}
	return children, nil
}

// gone reports whether the process has exited. A zombie has: it holds no
// memory any more, and its reaper, the init process, is not this process.
func (p process) gone() bool {
	state, _, start, err := procStat(p.pid)
	return err != nil || state == 'Z' || state == 'X' || start != p.start
}

// logTail is the end of the server log, for error messages.
func (s *Server) logTail() string {
	raw, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", s.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
