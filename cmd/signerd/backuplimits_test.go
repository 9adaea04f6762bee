package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// stalledBackup starts a store backup on a raw connection that never
// reads, and returns once signerd has begun to send the copy.
func (d *daemonProc) stalledBackup(t *testing.T) *net.UnixConn {
	t.Helper()
	return d.stalledPost(t, "/v1/store/backup")
}

// heldBackupCopies counts the backup copies signerd has open.
func (d *daemonProc) heldBackupCopies(t *testing.T) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, _ := os.Readlink(dir + "/" + fd.Name()); strings.Contains(target, ".signerd-backup-") {
			n++
		}
	}
	return n
}

// backupOperatorDaemon is a daemon whose operator is the test process,
// with store.backup_timeout set and an audit log of about 1.3 MiB (more
// than the socket buffers hold, so a client that never reads stalls the
// send).
func backupOperatorDaemon(t *testing.T, backupTimeout string) *daemonProc {
	t.Helper()
	d := newDaemonProc(t, "")
	d.editConfig(t, fmt.Sprintf("operator: {uids: [%d]}", operatorUID), fmt.Sprintf("operator: {uids: [%d]}", os.Getuid()))
	d.editConfig(t, "store: "+d.store, fmt.Sprintf("store: {path: %s, backup_timeout: %s}", d.store, backupTimeout))
	padAuditLog(t, d.store, 300, 4000)
	return d
}

// backupOnceFree polls until a store backup is made (200), failing on
// anything but backup_in_progress meanwhile.
func (d *daemonProc) backupOnceFree(t *testing.T, what string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r := d.callAs(t, os.Getuid(), "POST", "/v1/store/backup")
		if r.status == 200 {
			return
		}
		if r.code != "backup_in_progress" || time.Now().After(deadline) {
			t.Fatalf("backup %s: %d %s %s", what, r.status, r.code, r.body)
		}
	}
}

// assertCutLoggedOnce checks that a store backup send cut short is in
// the log as one line (the write's error appears on no other).
func assertCutLoggedOnce(t *testing.T, log string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "i/o timeout") || strings.Contains(line, "broken pipe") || strings.Contains(line, "connection reset") {
			n++
			if !strings.Contains(line, "store backup cut short") {
				t.Errorf("the cut send is logged as: %s", line)
			}
		}
	}
	if n != 1 {
		t.Fatalf("the cut send is logged on %d lines, want one:\n%s", n, log)
	}
}

// TestStalledStoreBackupHoldsTheOneSlot: a client that asks for a backup
// and never reads it holds the one backup slot and one copy: a second
// backup meanwhile is refused with 503 backup_in_progress and makes no
// copy (store.backup_timeout 1h: the stalled send is not cut while the
// test looks). Once the stalled client closes, the send fails, the copy
// is dropped, and a backup is made. On the code before the limit, the
// second backup was made at once.
func TestStalledStoreBackupHoldsTheOneSlot(t *testing.T) {
	d := backupOperatorDaemon(t, "1h")
	d.start(t)
	stalled := d.stalledBackup(t)
	r := d.callAs(t, os.Getuid(), "POST", "/v1/store/backup")
	if r.status != 503 || r.code != "backup_in_progress" {
		t.Fatalf("second backup while one is stalled: %d %s %s; want 503 backup_in_progress", r.status, r.code, r.body)
	}
	if n := d.heldBackupCopies(t); n != 1 {
		t.Fatalf("signerd holds %d backup copies with one backup stalled, want 1", n)
	}
	stalled.Close()
	d.backupOnceFree(t, "after the stalled client closed")
	if n := d.heldBackupCopies(t); n != 0 {
		t.Fatalf("signerd still holds %d backup copies after the stalled client closed", n)
	}
	d.stop(t)
	assertCutLoggedOnce(t, d.log.String())
}

// TestStalledStoreBackupIsCutAtItsDeadline: with store.backup_timeout
// 1s, a stalled send is cut at its deadline (1s plus 1s per MiB), its
// copy dropped and the slot freed, without the client doing anything;
// a backup is then made. On the code before the limit, each stalled
// client held a copy for an hour.
func TestStalledStoreBackupIsCutAtItsDeadline(t *testing.T) {
	d := backupOperatorDaemon(t, "1s")
	d.start(t)
	d.stalledBackup(t)
	for deadline := time.Now().Add(60 * time.Second); d.heldBackupCopies(t) != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled send still holds its copy after 60s")
		}
	}
	d.backupOnceFree(t, "after the stalled one's deadline")
	d.stop(t)
	assertCutLoggedOnce(t, d.log.String())
}

