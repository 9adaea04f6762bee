package pglocal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// standbyName is what a standby's name may be: it is written unquoted into
// a connection string and quoted into synchronous_standby_names, and
// PostgreSQL folds an unquoted name there to lower case.
var standbyName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// StartStandby makes a synchronous streaming standby of the running
// server s: a base backup of s made with pg_basebackup -R (which writes
// standby.signal and a primary_conninfo naming s's socket and
// application_name=name) into a new directory in parent ("" for the
// system temporary directory), started on a socket directory of its own
// with settings added after pglocal's own. Once the standby streams, s is
// made to wait for it at every commit: synchronous_commit = on and
// synchronous_standby_names = "name", by ALTER SYSTEM and a reload, and
// StartStandby returns once s reports the standby as synchronous.
//
// s needs wal_level replica (or logical), wal senders, and a pg_hba entry
// letting local replication connections in: PostgreSQL's defaults and
// initdb's pg_hba.conf give all three, and StartStandby checks the first
// two. synchronous_standby_names is set after the backup, so that the
// standby, once promoted, does not wait for a standby of its own.
//
// Remove stops the standby and removes its directory, data included.
func (s *Server) StartStandby(ctx context.Context, parent, name string, settings ...Setting) (*Server, error) {
	if !standbyName.MatchString(name) {
		return nil, fmt.Errorf("standby name %q: want lower-case letters, digits and underscores, a letter first", name)
	}
	primary, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return nil, fmt.Errorf("standby of %s: connect to the primary: %w", s.root, err)
	}
	defer primary.Close(context.Background())
	var walLevel string
	var senders int
	if err := primary.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int").
		Scan(&walLevel, &senders); err != nil {
		return nil, fmt.Errorf("standby of %s: %w", s.root, err)
	}
	if walLevel == "minimal" || senders == 0 {
		return nil, fmt.Errorf("standby of %s: the primary has wal_level = %s and max_wal_senders = %d; a standby needs replica and at least 1",
			s.root, walLevel, senders)
	}

	st, err := newServer(parent)
	if err != nil {
		return nil, err
	}
	st.dataDir = filepath.Join(st.root, "data")
	// -d: pg_basebackup -R copies its own connection's parameters into
	// primary_conninfo, so the standby's walreceiver connects under the
	// name synchronous_standby_names will list.
	if err := s.baseBackup(st.dataDir, "-R", "-d", "application_name="+name); err != nil {
		st.Remove()
		return nil, fmt.Errorf("standby of %s: %w", s.root, err)
	}
	if err := st.configure(settings); err != nil {
		st.Remove()
		return nil, err
	}
	if err := st.launch(); err != nil {
		st.Remove()
		return nil, fmt.Errorf("standby of %s: %w", s.root, err)
	}
	if err := waitReplication(ctx, primary, name, "state", "streaming"); err != nil {
		st.Remove()
		return nil, fmt.Errorf("standby %s of %s: %w; standby log:\n%s", name, s.root, err, st.logTail())
	}
	for _, sql := range []string{
		"ALTER SYSTEM SET synchronous_commit = on",
		"ALTER SYSTEM SET synchronous_standby_names = " + quoteConf(`"`+name+`"`),
		"SELECT pg_reload_conf()",
	} {
		if _, err := primary.Exec(ctx, sql); err != nil {
			st.Remove()
			return nil, fmt.Errorf("standby %s of %s: %s: %w", name, s.root, sql, err)
		}
	}
	if err := waitReplication(ctx, primary, name, "sync_state", "sync"); err != nil {
		st.Remove()
		return nil, fmt.Errorf("standby %s of %s: %w", name, s.root, err)
	}
	return st, nil
}

// waitReplication waits until the primary's pg_stat_replication shows
// column (state or sync_state) of the standby named name as want.
func waitReplication(ctx context.Context, primary *pgx.Conn, name, column, want string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	sql := "SELECT coalesce(string_agg(" + column + ", ','), '') FROM pg_stat_replication WHERE application_name = $1"
	var got string
	for {
		if err := primary.QueryRow(ctx, sql, name).Scan(&got); err != nil {
			return fmt.Errorf("waiting for the primary to show %s = %s: %w (last seen %q)", column, want, err, got)
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the primary shows the standby's %s as %q, not %s: %w", column, got, want, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Promote makes a standby a primary, as pg_ctl promote does (pg_promote,
// its SQL form), and returns once it takes writes: pg_is_in_recovery() is
// false.
func (s *Server) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("promote %s: %w", s.root, err)
	}
	defer conn.Close(context.Background())
	// wait_seconds as startTimeout: promotion ends recovery, which replays
	// whatever WAL the standby had received but not yet applied.
	var promoted bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, $1)", int(startTimeout/time.Second)).Scan(&promoted); err != nil {
		return fmt.Errorf("promote %s: %w", s.root, err)
	}
	if !promoted {
		return fmt.Errorf("promote %s: not promoted within %v; server log:\n%s", s.root, startTimeout, s.logTail())
	}
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("promote %s: %w", s.root, err)
	}
	if inRecovery {
		return fmt.Errorf("promote %s: pg_promote returned but the server is still in recovery", s.root)
	}
	return nil
}

// FailoverDSN is a libpq keyword DSN naming database on every one of
// servers, in order, with target_session_attrs=read-write: a connection
// goes to the first that takes writes, so a client follows a promoted
// standby without being told.
func FailoverDSN(database string, servers ...*Server) (string, error) {
	if len(servers) == 0 {
		return "", errors.New("failover DSN: no servers")
	}
	hosts := make([]string, len(servers))
	ports := make([]string, len(servers))
	for i, s := range servers {
		// libpq and pgx split host and port on commas, and know no escape
		// for one inside a host.
		if strings.Contains(s.root, ",") {
			return "", fmt.Errorf("failover DSN: socket directory %s holds a comma", s.root)
		}
		hosts[i], ports[i] = s.root, strconv.Itoa(Port)
	}
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable target_session_attrs=read-write",
		quoteDSN(strings.Join(hosts, ",")), strings.Join(ports, ","), quoteDSN(database)), nil
}
