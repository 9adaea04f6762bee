// Package pglocal runs a throwaway PostgreSQL server on this machine: a
// data directory made by initdb in a fresh directory, a server listening
// only on a Unix socket in that directory, and the means to stop, crash,
// restart and back it up, and to give it a synchronous streaming standby
// that can be promoted in its place. Tests (through store/pgtest) and signerctl bench
// use it; it runs the server programs of Debian's postgresql package (make
// deps installs it), or those in $SIGNERD_PG_BIN.
//
// PostgreSQL refuses to run as root, so when the caller runs as root every
// server program runs as user nobody (group nogroup), and the caller, as
// root, reaches the server's socket and files regardless of their owner.
// A directory it hands to the server's user under the system temporary
// directory (a parent for Start, a data directory for StartFrom, a base
// backup's target) is made reachable by adding search permission (o+x, not
// listing) to its root-owned ancestors there.
//
// A server dies with the process that started it, even if that process
// never stops it (see launch).
package pglocal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// Port is every server's port number; it only names the socket file, and
// every server has a socket directory of its own.
const Port = 5432

// Setting is one line "Name = Value" of postgresql.conf. Value is written
// as postgresql.conf reads it: a string with spaces or special characters
// needs its single quotes (Setting{"archive_command", "'cp %p /archive/%f'"}).
type Setting struct {
	Name, Value string
}

// Server is one PostgreSQL server: listening only on a Unix socket in a
// directory of its own (listen_addresses is empty), run as an unprivileged
// user (nobody) when the caller is root, trust authentication for user
// postgres.
type Server struct {
	bin     string // the folder holding initdb, postgres and pg_basebackup
	root    string // the server's own directory: socket, log, and the data directory of Start
	dataDir string
	logPath string
	cred    *syscall.Credential // the user server programs run as; nil: the caller's own user

	mu   sync.Mutex // guards proc
	proc *postmaster
}

// Start makes a new directory in parent ("" for the system temporary
// directory), initialises a data directory in it with initdb (user
// postgres, UTF8, locale C) and starts a server on it with settings added
// to postgresql.conf after pglocal's own, so they override them. Remove
// stops the server and removes the directory.
func Start(parent string, settings ...Setting) (*Server, error) {
	s, err := newServer(parent)
	if err != nil {
		return nil, err
	}
	s.dataDir = filepath.Join(s.root, "data")
	// -N: initdb's own fsync only costs time for a throwaway cluster; the
	// server keeps fsync on.
	out, err := s.command("initdb", "-D", s.dataDir, "--auth=trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "-N").CombinedOutput()
	if err != nil {
		os.RemoveAll(s.root)
		return nil, fmt.Errorf("initdb %s: %w\n%s", s.dataDir, err, out)
	}
	if err := s.configure(settings); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	if err := s.launch(); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	return s, nil
}

// StartFrom starts a server on an existing data directory (e.g. a restored
// base backup): it gives the directory to the server's user with the mode
// PostgreSQL requires (0700), points the server at a socket directory of
// its own made in parent ("" for the system temporary directory), and
// starts it. Remove stops it and removes the socket directory; dataDir is
// left in place.
func StartFrom(parent, dataDir string, settings ...Setting) (*Server, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		return nil, fmt.Errorf("%s is not a PostgreSQL data directory: %w", dataDir, err)
	}
	s, err := newServer(parent)
	if err != nil {
		return nil, err
	}
	s.dataDir = dataDir
	if err := s.ownDataDir(); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	if err := s.configure(settings); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	if err := s.launch(); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	return s, nil
}

// newServer finds the binaries and the server's user, and makes the
// server's own directory in parent, reachable by that user.
func newServer(parent string) (*Server, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(parent, "signerd-pg-*")
	if err != nil {
		return nil, fmt.Errorf("make the server directory: %w", err)
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("make the server directory: %w", err)
	}
	if cred != nil {
		if err := letSearch(root, cred); err != nil {
			os.RemoveAll(root)
			return nil, err
		}
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(root)
			return nil, fmt.Errorf("give %s to uid %d: %w", root, cred.Uid, err)
		}
	}
	return &Server{bin: bin, root: root, logPath: filepath.Join(root, "log"), cred: cred}, nil
}

// configure appends pglocal's settings and the caller's to
// postgresql.conf, where the last occurrence of a setting wins: a
// restored backup's settings for its old server (its socket directory
// above all) are overridden.
func (s *Server) configure(settings []Setting) error {
	var b strings.Builder
	b.WriteString("\n# pglocal\n")
	for _, kv := range append([]Setting{
		{"listen_addresses", "''"},
		{"unix_socket_directories", quoteConf(s.root)},
		{"port", strconv.Itoa(Port)},
		{"max_connections", "100"},
		{"fsync", "on"},
	}, settings...) {
		fmt.Fprintf(&b, "%s = %s\n", kv.Name, kv.Value)
	}
	path := filepath.Join(s.dataDir, "postgresql.conf")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("configure %s: %w", path, err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("configure %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("configure %s: %w", path, err)
	}
	return nil
}

// quoteConf is value as a postgresql.conf string literal.
func quoteConf(value string) string {
	return "'" + strings.ReplaceAll(value, "'", "''") + "'"
}

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// SocketDir is the directory holding the server's Unix socket (and its
// log, named log).
func (s *Server) SocketDir() string { return s.root }

// PID is the postmaster's process id, 0 while the server is not running.
// The server's other processes are its children.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.pid
}

