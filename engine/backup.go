package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"signerd/store"
)

// StoreBackup describes a copy of the store BackupStore made.
type StoreBackup struct {
	store.Snapshot
	// LastSeal is the last seal event the copy holds; the events after
	// it, up to Snapshot.AuditHead, are chained but not signed.
	LastSeal uint64
}

// backupTempPrefix starts the name of a copy being made beside the store.
const backupTempPrefix = ".signerd-backup-"

// BackupStore makes a consistent copy of the store and hands it to send.
// It seals the audit log first, so the copy holds a seal that vouches for
// nearly all of it (if the HSM cannot seal, the copy is made all the
// same, and its event says so). The copy is written at disk speed to a 0600 file
// beside the store (one short read transaction, no write held back while
// the file fits its memory map), verified there (store.Verify: a copy
// that fails is refused and never sent), and recorded as a "store.backup"
// audit event with the copy's audit head and SHA-256. That event comes
// after the copy's head, so the copy does not hold it: the live log (and
// every later copy) does. The file is then unlinked and send reads it
// outside any transaction, at whatever pace the client takes, holding
// nothing of the store; nothing is left on disk however the send ends.
func (e *Engine) BackupStore(ctx context.Context, actor store.Actor, send func(StoreBackup, io.Reader) error) error {
	// A copy is wanted most when something is failing: an HSM that
	// cannot seal does not prevent it (the copy then ends on an earlier
	// seal, which the event records).
	var unsealed string
	if _, err := e.seal(ctx, fmt.Sprintf("store backup for uid %d", actor.UID), true); err != nil {
		unsealed = "not sealed first: " + err.Error()
		e.log.Warn("store backup: the log could not be sealed first; copying it as it is", "err", err)
	}
	f, b, err := e.copyStore()
	if err != nil {
		e.auditBackup(actor, &b, store.OutcomeFailed, err.Error())
		return &Error{Code: CodeInternal, Message: err.Error(), Err: err, audited: true}
	}
	defer f.Close()
	if err := e.auditBackup(actor, &b, store.OutcomeOK, unsealed); err != nil {
		// A copy that is not in the log is not handed out.
		return &Error{Code: storeCode(err), Message: "record the backup in the audit log: " + err.Error(), Err: err}
	}
	if err := send(b, f); err != nil {
		e.log.Warn("store backup not delivered", "uid", actor.UID, "audit_head", b.AuditHead, "err", err)
		return err
	}
	return nil
}

// copyStore writes and verifies the copy, and returns it open for reading
// and already unlinked.
func (e *Engine) copyStore() (*os.File, StoreBackup, error) {
	// One copy at a time: each takes the store's size in disk space.
	e.backupMu.Lock()
	defer e.backupMu.Unlock()
	var b StoreBackup
	dir := filepath.Dir(e.store.Path())
	// A copy found here now was being made when signerd stopped (one
	// being sent is unlinked already): it is removed, not left to fill
	// the disk.
	if stale, err := filepath.Glob(filepath.Join(dir, backupTempPrefix+"*")); err == nil {
		for _, f := range stale {
			e.log.Warn("store backup: removing a copy left by an earlier run", "path", f)
			os.Remove(f)
		}
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(dir, backupTempPrefix+hex.EncodeToString(rnd[:]))
	defer os.Remove(path)
	snap, err := e.store.CopyTo(path)
	if err != nil {
		return nil, b, err
	}
	b.Snapshot = snap
	report, err := store.Verify(path)
	if err != nil {
		return nil, b, fmt.Errorf("check the copy: %w", err)
	}
	if !report.OK() {
		var list []string
		for _, f := range report.Findings[:min(len(report.Findings), 5)] {
			list = append(list, f.String())
		}
		e.log.Error("store backup: the copy fails its check; the live store has the same damage", "findings", report.Findings)
		return nil, b, fmt.Errorf("the copy fails its check (%d findings; the live store has the same damage): %s",
			len(report.Findings), strings.Join(list, "; "))
	}
	b.LastSeal = report.LastSeal
	f, err := os.Open(path)
	if err != nil {
		return nil, b, fmt.Errorf("open the copy: %w", err)
	}
	return f, b, nil
}

// auditBackup records a backup and how it went.
func (e *Engine) auditBackup(actor store.Actor, b *StoreBackup, outcome, reason string) error {
	ev := store.Event{Actor: actor, Action: "store.backup", Outcome: outcome, Reason: reason}
	if b != nil && b.Size > 0 {
		ev.Object = fmt.Sprintf("audit head %d", b.AuditHead)
		ev.Detail = fmt.Sprintf("copy of %d bytes, SHA-256 %x, audit head %d (chain hash %x), last seal %d",
			b.Size, b.SHA256, b.AuditHead, b.AuditHash, b.LastSeal)
	}
	err := e.Audit(ev)
	if err != nil {
		e.log.Error("audit a store backup", "err", err)
	}
	return err
}
