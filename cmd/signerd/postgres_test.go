package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/api"
	"signerd/store"
	"signerd/store/pgtest"
)

// queryRow runs sql on the database dsn names and scans its one row.
func queryRow(t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect for %q: %v", sql, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// awaitHealth polls signerd's health as the operator until it answers
// status (200 or 503) or limit passes.
func (d *daemonProc) awaitHealth(t *testing.T, status int, limit time.Duration) reply {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r := d.callAs(t, operatorUID, "GET", "/v1/health")
		if r.status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("health still %d %s after %v, want %d", r.status, r.body, limit, status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSignerdOnPostgres: signerd refuses a database without its schema,
// naming the command that creates it (start never does). With the schema
// it serves from the database and logs where it is without the DSN; a
// store backup through signerd is refused with backup_not_embedded,
// audited once as a refused store.backup and nothing more (no seal); a
// second signerd on the same database refuses to start.
func TestSignerdOnPostgres(t *testing.T) {
	srv := pgtest.Shared(t)
	d := newDaemonProc(t, "")
	d.configurePostgres(t, srv, srv.CreateDatabase(t))
	if out, code := refusedStart(t, d); code != exitFailure || !strings.Contains(out, "holds no signerd schema") ||
		!strings.Contains(out, "signerctl store upgrade") {
		t.Fatalf("signerd on a database without its schema: exit %d, want %d and the upgrade named\n%s", code, exitFailure, out)
	}
	upgradePostgres(t, d.dsn)
	d.start(t)
	c := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "pg-1", "person-sign")))
	want(t, "revoke", d.call(t, "POST", "/v1/certificates/"+c.Serial+"/revoke", `{"reason":"keyCompromise"}`), 200, "")
	want(t, "CRL", d.callAs(t, operatorUID, "POST", "/v1/crl"), 201, "")
	want(t, "health", d.callAs(t, operatorUID, "GET", "/v1/health"), 200, "")
	backup := d.callAs(t, operatorUID, "POST", "/v1/store/backup")
	want(t, "store backup", backup, 409, string(api.CodeBackupNotEmbedded))
	if !strings.Contains(string(backup.body), "pg_basebackup and WAL archiving") {
		t.Errorf("the refusal does not say how to back up: %s", backup.body)
	}
	if v := d.metric(t, `signerd_requests_total{code="backup_not_embedded",route="POST /v1/store/backup",status="409"}`); v != 1 {
		t.Errorf("refused backups counted %v, want 1", v)
	}

	second := &daemonProc{ca: d.ca, dir: d.dir, socket: filepath.Join(d.dir, "second.sock"), config: filepath.Join(d.dir, "second.yaml")}
	raw, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second.config, []byte(strings.Replace(string(raw), d.socket, second.socket, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := refusedStart(t, second); code != exitFailure || !strings.Contains(out, "in use by another signerd") {
		t.Fatalf("a second signerd on the database: exit %d, want %d and \"in use by another signerd\"\n%s", code, exitFailure, out)
	}
	want(t, "the first serves on", d.call(t, "GET", "/v1/certificates/"+c.Serial, ""), 200, "")

	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	logged := d.log.String()
	if !strings.Contains(logged, `"msg":"store opened on PostgreSQL","host":"`+d.pg.SocketDir()+`","dbname":"`+pgtest.DatabaseName(t, d.dsn)+`"`) {
		t.Errorf("no log line naming the database's host and name:\n%s", logged)
	}
	if strings.Contains(logged, d.dsn) || strings.Contains(logged, "sslmode=disable") {
		t.Errorf("the DSN is logged:\n%s", logged)
	}
	st := d.openStopped(t)
	defer st.Close()
	refused := 0
	for _, ev := range events(t, st) {
		switch {
		case ev.Action == "store.backup" && ev.Outcome == store.OutcomeRefused && strings.Contains(ev.Reason, "pg_basebackup"):
			refused++
		case ev.Action == "store.backup" || ev.Action == "audit.seal" && strings.Contains(ev.Reason, "store backup"):
			t.Errorf("a refused backup left %s %s %q", ev.Action, ev.Outcome, ev.Reason)
		}
	}
	if refused != 1 {
		t.Errorf("%d refusals of the backup audited, want 1", refused)
	}
}

// TestPostgresOutage: the database goes away under a serving signerd, shut
// down or crashed. Health says degraded (no request needed), the RA's
// requests fail 503 store_unavailable with no certificate, and when the
// server is back signerd notices by itself (health ok again, no request
// needed) and the same requests succeed; the store then holds exactly what
// the RA was told.
func TestPostgresOutage(t *testing.T) {
	srv := pgtest.Start(t)
	d := newPostgresDaemonProc(t, srv, "")
	d.start(t)
	l := newRALedger()
	issue := func(id string) reply { t.Helper(); return l.issue(t, d, id) }
	want(t, "issue before the outage", issue("before"), 201, "")
	first := l.issued["before"]
	outages := []struct {
		name string
		down func(testing.TB)
	}{
		{"server stopped", srv.Stop},
		{"server crashed", srv.Kill},
	}
	for _, o := range outages {
		t.Run(o.name, func(t *testing.T) {
			o.down(t)
			// Before any request: signerd's own reads of the store (the
			// sealer's, every second) find the database gone.
			health := d.awaitHealth(t, 503, 20*time.Second)
			if !strings.Contains(string(health.body), `"code": "store_unavailable"`) || !strings.Contains(string(health.body), `"writable": false`) {
				t.Errorf("health while the database is down does not blame the store: %s", health.body)
			}
			id := strings.ReplaceAll(o.name, " ", "-")
			want(t, "issue while the database is down", issue(id), 503, "store_unavailable")
			want(t, "status while the database is down", d.call(t, "GET", "/v1/certificates/"+first, ""), 503, "store_unavailable")
			want(t, "health while the database is down", d.callAs(t, operatorUID, "GET", "/v1/health"), 503, "store_unavailable")
			if v := d.metric(t, "signerd_store_writable"); v != 0 {
				t.Errorf("signerd_store_writable %v while the database is down", v)
			}
			srv.Restart(t)
			// The store's watcher probes every 2 s.
			d.awaitHealth(t, 200, 20*time.Second)
			if v := d.metric(t, "signerd_store_writable"); v != 1 {
				t.Errorf("signerd_store_writable %v once the database is back", v)
			}
			want(t, "retry once the database is back", issue(id), 201, "")
			want(t, "status once the database is back", d.call(t, "GET", "/v1/certificates/"+first, ""), 200, "")
		})
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	l.checkStore(t, d, 0, true)
}

// walArchive is a folder for the WAL archive that the server's user, who
// runs archive_command and restore_command, may write and read.
func walArchive(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "signerd-wal-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Not the test's own user: PostgreSQL runs as nobody under root.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// archiveWAL ends the server's current WAL segment and waits until
// archive_command has copied it to archive, so that the archive holds
// everything committed so far (as archive_timeout would, in time).
func archiveWAL(t *testing.T, srv *pgtest.Server, archive string) {
	t.Helper()
	var segment string
	queryRow(t, srv.DSN("postgres"), "SELECT pg_walfile_name(pg_switch_wal())", &segment)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(archive, segment)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL segment %s not archived to %s after a minute", segment, archive)
		}
	}
}

// copyDataDir copies a base backup to a new folder, so that it can be
// restored more than once.
func copyDataDir(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", from, err, out)
	}
	return to
}

// recoverFromArchive makes a restored data directory replay the WAL
// archive to its end when the server starts, as the README's restore does.
func recoverFromArchive(t *testing.T, dataDir, archive string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dataDir, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(dataDir, "postgresql.auto.conf"), fmt.Sprintf("restore_command = 'cp %s/%%f %%p'\n", archive))
}

