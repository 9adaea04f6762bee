package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"signerd/store/pglocal"
)

func TestMain(m *testing.M) {
	os.Exit(Main(m))
}

// query runs sql on dsn and returns the first column of each row, which
// sql casts to text.
func query(t *testing.T, dsn, sql string, args ...any) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	values, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return values
}

func postmasterPID(t *testing.T, s *Server) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which may hold spaces and
	// parentheses.
	end := strings.LastIndexByte(string(raw), ')')
	fields := strings.Fields(string(raw[end+1:]))
	return end >= 0 && len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// processUID is the real uid pid runs as.
func processUID(t *testing.T, pid int) uint32 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, err := strconv.ParseUint(strings.Fields(rest)[0], 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(uid)
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return 0
}

func owner(t *testing.T, path string) (uid uint32, perm os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Uid, info.Mode().Perm()
}

// wantUser is the uid server programs must run as: nobody's under root,
// which PostgreSQL refuses, else the tests' own.
func wantUser(t *testing.T) uint32 {
	t.Helper()
	if os.Geteuid() != 0 {
		return uint32(os.Geteuid())
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(uid)
}

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	s := Start(t, Setting("max_connections", "23"))
	t.Logf("Start (initdb and server start) took %v", time.Since(begin))

	pid := postmasterPID(t, s)
	if got, want := processUID(t, pid), wantUser(t); got != want {
		t.Errorf("postmaster runs as uid %d, want %d", got, want)
	}
	if uid, perm := owner(t, s.DataDir()); uid != wantUser(t) || perm != 0o700 {
		t.Errorf("data directory owned by %d mode %v, want %d 0700", uid, perm, wantUser(t))
	}
	if _, err := os.Stat(filepath.Join(s.SocketDir(), ".s.PGSQL."+strconv.Itoa(pglocal.Port))); err != nil {
		t.Errorf("socket not in the socket directory: %v", err)
	}
	for setting, want := range map[string]string{"max_connections": "23", "listen_addresses": "", "fsync": "on",
		"wal_level": "replica", "unix_socket_directories": s.SocketDir()} {
		if got := query(t, s.DSN("postgres"), "SELECT current_setting($1)", setting); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}

	dsn := s.CreateDatabase(t)
	s.Exec(t, dsn, "CREATE TABLE kept (v text)")
	s.Exec(t, dsn, "INSERT INTO kept VALUES ($1)", "before stop")

	s.Stop(t)
	if running(pid) {
		t.Fatalf("postmaster %d runs after Stop", pid)
	}
	if conn, err := pgx.Connect(context.Background(), dsn); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected to a stopped server")
	}

	s.Restart(t)
	if got := query(t, dsn, "SELECT v FROM kept"); !slices.Equal(got, []string{"before stop"}) {
		t.Errorf("after restart: %q, want [before stop]", got)
	}
}

func TestKillRestartKeepsCommitted(t *testing.T) {
	t.Parallel()
	s := Start(t)
	dsn := s.CreateDatabase(t)
	s.Exec(t, dsn, "CREATE TABLE kept (v text)")
	s.Exec(t, dsn, "INSERT INTO kept VALUES ('committed')")

	ctx := context.Background()
	open, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kept VALUES ('uncommitted')"); err != nil {
		t.Fatal(err)
	}
	// Every process of the server, as the server itself lists them.
	processes := query(t, dsn, "SELECT pid::text FROM pg_stat_activity")
	if len(processes) < 3 {
		t.Fatalf("pg_stat_activity lists %d processes", len(processes))
	}
	postmaster := postmasterPID(t, s)

	s.Kill(t)
	for _, p := range append(processes, strconv.Itoa(postmaster)) {
		pid, _ := strconv.Atoi(p)
		if running(pid) {
			t.Errorf("process %d of the killed server still runs", pid)
		}
	}
	if err := tx.Commit(ctx); err == nil {
		t.Fatal("a transaction committed on a killed server")
	}

	s.Restart(t)
	if got := query(t, dsn, "SELECT v FROM kept ORDER BY v"); !slices.Equal(got, []string{"committed"}) {
		t.Errorf("after kill and restart: %q, want [committed]", got)
	}
	// A second crash, now of a server that recovered from the first.
	s.Exec(t, dsn, "INSERT INTO kept VALUES ('after recovery')")
	s.Kill(t)
	s.Restart(t)
	if got := query(t, dsn, "SELECT v FROM kept ORDER BY v"); !slices.Equal(got, []string{"after recovery", "committed"}) {
		t.Errorf("after the second kill and restart: %q", got)
	}
}

func TestDatabasesAreSeparate(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	if again := Shared(t); again != s {
		t.Fatal("Shared started a second server")
	}
	a, b := s.CreateDatabase(t), s.CreateDatabase(t)
	if a == b {
		t.Fatalf("two databases with one DSN %q", a)
	}
	s.Exec(t, a, "CREATE TABLE only_in_a (v int)")
	s.Exec(t, DatabaseName(t, a), "INSERT INTO only_in_a VALUES ($1)", 7)
	if got := query(t, a, "SELECT v::text FROM only_in_a"); !slices.Equal(got, []string{"7"}) {
		t.Errorf("database a: %q, want [7]", got)
	}
	if got := query(t, b, "SELECT (to_regclass('only_in_a') IS NULL)::text"); !slices.Equal(got, []string{"true"}) {
		t.Errorf("database b sees a's table: %q", got)
	}
}

