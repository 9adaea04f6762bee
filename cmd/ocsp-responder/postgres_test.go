package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/store"
	"signerd/store/pgtest"
)

// createSchema creates signerd's schema in the database dsn names, as an
// operator does before signerd's first start.
func createSchema(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := store.UpgradePostgres(ctx, dsn); err != nil {
		t.Fatalf("create the schema: %v", err)
	}
}

// responderRole makes a login role granted what the README says the
// responder needs, and nothing more, and returns dsn as that role.
func responderRole(t *testing.T, srv *pgtest.Server, dsn string) string {
	t.Helper()
	db := pgtest.DatabaseName(t, dsn)
	role := "ocsp_" + db
	srv.Exec(t, db, "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		// Roles are the server's, not the database's.
		srv.Exec(t, db, "DROP OWNED BY "+role)
		srv.Exec(t, "postgres", "DROP ROLE "+role)
	})
	for _, grant := range []string{"GRANT CONNECT ON DATABASE %[2]s TO %[1]s", "GRANT USAGE ON SCHEMA public TO %[1]s",
		"GRANT SELECT ON ocsp_responses, schema_migrations TO %[1]s"} {
		srv.Exec(t, db, fmt.Sprintf(grant, role, db))
	}
	roleDSN := strings.Replace(dsn, "user=postgres", "user="+role, 1)
	if roleDSN == dsn {
		t.Fatalf("no user=postgres in the test server's DSN %q", dsn)
	}
	return roleDSN
}

func postgresSourceYAML(dsn, more string) string {
	return fmt.Sprintf("source: {postgres: {dsn: %s%s}}\n", strconv.Quote(dsn), more)
}

// TestEndToEndPostgres: signerd on a PostgreSQL store; the responder
// reads the responses it commits from the same database, as a role
// granted only the responses and the schema version.
func TestEndToEndPostgres(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.CreateDatabase(t)
	createSchema(t, dsn)
	roleDSN := responderRole(t, srv, dsn)
	d := startSignerd(t, "{postgres: {dsn: "+strconv.Quote(dsn)+"}}")
	endToEnd(t, d, postgresSourceYAML(roleDSN, ", cache_ttl: 1s"))
}

// TestPostgresUnavailable: while the database cannot be reached, or a
// read waits on a lock past the responder's timeout, the responder
// answers tryLater and logs why, and serves again once it can read; a
// responder started while the database is down starts, answers tryLater,
// and serves once the database is back.
func TestPostgresUnavailable(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase(t)
	createSchema(t, dsn)
	ca := newCA(t, hsm.SM2, "CA")
	serial := []byte{0x5e, 0x01}
	leaf := ca.leaf(t, serial)
	single := good(serial, time.Hour)
	st, err := store.OpenPostgres(dsn, store.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx *store.Tx) error {
		return tx.PutOCSPResponse(&store.OCSPResponse{Issuer: ca.id(), Serial: serial, ThisUpdate: single.ThisUpdate,
			NextUpdate: single.NextUpdate, DER: ca.sign(t, single, ocsp.SHA1)}, single.NextUpdate)
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	config := fmt.Sprintf("issuers: [%s]\n%s", ca.pem, postgresSourceYAML(dsn, ", cache_ttl: 100ms, timeout: 300ms"))
	ask := []string{"-issuer", ca.pem, "-cert", leaf}
	r := startResponder(t, config)
	awaitOCSP(t, r.url(), ask, leaf+": good")

	// A read waiting on a lock: answered when the timeout passes.
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE ocsp_responses IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // past cache_ttl: the next request reads
	if o := queryOCSP(t, r.url(), ask...); !strings.Contains(o.out, "Responder Error: trylater (3)") {
		t.Errorf("a read stalled on a lock:\n%s", o.out)
	}
	tx.Rollback(ctx)
	awaitOCSP(t, r.url(), ask, leaf+": good")

	// The server down: refused connections.
	srv.Stop(t)
	awaitOCSP(t, r.url(), ask, "Responder Error: trylater (3)")
	if !strings.Contains(r.logText(), "source unavailable") {
		t.Errorf("no unavailability in the log:\n%s", r.logText())
	}
	down := startResponder(t, config)
	if !strings.Contains(down.logText(), "store unavailable at start") {
		t.Errorf("a start during the outage is not logged:\n%s", down.logText())
	}
	if o := queryOCSP(t, down.url(), ask...); !strings.Contains(o.out, "Responder Error: trylater (3)") {
		t.Errorf("started during the outage:\n%s", o.out)
	}
	srv.Restart(t)
	awaitOCSP(t, r.url(), ask, leaf+": good")
	awaitOCSP(t, down.url(), ask, leaf+": good")
	r.stop(t)
	if !strings.Contains(r.logText(), `"unavailable":`) || strings.Contains(r.logText(), `"unavailable":0`) {
		t.Errorf("the tryLater answers are not counted at stop:\n%s", r.logText())
	}
}

// The responder refuses at start a database it can reach and may not
// read (a role without the grant on ocsp_responses) or whose schema is
// not signerd's, naming what is wrong, and a DSN holding a password
// without quoting it.
func TestPostgresStartRefused(t *testing.T) {
	srv := pgtest.Shared(t)
	ca := newCA(t, hsm.SM2, "CA")
	noSchema := srv.CreateDatabase(t)
	dsn := srv.CreateDatabase(t)
	createSchema(t, dsn)
	roleDSN := responderRole(t, srv, dsn)
	db := pgtest.DatabaseName(t, dsn)
	srv.Exec(t, dsn, "REVOKE SELECT ON ocsp_responses FROM ocsp_"+db)
	for _, tc := range []struct{ name, dsn, want, never string }{
		{"no grant on the responses", roleDSN, "permission denied", ""},
		{"no schema", noSchema, "schema", ""},
		{"password", dsn + " password=hunter2", "passfile", "hunter2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := startFails(t, fmt.Sprintf("issuers: [%s]\n%s", ca.pem, postgresSourceYAML(tc.dsn, "")))
			if !strings.Contains(out, tc.want) || tc.never != "" && strings.Contains(out, tc.never) {
				t.Fatalf("want an exit about %q (never showing %q):\n%s", tc.want, tc.never, out)
			}
		})
	}
}

// startFails runs the responder on config (YAML, without listen), which
// must make it exit at start, and returns what it wrote.
func startFails(t *testing.T, config string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ocsp-responder.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"+config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, responderBin, "--config", path).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("ocsp-responder did not exit at start (%v):\n%s", err, out)
	}
	return string(out)
}
