// Package pgtest starts real PostgreSQL servers for tests: a data directory
// made by initdb in a fresh temporary directory, a server listening only on
// a Unix socket in that directory, and methods to create databases, run
// statements, stop, crash, restart and back up the server, and to give it
// a synchronous standby and promote that, each failing the test on error. The servers are those of store/pglocal, which says
// which programs run them and as which user (nobody when the tests run as
// root).
//
// A package shares one server between its tests with Shared, and gives
// each test its own database with CreateDatabase; a test that stops,
// crashes or restores a server starts its own with Start or StartFrom.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/store/pglocal"
)

// statementTimeout bounds a connection and one statement of Exec and
// CreateDatabase, so that a wedged server fails the test instead of
// hanging it until the test binary's timeout.
const statementTimeout = time.Minute

// Server is one PostgreSQL server (see pglocal.Server): listening only on
// a Unix socket in a fresh temporary directory, run as an unprivileged
// user (nobody) when the tests run as root, trust authentication for user
// postgres.
type Server struct {
	local  *pglocal.Server
	shared bool
}

type config struct {
	settings []pglocal.Setting
}

// Option configures a server started by Start or StartFrom.
type Option func(*config)

// Setting adds "name = value" to postgresql.conf (e.g. Setting("wal_level",
// "replica")). value is written as postgresql.conf reads it: a string with
// spaces or special characters needs its single quotes
// (Setting("archive_command", "'cp %p /archive/%f'")). Settings come after
// pgtest's own, so they override them.
func Setting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, pglocal.Setting{Name: name, Value: value}) }
}

func settings(opts []Option) []pglocal.Setting {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	return c.settings
}

// Start starts a new server; it is stopped and its directory removed when
// t ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	local, err := pglocal.Start("", settings(opts)...)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	s := &Server{local: local}
	t.Cleanup(func() {
		if err := s.local.Remove(); err != nil {
			t.Errorf("PostgreSQL server %s: %v", s.SocketDir(), err)
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
		if err := shared.server.local.Remove(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: shared PostgreSQL server %s: %v\n", shared.server.SocketDir(), err)
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
// error. Tests must not Stop, Kill or Restart it, nor give it a standby:
// they give each test a database of its own (CreateDatabase) and may run
// in parallel.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !mainRuns.Load() {
		t.Fatal("pgtest.Shared: the package's TestMain must run its tests through pgtest.Main, which stops the shared server")
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.started {
		shared.started = true
		var local *pglocal.Server
		if local, shared.err = pglocal.Start(""); shared.err == nil {
			shared.server = &Server{local: local, shared: true}
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
	local, err := pglocal.StartFrom("", dataDir, settings(opts)...)
	if err != nil {
		t.Fatalf("start PostgreSQL on %s: %v", dataDir, err)
	}
	s := &Server{local: local}
	t.Cleanup(func() {
		if err := s.local.Remove(); err != nil {
			t.Errorf("PostgreSQL server on %s: %v", s.DataDir(), err)
		}
	})
	return s
}

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return s.local.DataDir() }

// SocketDir is the directory holding the server's Unix socket (and its
// log, named log).
func (s *Server) SocketDir() string { return s.local.SocketDir() }

// DSN is a libpq keyword DSN for database on the server as user postgres:
// "host=<socketdir> port=<port> user=postgres dbname=<db> sslmode=disable".
func (s *Server) DSN(database string) string { return s.local.DSN(database) }

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
	ctx, cancel := context.WithTimeout(context.Background(), statementTimeout)
	defer cancel()
	dsn, err := s.local.CreateDatabase(ctx, fmt.Sprintf("t_%d", databases.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Exec runs one statement in database (a name, or a DSN whose database is
// used, as CreateDatabase returns) on this server, and fails t on error.
func (s *Server) Exec(t testing.TB, database, sql string, args ...any) {
	t.Helper()
	if strings.Contains(database, "=") {
		database = DatabaseName(t, database)
	}
	ctx, cancel := context.WithTimeout(context.Background(), statementTimeout)
	defer cancel()
	if err := s.local.Exec(ctx, database, sql, args...); err != nil {
		t.Fatal(err)
	}
}

// Stop shuts the server down as pg_ctl stop -m fast does (SIGINT: active
// transactions roll back, then a checkpoint) and waits until it is down.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.refuseShared(t, "Stop")
	if err := s.local.Stop(); err != nil {
		t.Fatal(err)
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
	if err := s.local.Kill(); err != nil {
		t.Fatal(err)
	}
}

// Restart starts the server again on the same data directory, socket
// directory and port, after Stop or Kill (after Kill, PostgreSQL recovers
// from its WAL first). A server that crashed by itself fails the test
// rather than being restarted.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.refuseShared(t, "Restart")
	if err := s.local.Restart(); err != nil {
		t.Fatal(err)
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
	if err := s.local.BaseBackup(dir); err != nil {
		t.Fatal(err)
	}
}

// StartStandby makes a synchronous streaming standby of s, named name
// (lower-case letters, digits, underscores), from a base backup taken with
// pg_basebackup -R, and makes s wait for it at every commit
// (synchronous_commit = on, synchronous_standby_names = "name"); see
// pglocal.Server.StartStandby. It returns once s reports the standby as
// synchronous. The standby is stopped and its directory removed when t
// ends.
func (s *Server) StartStandby(t testing.TB, name string, opts ...Option) *Server {
	t.Helper()
	s.refuseShared(t, "StartStandby")
	ctx, cancel := context.WithTimeout(context.Background(), 2*statementTimeout)
	defer cancel()
	local, err := s.local.StartStandby(ctx, "", name, settings(opts)...)
	if err != nil {
		t.Fatal(err)
	}
	st := &Server{local: local}
	t.Cleanup(func() {
		if err := st.local.Remove(); err != nil {
			t.Errorf("PostgreSQL standby %s: %v", st.SocketDir(), err)
		}
	})
	return st
}

// Promote makes the standby s a primary and returns once it takes writes.
func (s *Server) Promote(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*statementTimeout)
	defer cancel()
	if err := s.local.Promote(ctx); err != nil {
		t.Fatal(err)
	}
}

// FailoverDSN is a DSN naming database (a name, or a DSN whose database is
// used) on every one of servers, in order, with
// target_session_attrs=read-write: connections go to the first that takes
// writes.
func FailoverDSN(t testing.TB, database string, servers ...*Server) string {
	t.Helper()
	if strings.Contains(database, "=") {
		database = DatabaseName(t, database)
	}
	locals := make([]*pglocal.Server, len(servers))
	for i, s := range servers {
		locals[i] = s.local
	}
	dsn, err := pglocal.FailoverDSN(database, locals...)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}