func TestBaseBackupStartFrom(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	dsn := s.CreateDatabase(t)
	s.Exec(t, dsn, "CREATE TABLE kept (v text)")
	s.Exec(t, dsn, "INSERT INTO kept VALUES ('before backup')")

	// Below t.TempDir(), closed to the server's user until BaseBackup opens it.
	dir := filepath.Join(t.TempDir(), "backup")
	begin := time.Now()
	s.BaseBackup(t, dir)
	t.Logf("BaseBackup took %v", time.Since(begin))
	if uid, perm := owner(t, dir); uid != wantUser(t) || perm != 0o700 {
		t.Errorf("backup owned by %d mode %v, want %d 0700", uid, perm, wantUser(t))
	}
	s.Exec(t, dsn, "INSERT INTO kept VALUES ('after backup')")

	begin = time.Now()
	r := StartFrom(t, dir)
	t.Logf("StartFrom took %v", time.Since(begin))
	if r.DataDir() != dir || r.SocketDir() == s.SocketDir() {
		t.Errorf("restored server: data %s socket %s; original socket %s", r.DataDir(), r.SocketDir(), s.SocketDir())
	}
	restored := r.DSN(DatabaseName(t, dsn))
	if got := query(t, restored, "SELECT v FROM kept"); !slices.Equal(got, []string{"before backup"}) {
		t.Errorf("restored: %q, want [before backup]", got)
	}
	// Exec given the original's DSN acts on the server it is called on.
	r.Exec(t, dsn, "INSERT INTO kept VALUES ('restored')")
	if got := query(t, restored, "SELECT v FROM kept ORDER BY v"); !slices.Equal(got, []string{"before backup", "restored"}) {
		t.Errorf("restored after insert: %q", got)
	}
	if got := query(t, dsn, "SELECT v FROM kept ORDER BY v"); !slices.Equal(got, []string{"after backup", "before backup"}) {
		t.Errorf("original: %q", got)
	}
}

// servedBy is the data directory of the server a connection to dsn
// reaches.
func servedBy(t *testing.T, dsn string) string {
	t.Helper()
	return query(t, dsn, "SELECT current_setting('data_directory')")[0]
}

// TestStandbyFailover: a standby made by StartStandby is synchronous and
// refuses writes; after the primary's crash and the standby's promotion it
// holds every commit the primary acknowledged and takes writes, and a
// FailoverDSN, which reached the primary, now reaches it.
func TestStandbyFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := Start(t)
	begin := time.Now()
	standby := primary.StartStandby(t, "standby_a")
	t.Logf("StartStandby took %v", time.Since(begin))
	if standby.SocketDir() == primary.SocketDir() || standby.DataDir() == primary.DataDir() {
		t.Fatalf("standby shares the primary's directories: %s, %s", standby.SocketDir(), standby.DataDir())
	}
	got := query(t, primary.DSN("postgres"), "SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication")
	if !slices.Equal(got, []string{"standby_a streaming sync"}) {
		t.Errorf("the primary's replication: %q, want [standby_a streaming sync]", got)
	}
	for setting, want := range map[string]string{"synchronous_commit": "on", "synchronous_standby_names": `"standby_a"`} {
		if got := query(t, primary.DSN("postgres"), "SELECT current_setting($1)", setting); !slices.Equal(got, []string{want}) {
			t.Errorf("primary: %s = %q, want %q", setting, got, want)
		}
	}

	conn, err := pgx.Connect(ctx, standby.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE refused (n int)")
	conn.Close(ctx)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Fatalf("write on the standby before promotion: %v; want read-only transaction (25006)", err)
	}

	dsn := primary.CreateDatabase(t)
	failover := FailoverDSN(t, dsn, primary, standby)
	if got := servedBy(t, failover); got != primary.DataDir() {
		t.Fatalf("the failover DSN reaches %s, want the primary %s", got, primary.DataDir())
	}
	writer, err := pgx.Connect(ctx, failover)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	const acknowledged = 50
	if _, err := writer.Exec(ctx, "CREATE TABLE kept (n int)"); err != nil {
		t.Fatal(err)
	}
	for i := range acknowledged {
		if _, err := writer.Exec(ctx, "INSERT INTO kept VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}

	primary.Kill(t)
	if conn, err := pgx.Connect(ctx, failover); err == nil {
		conn.Close(ctx)
		t.Fatal("the failover DSN connected with the primary down and the standby not promoted")
	}
	standby.Promote(t)
	if got := servedBy(t, failover); got != standby.DataDir() {
		t.Fatalf("after promotion the failover DSN reaches %s, want the standby %s", got, standby.DataDir())
	}
	want := fmt.Sprint(acknowledged)
	if got := query(t, failover, "SELECT count(DISTINCT n)::text FROM kept"); !slices.Equal(got, []string{want}) {
		t.Errorf("promoted standby holds %q of the %s acknowledged rows", got, want)
	}
	standby.Exec(t, dsn, "INSERT INTO kept VALUES (-1)")
}

// TestStandbyMakesCommitsWait: with its synchronous standby down, the
// primary's commit waits for it (wait event SyncRep), and, cancelled, says
// it was not replicated.
func TestStandbyMakesCommitsWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := Start(t)
	standby := primary.StartStandby(t, "standby_b")
	dsn := primary.CreateDatabase(t)
	standby.Stop(t)

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	notices := make(chan string, 10)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n.Message + ": " + n.Detail }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pid := conn.PgConn().PID()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "CREATE TABLE waited (n int)")
		done <- err
	}()

	admin, err := pgx.Connect(ctx, primary.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for waiting := false; !waiting; {
		select {
		case err := <-done:
			t.Fatalf("a commit with the synchronous standby down returned (%v) without waiting for it", err)
		case <-time.After(20 * time.Millisecond):
		}
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep')",
			int64(pid)).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.Exec(ctx, "SELECT pg_cancel_backend($1)", int64(pid)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the cancelled commit: %v; want it committed locally, with a warning", err)
	}
	close(notices)
	var got []string
	for n := range notices {
		got = append(got, n)
	}
	if len(got) != 1 || !strings.Contains(got[0], "might not have been replicated") {
		t.Errorf("the cancelled commit's notices: %q, want one saying it was not replicated", got)
	}
}

