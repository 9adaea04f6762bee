// Package pgtest starts real PostgreSQL servers for tests: a data directory
// made by initdb in a fresh temporary directory, a server listening only on
// a Unix socket in that directory, and methods to create databases, run
// statements, stop, crash, restart and back up the server. It runs the
// server binaries of Debian's postgresql package (make deps installs it),
// or those in $SIGNERD_PG_BIN.
//
// PostgreSQL refuses to run as root, so when the tests run as root every
// server program runs as user nobody (group nogroup), and the test process
// itself, as root, reaches the server's socket and files regardless of
// their owner. A directory handed to BaseBackup or StartFrom under the
// system temporary directory (t.TempDir()) is made reachable for nobody by
// adding search permission (o+x, not listing) to its root-owned ancestors
// there.
//
// A package shares one server between its tests with Shared, and gives
// each test its own database with CreateDatabase; a test that stops,
// crashes or restores a server starts its own with Start or StartFrom.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// port is the server's port number; it only names the socket file, and
// every server has a socket directory of its own.
const port = 5432

// statementTimeout bounds a connection and one statement of Exec and
// CreateDatabase, so that a wedged server fails the test instead of
// hanging it until the test binary's timeout.
const statementTimeout = time.Minute

// Server is one PostgreSQL server: a data directory made by initdb in a
// fresh temporary directory, listening only on a Unix socket in that
// directory (listen_addresses is empty), run as an unprivileged user (nobody)
// when the tests run as root, trust authentication for user postgres.
type Server struct {
	bin     string // the folder holding initdb, postgres and pg_basebackup
	root    string // the server's own directory: socket, log, and the data directory of Start
	dataDir string
	logPath string
	cred    *syscall.Credential // the user server programs run as; nil: the test's own user
	shared  bool

	mu   sync.Mutex // guards proc
	proc *postmaster
}

type config struct {
	settings [][2]string
}

// Option configures a server started by Start or StartFrom.
type Option func(*config)

// Setting adds "name = value" to postgresql.conf (e.g. Setting("wal_level",
// "replica")). value is written as postgresql.conf reads it: a string with
// spaces or special characters needs its single quotes
// (Setting("archive_command", "'cp %p /archive/%f'")). Settings come after
// pgtest's own, so they override them.
func Setting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// Start starts a new server; it is stopped and its directory removed when
// t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := start(opts)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			t.Errorf("PostgreSQL server %s: %v", s.root, err)
		}
	})
	return s
}

var (
	// mainRuns is set by Main: Shared refuses to start a server nobody
	// would stop.
	mainRuns atomic.Bool
	shared   struct {
		mu      sync.Mutex
		started bool
		server  *Server
		err     error
	}
)

// Main runs a package's tests (m.Run) and then stops every server Shared
// started; packages that use Shared call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	mainRuns.Store(true)
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil {
		if err := shared.server.shutdown(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: shared PostgreSQL server %s: %v\n", shared.server.root, err)
			if code == 0 {
				code = 1
			}
		}
		shared.server = nil
	}
	return code
}

// Shared is the test binary's one shared server, started on first use and
// stopped by Main. If its start failed, every caller fails with that
// error. Tests must not Stop, Kill or Restart it: they give each test a
// database of its own (CreateDatabase) and may run in parallel.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !mainRuns.Load() {
		t.Fatal("pgtest.Shared: the package's TestMain must run its tests through pgtest.Main, which stops the shared server")
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.started {
		shared.started = true
		shared.server, shared.err = start(nil)
		if shared.server != nil {
			shared.server.shared = true
		}
	}
	if shared.err != nil {
		t.Fatalf("start the shared PostgreSQL server: %v", shared.err)
	}
	return shared.server
}

// StartFrom starts a server on an existing data directory (e.g. a restored
// base backup): it gives the directory to the server's user with the mode
// PostgreSQL requires (0700), points the server at a socket directory of
// its own, and starts it. The server is stopped when t ends; dataDir is
// left in place.
func StartFrom(t testing.TB, dataDir string, opts ...Option) *Server {
	t.Helper()
	s, err := startFrom(dataDir, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL on %s: %v", dataDir, err)
	}
	t.Cleanup(func() {
		if err := s.shutdown(); err != nil {
			t.Errorf("PostgreSQL server on %s: %v", s.dataDir, err)
		}
	})
	return s
}

