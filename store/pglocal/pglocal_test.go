package pglocal

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// queryOne runs sql on dsn and returns its one text value.
func queryOne(t *testing.T, dsn, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// TestServerLifecycle is the bench's use: a server in a folder only its
// root-owned maker may enter, with settings of its own, a database, a
// stop and restart, and Remove leaving nothing behind.
func TestServerLifecycle(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir() // mode 0700: the server's user is let through
	s, err := Start(parent, Setting{"shared_buffers", "32MB"}, Setting{"synchronous_commit", "on"})
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			s.Remove()
		}
	})
	if filepath.Dir(s.SocketDir()) != parent || filepath.Dir(s.DataDir()) != s.SocketDir() {
		t.Errorf("socket directory %s, data directory %s: want both in %s", s.SocketDir(), s.DataDir(), parent)
	}
	dsn, err := s.CreateDatabase(ctx, "bench_db")
	if err != nil {
		t.Fatal(err)
	}
	for setting, want := range map[string]string{"shared_buffers": "32MB", "synchronous_commit": "on", "fsync": "on",
		"listen_addresses": "", "unix_socket_directories": s.SocketDir()} {
		if got := queryOne(t, dsn, "SELECT current_setting($1)", setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if got := queryOne(t, dsn, "SELECT current_database()"); got != "bench_db" {
		t.Errorf("CreateDatabase's DSN reaches %q", got)
	}
	if err := s.Exec(ctx, "bench_db", "CREATE TABLE kept (v text)"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "bench_db", "INSERT INTO kept VALUES ($1)", "before stop"); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if pid == 0 {
		t.Fatal("PID of a running server is 0")
	}

	if err := s.Restart(); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Errorf("Restart of a running server: %v, want a refusal", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Errorf("PID after Stop is %d", s.PID())
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
		t.Errorf("postmaster %d runs after Stop", pid)
	}
	for name, call := range map[string]func() error{"Stop": s.Stop, "Kill": s.Kill} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "not running") {
			t.Errorf("%s of a stopped server: %v, want not running", name, err)
		}
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := queryOne(t, dsn, "SELECT v FROM kept"); got != "before stop" {
		t.Errorf("after restart: %q", got)
	}

	pid = s.PID()
	removed = true
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.SocketDir()); !os.IsNotExist(err) {
		t.Errorf("server directory after Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
		t.Errorf("postmaster %d runs after Remove", pid)
	}
}

// TestStartFailures: each way Start and StartFrom fail says why, and
// leaves nothing in the parent folder.
func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bin   string // $SIGNERD_PG_BIN; "" leaves it unset
		start func(parent string) error
		want  string
	}{
		{"no programs in SIGNERD_PG_BIN", t.TempDir(), func(parent string) error {
			_, err := Start(parent)
			return err
		}, "make deps installs Debian's postgresql"},
		{"SIGNERD_PG_BIN missing", filepath.Join(t.TempDir(), "absent"), func(parent string) error {
			_, err := Start(parent)
			return err
		}, "make deps installs Debian's postgresql"},
		{"StartFrom a folder that is no data directory", "", func(parent string) error {
			_, err := StartFrom(parent, t.TempDir())
			return err
		}, "is not a PostgreSQL data directory"},
		{"parent missing", "", func(parent string) error {
			_, err := Start(filepath.Join(parent, "absent"))
			return err
		}, "make the server directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bin != "" {
				t.Setenv(BinEnv, tc.bin)
			}
			parent := t.TempDir()
			err := tc.start(parent)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(parent); len(entries) > 0 {
				t.Errorf("left in the parent folder: %v", entries)
			}
		})
	}
}