// fatalRecorder is a testing.TB whose Fatal ends the calling goroutine and
// records the message, so a test can check how this package fails one.
type fatalRecorder struct {
	testing.TB
	message string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatal(args ...any) {
	r.message = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs f with a fatalRecorder and returns its fatal message ("" if
// f did not fail).
func failure(t *testing.T, f func(testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.message
}

func TestMissingServerFailsWithInstallHint(t *testing.T) {
	for name, bin := range map[string]string{
		"empty folder":   t.TempDir(),
		"missing folder": filepath.Join(t.TempDir(), "absent"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(pglocal.BinEnv, bin)
			msg := failure(t, func(tb testing.TB) { Start(tb) })
			if !strings.Contains(msg, "make deps installs Debian's postgresql") {
				t.Errorf("Start with %s=%s failed with %q, want the make deps hint", pglocal.BinEnv, bin, msg)
			}
		})
	}
}

func TestSharedNeedsNoStopping(t *testing.T) {
	t.Parallel()
	s := Shared(t)
	for name, f := range map[string]func(testing.TB){"Stop": s.Stop, "Kill": s.Kill, "Restart": s.Restart,
		"StartStandby": func(tb testing.TB) { s.StartStandby(tb, "refused") }} {
		if msg := failure(t, f); !strings.Contains(msg, "shared server") {
			t.Errorf("%s on the shared server: %q, want a refusal", name, msg)
		}
	}
	if got := query(t, s.DSN("postgres"), "SELECT 'up'"); !slices.Equal(got, []string{"up"}) {
		t.Errorf("shared server after the refusals: %q", got)
	}
}

// childEnv makes the test binary a child of TestServersEndWithTheTestBinary.
const childEnv = "SIGNERD_PGTEST_CHILD"

// TestChild is the child's side of TestServersEndWithTheTestBinary: it
// starts a server as its mode says and prints its postmaster and
// directory.
func TestChild(t *testing.T) {
	mode := os.Getenv(childEnv)
	var s *Server
	switch mode {
	case "":
		t.Skip("runs as the child of TestServersEndWithTheTestBinary")
	case "shared":
		s = Shared(t)
	case "crash":
		s = Start(t)
	default:
		t.Fatalf("%s=%q", childEnv, mode)
	}
	fmt.Printf("server pid=%d root=%s\n", postmasterPID(t, s), s.SocketDir())
	if mode == "crash" {
		os.Exit(3) // as a timeout panic ends a test binary: no cleanups
	}
}

// TestServersEndWithTheTestBinary runs this test binary as a child that
// starts a server and ends: with Main after its tests (the shared server
// stopped, its directory gone), and without any cleanup (the server killed
// with the binary).
func TestServersEndWithTheTestBinary(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"shared", "crash"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), childEnv+"="+mode)
			out, err := cmd.Output()
			if mode == "shared" && err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var pid int
			var root string
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				if _, err := fmt.Sscanf(sc.Text(), "server pid=%d root=%s", &pid, &root); err == nil {
					break
				}
			}
			if pid == 0 {
				t.Fatalf("child printed no server (%v):\n%s", err, out)
			}
			if mode == "crash" {
				t.Cleanup(func() { os.RemoveAll(root) })
				// The parent-death signal is delivered as the child's
				// threads end, right after it exited.
				for deadline := time.Now().Add(30 * time.Second); running(pid) && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if running(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("postmaster %d outlived the test binary that started it", pid)
			}
			if _, err := os.Stat(root); mode == "shared" && err == nil {
				t.Errorf("the shared server's directory %s outlived Main", root)
			}
		})
	}
}