// awaitPromoted waits until the server has finished recovery and takes
// writes: a server replaying an archive accepts connections, read-only,
// before it is done.
func awaitPromoted(t *testing.T, srv *pgtest.Server) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var recovering bool
		queryRow(t, srv.DSN("postgres"), "SELECT pg_is_in_recovery()", &recovering)
		if !recovering {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the restored server still in recovery after a minute")
		}
	}
}

// auditHeadIn is the last audit event's sequence number in an open store.
func auditHeadIn(t *testing.T, st *store.Store) uint64 {
	t.Helper()
	var head uint64
	if err := st.View(func(tx *store.Tx) (err error) {
		head, _, err = tx.AuditHead()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return head
}

// TestPostgresBaseBackupRestore follows the README's PostgreSQL backup:
// WAL archiving on, a base backup taken while signerd serves, more
// issuance and a revocation after it. Restored with the archive replayed
// to its end, the database gives signerd everything: it starts as usual
// and serves the certificates of both sides of the base backup. Restored
// from the base backup alone, it is older than the HSM's audit anchor:
// signerd refuses to start, naming what is missing and what to do, and
// serves only after an acknowledgement, without what came after the base
// backup.
func TestPostgresBaseBackupRestore(t *testing.T) {
	archive := walArchive(t)
	srv := pgtest.Start(t, pgtest.Setting("archive_mode", "on"),
		pgtest.Setting("archive_command", fmt.Sprintf("'test ! -f %[1]s/%%f && cp %%p %[1]s/%%f'", archive)))
	d := newPostgresDaemonProc(t, srv, "")
	d.start(t)
	var before, after []string
	for i := range 2 {
		before = append(before, certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, fmt.Sprintf("before-%d", i), "person-sign"))).Serial)
	}
	base := filepath.Join(t.TempDir(), "base")
	srv.BaseBackup(t, base)
	for i := range 2 {
		after = append(after, certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, fmt.Sprintf("after-%d", i), "person-sign"))).Serial)
	}
	want(t, "revoke after the base backup", d.call(t, "POST", "/v1/certificates/"+before[0]+"/revoke", `{"reason":"keyCompromise"}`), 200, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	archiveWAL(t, srv, archive)
	srv.Stop(t)

	// The base backup and the archive to its end: everything is there.
	restored := pgtest.StartFrom(t, recovered(t, base, archive), pgtest.Setting("archive_mode", "off"))
	awaitPromoted(t, restored)
	d.moveDatabase(t, restored)
	d.start(t)
	for _, serial := range append(append([]string(nil), before...), after...) {
		want(t, "status of "+serial, d.call(t, "GET", "/v1/certificates/"+serial, ""), 200, "")
	}
	if v := certView(t, d.call(t, "GET", "/v1/certificates/"+before[0], "")); v.Status != "revoked" {
		t.Errorf("the revocation after the base backup is lost: %s is %s", before[0], v.Status)
	}
	want(t, "issue on the restored database", d.call(t, "POST", "/v1/certificates", issueBody(t, "restored-1", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	st := d.openStopped(t)
	anchored := lastSealIn(t, st) // the stop sealed, and the anchor followed
	st.Close()
	restored.Stop(t)

	// The base backup alone: older than the anchor, refused.
	old := pgtest.StartFrom(t, copyDataDir(t, base), pgtest.Setting("archive_mode", "off"))
	awaitPromoted(t, old)
	d.moveDatabase(t, old)
	st = d.openStopped(t)
	head := auditHeadIn(t, st)
	st.Close()
	out, code := refusedStart(t, d)
	for _, s := range []string{
		"audit log broken",
		fmt.Sprintf("the HSM's audit anchor records seal event %d, but the store's audit log ends at event %d", anchored, head),
		fmt.Sprintf("events %d to %d", head+1, anchored),
		"replay the WAL archive to its end",
		"--acknowledge-audit-break",
	} {
		if code != exitFailure || !strings.Contains(out, s) {
			t.Fatalf("signerd on the base backup without its archive: exit %d, want %d and %q in\n%s", code, exitFailure, s, out)
		}
	}
	statement := "Li Wei, operator: WAL archive lost, serving from the base backup of this morning"
	d.args = []string{"--acknowledge-audit-break", statement}
	d.start(t)
	want(t, "a certificate issued after the base backup", d.call(t, "GET", "/v1/certificates/"+after[0], ""), 404, "not_found")
	if v := certView(t, d.call(t, "GET", "/v1/certificates/"+before[0], "")); v.Status != "good" {
		t.Errorf("%s is %s in the base backup, want good", before[0], v.Status)
	}
	want(t, "issue after the acknowledgement", d.call(t, "POST", "/v1/certificates", issueBody(t, "old-1", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	acks := d.storeEvents(t, "audit.break.acknowledged")
	if len(acks) != 1 || acks[0].Detail != statement || !strings.Contains(acks[0].Reason, fmt.Sprintf("seal event %d", anchored)) {
		t.Fatalf("acknowledgements: %+v", acks)
	}
}

// recovered is a copy of the base backup set to replay the archive.
func recovered(t *testing.T, base, archive string) string {
	t.Helper()
	dir := copyDataDir(t, base)
	recoverFromArchive(t, dir, archive)
	return dir
}