func start(opts []Option) (*Server, error) {
	s, err := newServer()
	if err != nil {
		return nil, err
	}
	s.dataDir = filepath.Join(s.root, "data")
	// -N: initdb's own fsync only costs time here; the server keeps fsync on.
	out, err := s.command("initdb", "-D", s.dataDir, "--auth=trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "-N").CombinedOutput()
	if err != nil {
		os.RemoveAll(s.root)
		return nil, fmt.Errorf("initdb %s: %w\n%s", s.dataDir, err, out)
	}
	if err := s.configure(opts); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	if err := s.launch(); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	return s, nil
}

func startFrom(dataDir string, opts []Option) (*Server, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		return nil, fmt.Errorf("%s is not a PostgreSQL data directory: %w", dataDir, err)
	}
	s, err := newServer()
	if err != nil {
		return nil, err
	}
	s.dataDir = dataDir
	if err := s.ownDataDir(); err != nil {
		os.RemoveAll(s.root)
		return nil, err
	}
	if err := s.configure(opts); err != nil {
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
// server's own directory. Not t.TempDir(): nobody cannot enter it.
func newServer() (*Server, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "signerd-pg-*")
	if err != nil {
		return nil, fmt.Errorf("make the server directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(root, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(root)
			return nil, fmt.Errorf("give %s to uid %d: %w", root, cred.Uid, err)
		}
	}
	return &Server{bin: bin, root: root, logPath: filepath.Join(root, "log"), cred: cred}, nil
}

// configure appends pgtest's settings and opts to postgresql.conf, where
// the last occurrence of a setting wins: a restored backup's settings for
// its old server (its socket directory above all) are overridden.
func (s *Server) configure(opts []Option) error {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	var b strings.Builder
	b.WriteString("\n# pgtest\n")
	for _, kv := range append([][2]string{
		{"listen_addresses", "''"},
		{"unix_socket_directories", quoteConf(s.root)},
		{"port", strconv.Itoa(port)},
		{"max_connections", "100"},
		{"fsync", "on"},
	}, c.settings...) {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
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

// DSN is a libpq keyword DSN for database on the server as user postgres:
// "host=<socketdir> port=<port> user=postgres dbname=<db> sslmode=disable".
func (s *Server) DSN(database string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable",
		quoteDSN(s.root), port, quoteDSN(database))
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

// DatabaseName is the database a DSN names (dbname=…): what DSN needs to
// reach the same database on another server, e.g. one started from a base
// backup.
func DatabaseName(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse DSN %q: %v", dsn, err)
	}
	return cfg.Database
}

var databases atomic.Int64

// CreateDatabase creates a new empty database with a name unique in the
// test binary and returns its DSN.
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%d", databases.Add(1))
	s.Exec(t, "postgres", "CREATE DATABASE "+name)
	return s.DSN(name)
}

// Exec runs one statement in database (a name, or a DSN whose database is
// used, as CreateDatabase returns) on this server, and fails t on error.
func (s *Server) Exec(t testing.TB, database, sql string, args ...any) {
	t.Helper()
	if strings.Contains(database, "=") {
		database = DatabaseName(t, database)
	}
	if err := s.exec(database, sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) exec(database, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), statementTimeout)
	defer cancel()
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

// Stop shuts the server down as pg_ctl stop -m fast does (SIGINT: active
// transactions roll back, then a checkpoint) and waits until it is down.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.refuseShared(t, "Stop")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("stop PostgreSQL %s: not running", s.root)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("stop PostgreSQL %s: %v", s.root, err)
	}
}

// Kill crashes the server: SIGKILL to the postmaster, as a power cut would
// end it but for the page cache. It returns once the postmaster's other
// processes, which exit by themselves when they notice it gone, have
// exited too and released its shared memory, so that Restart can start
// the server again.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.refuseShared(t, "Kill")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("kill PostgreSQL %s: not running", s.root)
	}
	if err := s.kill(); err != nil {
		t.Fatalf("kill PostgreSQL %s: %v", s.root, err)
	}
}

// Restart starts the server again on the same data directory, socket
// directory and port, after Stop or Kill (after Kill, PostgreSQL recovers
// from its WAL first).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.refuseShared(t, "Restart")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		t.Fatalf("restart PostgreSQL %s: still running; Stop or Kill it first", s.root)
	}
	if err := s.stop(); err != nil {
		// It crashed by itself: the test sees that, rather than a restart.
		t.Fatalf("restart PostgreSQL %s: %v", s.root, err)
	}
	if err := s.launch(); err != nil {
		t.Fatalf("restart PostgreSQL %s: %v", s.root, err)
	}
}

func (s *Server) refuseShared(t testing.TB, what string) {
	t.Helper()
	if s.shared {
		t.Fatalf("pgtest: %s on the shared server would break the other tests using it; Start a server of your own", what)
	}
}

// BaseBackup takes a base backup of the running server into dir with
// pg_basebackup -D dir -X stream -c fast (and --no-sync), as the server's
// user: a data directory StartFrom can start. dir is created, owned by that
// user with mode 0700; it must not exist, or be empty.
func (s *Server) BaseBackup(t testing.TB, dir string) {
	t.Helper()
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("base backup to %s: %v", dir, err)
	}
	if err := s.makeBackupDir(dir); err != nil {
		t.Fatalf("base backup to %s: %v", dir, err)
	}
	// --no-sync: the server started on the backup syncs its data directory
	// as it begins recovery, so syncing it here too only costs time.
	out, err := s.command("pg_basebackup", "-D", dir, "-X", "stream", "-c", "fast", "--no-sync",
		"-h", s.root, "-p", strconv.Itoa(port), "-U", "postgres", "--no-password").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup of %s to %s: %v\n%s", s.root, dir, err, out)
	}
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

// shutdown stops the server if it runs and removes its own directory (not
// the data directory of StartFrom).
func (s *Server) shutdown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopErr := s.stop()
	if err := os.RemoveAll(s.root); err != nil {
		return errors.Join(stopErr, fmt.Errorf("remove %s: %w", s.root, err))
	}
	return stopErr
}