// TestBackupOfDamagedLiveStoreFailsAndSignerdServes: the live store's
// audit bucket has a branch page that names itself as its child (where
// reads go, not writes: a loop on the path writes take makes bbolt panic
// at commit, whatever a backup does). A backup
// is refused with 500 naming the page and bucket, and signerd goes on
// serving. On the code before the page check, the check
// of the copy walked the loop until memory ran out and signerd died
// ("fatal error: out of memory"; its address space is limited to 3 GiB
// here so that this is quick).
func TestBackupOfDamagedLiveStoreFailsAndSignerdServes(t *testing.T) {
	d := newDaemonProc(t, "")
	d.editConfig(t, fmt.Sprintf("operator: {uids: [%d]}", operatorUID), fmt.Sprintf("operator: {uids: [%d]}", os.Getuid()))
	padAuditLog(t, d.store, 3000, 100)
	// A start and a stop first, so that what signerd does once (the key
	// index) is done before the damage; it then starts and serves.
	d.start(t)
	d.stop(t)
	db, err := bolt.Open(d.store, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	db.View(func(tx *bolt.Tx) error { root = uint64(tx.Bucket([]byte("audit")).Root()); return nil })
	ps := int64(db.Info().PageSize)
	db.Close()
	f, err := os.OpenFile(d.store, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 32)
	if _, err := f.ReadAt(hdr, int64(root)*ps); err != nil {
		t.Fatal(err)
	}
	if flags := binary.LittleEndian.Uint16(hdr[8:]); flags != 0x01 {
		t.Fatalf("audit root page %d has flags %#x, want a branch", root, flags)
	}
	// The root's first child, a leaf of the oldest events, becomes a
	// branch whose one child is itself. Appends (the seal, the backup's
	// event) write the root and the last leaf only, so signerd can still
	// write; every read from the first event on loops.
	loop := binary.LittleEndian.Uint64(hdr[24:])
	page := make([]byte, 32)
	binary.LittleEndian.PutUint64(page[0:], loop)
	binary.LittleEndian.PutUint16(page[8:], 0x01) // branch
	binary.LittleEndian.PutUint16(page[10:], 1)   // one element
	binary.LittleEndian.PutUint32(page[16:], 16)  // its key (empty) after it
	binary.LittleEndian.PutUint64(page[24:], loop)
	if _, err := f.WriteAt(page, int64(loop)*ps); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d.start(t)
	if err := unix.Prlimit(d.cmd.Process.Pid, unix.RLIMIT_AS, &unix.Rlimit{Cur: 3 << 30, Max: 3 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := d.post("/v1/store/backup")
	if err != nil {
		select {
		case werr := <-d.exited:
			d.exited <- werr
			t.Fatalf("backup of a looped store: %v; signerd exited: %v\n%s", err, werr, d.log)
		case <-time.After(30 * time.Second):
			d.stop(t)
			t.Fatalf("backup of a looped store: %v\n%s", err, d.log)
		}
	}
	want := fmt.Sprintf("page %d of bucket \\\"audit\\\" is reached twice", loop) // as JSON quotes it
	if r.status != 500 || r.code != "internal" || !strings.Contains(string(r.body), want) {
		t.Fatalf("backup of a looped store: %d %s %.300s; want 500 internal saying %s", r.status, r.code, r.body, want)
	}
	if h := d.callAs(t, os.Getuid(), "GET", "/v1/health"); h.status != 200 {
		t.Fatalf("health after the refused backup: %d %s", h.status, h.body)
	}
	select {
	case err := <-d.exited:
		d.exited <- err
		t.Fatalf("signerd exited: %v", err)
	default:
	}
	if n := d.heldBackupCopies(t); n != 0 {
		t.Fatalf("signerd holds %d backup copies after a refused backup", n)
	}
	// The store cannot be read back here (its loop is the damage); the
	// log says what the operator must do.
	d.stop(t)
	if !strings.Contains(d.log.String(), "the live store has the same damage") {
		t.Fatalf("the damage is not logged:\n%s", d.log)
	}
}

// post makes a request with an empty body as the test process, and
// returns an error rather than failing the test if there is no answer.
func (d *daemonProc) post(path string) (reply, error) {
	c := d.client()
	c.Timeout = 90 * time.Second
	resp, err := c.Post("http://signerd"+path, "", nil)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return parseReply(resp.StatusCode, raw), nil
}