// LogPath is the server's log file.
func (s *Server) LogPath() string { return s.logPath }

// DSN is a libpq keyword DSN for database on the server as user postgres:
// "host=<socketdir> port=<port> user=postgres dbname=<db> sslmode=disable".
func (s *Server) DSN(database string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable",
		quoteDSN(s.root), Port, quoteDSN(database))
}

// quoteDSN is value as a libpq keyword DSN value: quoted only when it has
// to be, so the common DSN stays readable.
func quoteDSN(value string) string {
	if value != "" && !strings.ContainsAny(value, " \t\n'\\") {
		return value
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(value) + "'"
}

// Exec runs one statement in database on the server, on a connection of
// its own.
func (s *Server) Exec(ctx context.Context, database, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.DSN(database))
	if err != nil {
		return fmt.Errorf("connect to database %s on %s: %w", database, s.root, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("database %s on %s: %s: %w", database, s.root, sql, err)
	}
	return nil
}

// CreateDatabase creates an empty database named name (an SQL identifier
// of lower-case letters, digits and underscores) and returns its DSN.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	if err := s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return s.DSN(name), nil
}

// Stop shuts the server down as pg_ctl stop -m fast does (SIGINT: active
// transactions roll back, then a checkpoint) and waits until it is down.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return fmt.Errorf("stop PostgreSQL %s: not running", s.root)
	}
	if err := s.stop(); err != nil {
		return fmt.Errorf("stop PostgreSQL %s: %w", s.root, err)
	}
	return nil
}

// Kill crashes the server: SIGKILL to the postmaster, as a power cut would
// end it but for the page cache. It returns once the postmaster's other
// processes, which exit by themselves when they notice it gone, have
// exited too and released its shared memory, so that Restart can start
// the server again.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return fmt.Errorf("kill PostgreSQL %s: not running", s.root)
	}
	if err := s.kill(); err != nil {
		return fmt.Errorf("kill PostgreSQL %s: %w", s.root, err)
	}
	return nil
}

// Restart starts the server again on the same data directory, socket
// directory and port, after Stop or Kill (after Kill, PostgreSQL recovers
// from its WAL first). A server that had exited by itself is not
// restarted: the error says so, with the end of its log.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return fmt.Errorf("restart PostgreSQL %s: still running; Stop or Kill it first", s.root)
	}
	if err := s.stop(); err != nil {
		return fmt.Errorf("restart PostgreSQL %s: %w", s.root, err)
	}
	if err := s.launch(); err != nil {
		return fmt.Errorf("restart PostgreSQL %s: %w", s.root, err)
	}
	return nil
}

// BaseBackup takes a base backup of the running server into dir with
// pg_basebackup -D dir -X stream -c fast (and --no-sync), as the server's
// user: a data directory StartFrom can start. dir is created, owned by that
// user with mode 0700; it must not exist, or be empty.
func (s *Server) BaseBackup(dir string) error { return s.baseBackup(dir) }

// baseBackup is BaseBackup with more pg_basebackup arguments.
func (s *Server) baseBackup(dir string, args ...string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("base backup to %s: %w", dir, err)
	}
	if err := s.makeBackupDir(dir); err != nil {
		return fmt.Errorf("base backup to %s: %w", dir, err)
	}
	// --no-sync: the server started on the backup syncs its data directory
	// as it begins recovery, so syncing it here too only costs time.
	out, err := s.command("pg_basebackup", append([]string{"-D", dir, "-X", "stream", "-c", "fast", "--no-sync",
		"-h", s.root, "-p", strconv.Itoa(Port), "-U", "postgres", "--no-password"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_basebackup of %s to %s: %w\n%s", s.root, dir, err, out)
	}
	return nil
}

func (s *Server) makeBackupDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("make its parent: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); errors.Is(err, os.ErrExist) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read existing directory: %w", err)
		}
		if len(entries) > 0 {
			return errors.New("directory exists and is not empty")
		}
	} else if err != nil {
		return fmt.Errorf("make directory: %w", err)
	}
	if s.cred == nil {
		return os.Chmod(dir, 0o700)
	}
	if err := letSearch(dir, s.cred); err != nil {
		return err
	}
	if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("give it to uid %d: %w", s.cred.Uid, err)
	}
	return os.Chmod(dir, 0o700)
}

// Remove stops the server if it runs and removes its own directory (not
// the data directory of StartFrom). Its error also reports a server that
// had exited by itself.
func (s *Server) Remove() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopErr := s.stop()
	if err := os.RemoveAll(s.root); err != nil {
		return errors.Join(stopErr, fmt.Errorf("remove %s: %w", s.root, err))
	}
	return stopErr
}
