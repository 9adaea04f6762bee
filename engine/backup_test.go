package engine_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// receiveBackup runs BackupStore, handing the copy to hold (which may
// block) and then keeping its bytes.
func receiveBackup(e *engine.Engine, hold func(engine.StoreBackup)) (engine.StoreBackup, []byte, error) {
	var b engine.StoreBackup
	var buf bytes.Buffer
	err := e.BackupStore(context.Background(), store.Actor{UID: 1001, GID: 1001, Role: "operator"},
		func(got engine.StoreBackup, r io.Reader) error {
			b = got
			hold(got)
			_, err := io.Copy(&buf, r)
			return err
		})
	return b, buf.Bytes(), err
}

// checkCopy writes a received copy to a file and verifies it.
func checkCopy(t *testing.T, b engine.StoreBackup, raw []byte) *store.Report {
	t.Helper()
	if sum := sha256.Sum256(raw); int64(len(raw)) != b.Size || !bytes.Equal(sum[:], b.SHA256) {
		t.Fatalf("received %d bytes, SHA-256 %x; the backup says %d bytes, %x", len(raw), sum, b.Size, b.SHA256)
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := store.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.AuditHead != b.AuditHead || r.LastSeal != b.LastSeal {
		t.Fatalf("copy: %+v; backup said head %d, last seal %d", r, b.AuditHead, b.LastSeal)
	}
	return r
}

// TestStoreBackupClientHoldsNoTransaction: a client that does not read
// its backup holds back no write. The store is opened without a reserved
// memory map, so a write that grows the file must remap it, which waits
// for every open read transaction: had the copy been sent from one, the
// writes below would wait for the client. They all complete while the
// client still has not read a byte; the copy it then reads is the one
// the backup described, and verifies, and nothing is left beside the
// store.
func TestStoreBackupClientHoldsNoTransaction(t *testing.T) {
	ca := enginetest.NewCA(t)
	dir := t.TempDir()
	st, err := store.OpenWith(filepath.Join(dir, "signerd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 1 << 20, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))

	sending, release := make(chan struct{}), make(chan struct{})
	type result struct {
		b   engine.StoreBackup
		raw []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, raw, err := receiveBackup(e, func(engine.StoreBackup) { close(sending); <-release })
		done <- result{b, raw, err}
	}()
	<-sending
	before, err := os.Stat(st.Path())
	if err != nil {
		t.Fatal(err)
	}

	wrote := make(chan error, 1)
	go func() {
		for i := 0; i < 40; i++ {
			if err := e.Audit(store.Event{Actor: store.System, Action: "test.write", Object: fmt.Sprint(i),
				Outcome: store.OutcomeOK, Detail: strings.Repeat("x", 64<<10)}); err != nil {
				wrote <- err
				return
			}
		}
		for i := range 10 {
			if _, err := e.Issue(context.Background(), ra, request(t, fmt.Sprintf("during-%d", i))); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		close(release)
		t.Fatal("writes waited on the backup's client")
	}
	if after, err := os.Stat(st.Path()); err != nil || after.Size() < 2*before.Size() {
		t.Fatalf("the store grew from %d to %v bytes (%v); the test needs it to outgrow its map", before.Size(), after, err)
	}
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	checkCopy(t, r.b, r.raw)
	if left, _ := filepath.Glob(filepath.Join(dir, ".signerd-backup-*")); len(left) != 0 {
		t.Fatalf("left beside the store: %v", left)
	}
	var backups []store.Event
	for _, ev := range events(t, st) {
		if ev.Action == "store.backup" {
			backups = append(backups, ev)
		}
	}
	if len(backups) != 1 || backups[0].Seq <= r.b.AuditHead || backups[0].Object != fmt.Sprintf("audit head %d", r.b.AuditHead) ||
		!strings.Contains(backups[0].Detail, fmt.Sprintf("SHA-256 %x", r.b.SHA256)) {
		t.Fatalf("store.backup events %+v for a copy with head %d", backups, r.b.AuditHead)
	}
}

// fillStore records n certificates as the engine records them (serial
// reserved and issued, request, audit event), each with der, in
// transactions of 500.
func fillStore(t *testing.T, st *store.Store, der []byte, issuer string, n int) {
	t.Helper()
	for done := 0; done < n; {
		if err := st.Update(func(tx *store.Tx) error {
			for i := 0; i < 500 && done < n; i, done = i+1, done+1 {
				serial := make([]byte, 16)
				rand.Read(serial)
				serial[0] &= 0x7f
				id := fmt.Sprintf("fill-%d", done)
				if err := tx.ReserveSerial(serial, id); err != nil {
					return err
				}
				if err := tx.PutCertificate(&store.Certificate{Serial: serial, DER: der, Profile: "device-sign", Issuer: issuer,
					RequestID: id, Status: store.StatusGood, NotBefore: time.Now(), NotAfter: time.Now().AddDate(1, 0, 0)}); err != nil {
					return err
				}
				if err := tx.SetSerialState(serial, store.SerialIssued); err != nil {
					return err
				}
				if err := tx.PutRequest(&store.Request{ID: id, Kind: "issue", Profile: "device-sign", State: store.RequestIssued, Serial: serial}); err != nil {
					return err
				}
				if _, err := tx.Append(store.Event{Actor: ra, Action: "certificate.issue", Object: store.HexSerial(serial), Outcome: store.OutcomeOK}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestIssuanceRateDuringStoreBackup measures issuance (8 clients) on a
// store of SIGNERD_BACKUP_BENCH_CERTS certificates (2,000 unless set; the
// README's figure is for 20,000) with no backup running and with backups
// running back to back, and logs both rates (go test -v); it asserts
// only that every request succeeds and that each copy verifies.
func TestIssuanceRateDuringStoreBackup(t *testing.T) {
	const perRun, clients = 400, 8
	stored := 2000
	if v := os.Getenv("SIGNERD_BACKUP_BENCH_CERTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("SIGNERD_BACKUP_BENCH_CERTS=%q: want a count", v)
		}
		stored = n
	}
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealInterval: time.Hour})
	first := issue(t, e, request(t, "first"))
	fillStore(t, st, first.DER, first.Issuer, stored)

	rate := func(run string) float64 {
		reqs := make(chan engine.Request, perRun)
		for i := range perRun {
			reqs <- request(t, fmt.Sprintf("%s-%d", run, i))
		}
		close(reqs)
		var wg sync.WaitGroup
		var failed atomic.Value
		start := time.Now()
		for range clients {
			wg.Go(func() {
				for req := range reqs {
					if _, err := e.Issue(context.Background(), ra, req); err != nil {
						failed.Store(err)
					}
				}
			})
		}
		wg.Wait()
		took := time.Since(start)
		if err := failed.Load(); err != nil {
			t.Fatalf("%s: %v", run, err)
		}
		return perRun / took.Seconds()
	}
	quiet := rate("quiet")

	stop := make(chan struct{})
	type backupRun struct {
		took time.Duration
		b    engine.StoreBackup
		raw  []byte
	}
	runs := make(chan backupRun, 1000)
	backupErr := make(chan error, 1)
	go func() {
		defer close(runs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			b, raw, err := receiveBackup(e, func(engine.StoreBackup) {})
			if err != nil {
				backupErr <- err
				return
			}
			runs <- backupRun{time.Since(start), b, raw}
		}
	}()
	// The first copy is under way when the measured issuance starts.
	for !busyCopying(st.Path()) && len(runs) == 0 {
		select {
		case err := <-backupErr:
			t.Fatal(err)
		default:
		}
		time.Sleep(time.Millisecond)
	}
	during := rate("during")
	close(stop)
	var n int
	var total time.Duration
	var last backupRun
	for r := range runs {
		n, total, last = n+1, total+r.took, r
	}
	select {
	case err := <-backupErr:
		t.Fatal(err)
	default:
	}
	if n == 0 {
		t.Fatal("no backup completed")
	}
	rep := checkCopy(t, last.b, last.raw)
	t.Logf("store of %d certificates, %d audit events; copy of %d bytes in %v on average (%d backups, back to back)",
		rep.Certificates, rep.Events, last.b.Size, (total / time.Duration(n)).Round(time.Millisecond), n)
	t.Logf("issuance, %d clients, %d certificates: %.0f/s with no backup, %.0f/s during backups (%.0f%%)",
		clients, perRun, quiet, during, 100*during/quiet)
}

// busyCopying reports whether a backup's copy is being written beside the
// store at path.
func busyCopying(path string) bool {
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".signerd-backup-*"))
	return len(m) > 0
}

// TestStoreBackupWhileTheHSMCannotSeal: a backup is wanted most when
// something fails, so an HSM that cannot seal does not prevent it: the
// copy ends on the last seal made, and its event says it was not sealed
// first.
func TestStoreBackupWhileTheHSMCannotSeal(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	key := &failingKey{SM2Signer: auditKey(t, ca)}
	e := ca.Engine(t, st, engine.Config{AuditKey: key, SealEvery: 1 << 20, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))
	key.fail.Store(true)
	b, raw, err := receiveBackup(e, func(engine.StoreBackup) {})
	if err != nil {
		t.Fatal(err)
	}
	checkCopy(t, b, raw)
	if b.LastSeal >= b.AuditHead {
		t.Fatalf("copy's last seal %d, head %d: no seal could be made for it", b.LastSeal, b.AuditHead)
	}
	evs := events(t, st)
	last := evs[len(evs)-1]
	if last.Action != "store.backup" || last.Outcome != store.OutcomeOK || !strings.Contains(last.Reason, "not sealed first") ||
		!strings.Contains(last.Reason, "injected") {
		t.Fatalf("last event %+v, want store.backup ok saying it was not sealed first", last)
	}
}

// TestConcurrentStoreBackups: backups asked for at once, with issuance
// going on, each get a whole copy that verifies or are refused with
// backup_in_progress (one at a time), at least one is made, and none is
// left beside the store, nor the copy a stopped run left there.
func TestConcurrentStoreBackups(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 5, SealInterval: time.Hour})
	issue(t, e, request(t, "before"))
	if err := os.WriteFile(filepath.Join(filepath.Dir(st.Path()), ".signerd-backup-0123456789abcdef"), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	type got struct {
		b   engine.StoreBackup
		raw []byte
		err error
	}
	results := make(chan got, 4)
	for range 4 {
		wg.Go(func() {
			b, raw, err := receiveBackup(e, func(engine.StoreBackup) {})
			results <- got{b, raw, err}
		})
	}
	for i := range 10 {
		issue(t, e, request(t, fmt.Sprintf("during-%d", i)))
	}
	wg.Wait()
	close(results)
	made := 0
	for r := range results {
		var ee *engine.Error
		if errors.As(r.err, &ee) && ee.Code == api.CodeBackupInProgress {
			continue
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		checkCopy(t, r.b, r.raw)
		made++
	}
	if made == 0 {
		t.Fatal("no backup was made")
	}
	if busyCopying(st.Path()) {
		t.Fatal("a copy was left beside the store")
	}
}
