package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"signerd/store"
)

// signerctlAs runs the signerctl built for the test against d and returns
// its output and exit status.
func signerctlAs(t *testing.T, bin string, d *daemonProc, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "signerctl"), args...)
	cmd.Env = append(os.Environ(), "SIGNERD_SOCKET="+d.socket)
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// openStore opens the store file at path (signerd stopped) for the rest
// of the test.
func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// storeEvents returns the audit events of a store file (signerd stopped).
func storeEvents(t *testing.T, path string) []store.Event {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return events(t, st)
}

// events returns the audit events of an open store.
func events(t *testing.T, st *store.Store) []store.Event {
	t.Helper()
	var evs []store.Event
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error { evs = append(evs, ev); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestStoreBackupAndRestore: signerctl store backup takes a copy while
// signerd serves, through the operator's route, and checks it; the
// backup is audited in the live log (not in the copy, which ends before
// it). After more issuance and a stop, the copy put in place is refused
// at start, naming the anchored seal, the copy's head and what the
// operator may do; a current copy starts; the old copy starts only with
// an acknowledgement, which is audited, and then serves without the
// certificates issued after it.
func TestStoreBackupAndRestore(t *testing.T) {
	bin := exampleBin(t)
	d := newDaemonProc(t, "")
	d.editConfig(t, fmt.Sprintf("operator: {uids: [%d]}", operatorUID), fmt.Sprintf("operator: {uids: [%d]}", os.Getuid()))
	d.start(t)
	// Records of every kind for the copy's checks: held and restored,
	// extended, renewed, revoked for keyCompromise.
	first := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "before-1", "person-sign"))).Serial
	want(t, "hold", d.call(t, "POST", "/v1/certificates/"+first+"/hold", ""), 200, "")
	want(t, "restore", d.call(t, "POST", "/v1/certificates/"+first+"/restore", ""), 200, "")
	second := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "before-2", "device-sign"))).Serial
	extended := certView(t, d.call(t, "POST", "/v1/certificates/"+second+"/extend", `{"request_id":"before-3","validity_days":30}`)).Serial
	want(t, "renew", d.call(t, "POST", "/v1/certificates/"+extended+"/renew", issueBody(t, "before-4", "device-sign")), 201, "")
	want(t, "revoke", d.call(t, "POST", "/v1/certificates/"+first+"/revoke", `{"reason":"keyCompromise"}`), 200, "")
	want(t, "hold", d.call(t, "POST", "/v1/certificates/"+second+"/hold", ""), 200, "")
	want(t, "an auditor asks for a backup", d.callAs(t, auditorUID, "POST", "/v1/store/backup"), 403, "forbidden")
	want(t, "a backup request with a body", d.call(t, "POST", "/v1/store/backup", "{}"), 400, "malformed_json")

	backup := filepath.Join(t.TempDir(), "backup.db")
	out, code := signerctlAs(t, bin, d, "store", "backup", "--out", backup)
	if code != 0 {
		t.Fatalf("store backup: exit %d\n%s\n%s", code, out, d.log)
	}
	m := regexp.MustCompile(`(?m)^(\S+): (\d+) bytes, SHA-256 ([0-9a-f]{64})\naudit head: event (\d+) .*last seal: event (\d+)$`).FindStringSubmatch(out)
	if m == nil || m[1] != backup {
		t.Fatalf("store backup printed:\n%s", out)
	}
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 || strconv.FormatInt(fi.Size(), 10) != m[2] {
		t.Fatalf("backup file %v, %v; want mode 0600, %s bytes", fi, err, m[2])
	}
	if _, err := os.Stat(backup + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("FILE.tmp left behind: %v", err)
	}
	if sum := sha256.Sum256(must(os.ReadFile(backup))); fmt.Sprintf("%x", sum) != m[3] {
		t.Fatalf("printed SHA-256 %s, file's %x", m[3], sum)
	}
	head, _ := strconv.ParseUint(m[4], 10, 64)
	if seal, _ := strconv.ParseUint(m[5], 10, 64); seal == 0 || seal > head {
		t.Fatalf("copy's last seal %d, head %d: the backup seals first", seal, head)
	}
	if out, code := signerctlAs(t, bin, d, "store", "backup", "--out", backup); code != 1 || !strings.Contains(out, "refusing to overwrite") {
		t.Fatalf("second backup to the same file: exit %d\n%s", code, out)
	}
	if out, code := signerctlAs(t, bin, d, "store", "verify", backup); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("store verify of the backup: exit %d\n%s", code, out)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(d.store), ".signerd-backup-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary copies left beside the store: %v", leftovers)
	}

	// More issuance; the stop seals it, and the anchor follows.
	after := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "after-1", "person-sign"))).Serial
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	anchored := lastSeal(t, d.store)
	current := filepath.Join(t.TempDir(), "current.db")
	copyFile(t, d.store, current, 0o600)
	if out, code := signerctlAs(t, bin, d, "store", "verify", current); code != 0 {
		t.Fatalf("store verify of the stopped store: exit %d\n%s", code, out)
	}
	var backups []store.Event
	for _, ev := range storeEvents(t, current) {
		if ev.Action == "store.backup" {
			backups = append(backups, ev)
		}
		if ev.Seq <= head && ev.Action == "store.backup" {
			t.Errorf("store.backup is event %d, within the copy's head %d", ev.Seq, head)
		}
	}
	if len(backups) != 1 || backups[0].Outcome != store.OutcomeOK || backups[0].Object != "audit head "+m[4] ||
		!strings.Contains(backups[0].Detail, "SHA-256 "+m[3]) {
		t.Fatalf("store.backup events in the live log: %+v", backups)
	}

	// The backup in place: refused, saying what is missing and what to do.
	copyFile(t, backup, d.store, 0o600)
	out, code = refusedStart(t, d)
	for _, s := range []string{
		"audit log broken",
		fmt.Sprintf("the HSM's audit anchor records seal event %d, but the store's audit log ends at event %d", anchored, head),
		fmt.Sprintf("events %d to %d", head+1, anchored),
		"restore a copy of the store that holds seal event " + strconv.FormatUint(anchored, 10),
		"--acknowledge-audit-break",
	} {
		if code != 1 || !strings.Contains(out, s) {
			t.Fatalf("signerd on a backup older than its anchor: exit %d, want 1 and %q in\n%s", code, s, out)
		}
	}
	t.Logf("refusal: %s", out)

	// A current copy starts and serves what was issued last.
	copyFile(t, current, d.store, 0o600)
	d.start(t)
	want(t, "status of the last certificate", d.call(t, "GET", "/v1/certificates/"+after, ""), 200, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	anchored = lastSeal(t, d.store) // the stop sealed again

	// The old copy with an acknowledgement: serves, without what came
	// after it, and the log says who accepted that and why.
	copyFile(t, backup, d.store, 0o600)
	statement := "Li Wei, operator: disk lost, restoring the backup of this morning"
	d.args = []string{"--acknowledge-audit-break", statement}
	d.start(t)
	want(t, "status of a certificate issued after the backup", d.call(t, "GET", "/v1/certificates/"+after, ""), 404, "not_found")
	want(t, "issue after the restore", d.call(t, "POST", "/v1/certificates", issueBody(t, "restored-1", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	var acks []store.Event
	for _, ev := range storeEvents(t, d.store) {
		if ev.Action == "audit.break.acknowledged" {
			acks = append(acks, ev)
		}
	}
	if len(acks) != 1 || acks[0].Detail != statement || !strings.Contains(acks[0].Reason, fmt.Sprintf("seal event %d", anchored)) {
		t.Fatalf("acknowledgements: %+v", acks)
	}
	// Once acknowledged, the restored store starts without one.
	d.args = nil
	d.start(t)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
