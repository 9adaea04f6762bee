package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"signerd/api"
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
// outside any transaction, holding nothing of the store; nothing is left
// on disk however the send ends.
//
// One backup runs at a time, from the check of free space to the end of
// send (which the caller bounds): the unlinked copy takes the store's
// size on disk until send returns, so a second request is refused
// (api.CodeBackupInProgress) rather than queued, and a file system without
// room for the copy and the store's size again is refused before any
// copy is made (api.CodeBackupNoSpace). A request whose client has gone
// (ctx done) is not sealed, copied, checked or sent further. Every call
// ends with one store.backup event: ok when the copy is handed to send,
// failed with the reason otherwise ("client gone" for an abandoned one,
// which returns api.CodeClientGone).
func (e *Engine) BackupStore(ctx context.Context, actor store.Actor, send func(StoreBackup, io.Reader) error) error {
	if !e.store.Embedded() {
		// Refused before the seal: there is no copy to seal for.
		msg := "the store is a PostgreSQL database, which signerd does not copy: " +
			"back it up with pg_basebackup and WAL archiving (README, Backup and restore (PostgreSQL))"
		e.auditBackup(actor, nil, store.OutcomeRefused, msg)
		return &Error{Code: api.CodeBackupNotEmbedded, Message: msg, audited: true}
	}
	if !e.backupMu.TryLock() {
		msg := "another store backup is being made or sent; retry when it ends"
		e.auditBackup(actor, nil, store.OutcomeFailed, msg)
		return &Error{Code: api.CodeBackupInProgress, Message: msg, audited: true}
	}
	defer e.backupMu.Unlock()
	if err := e.backupAbandoned(ctx, actor, nil, "before the seal"); err != nil {
		return err
	}
	// A copy is wanted most when something is failing: an HSM that
	// cannot seal does not prevent it (the copy then ends on an earlier
	// seal, which the event records).
	var unsealed string
	if _, err := e.sealer.seal(ctx, fmt.Sprintf("store backup for uid %d", actor.UID), true); err != nil {
		unsealed = "not sealed first: " + err.Error()
		e.log.Warn("store backup: the log could not be sealed first; copying it as it is", "err", err)
	}
	if err := e.backupAbandoned(ctx, actor, nil, "before the copy"); err != nil {
		return err
	}
	f, b, err := e.copyStore()
	if err != nil {
		code, msg := api.CodeInternal, err.Error()
		var ee *Error
		if errors.As(err, &ee) {
			code, msg = ee.Code, ee.Message
		}
		e.auditBackup(actor, &b, store.OutcomeFailed, msg)
		return &Error{Code: code, Message: msg, Err: err, audited: true}
	}
	defer f.Close()
	if err := e.backupAbandoned(ctx, actor, &b, "after the copy, before it was sent"); err != nil {
		return err
	}
	if err := e.auditBackup(actor, &b, store.OutcomeOK, unsealed); err != nil {
		// A copy that is not in the log is not handed out.
		return &Error{Code: storeCode(err), Message: "record the backup in the audit log: " + err.Error(), Err: err}
	}
	// A send cut short is logged by the caller, which knows how much of
	// the copy went out.
	return send(b, f)
}

// backupAbandoned records a backup whose client has gone as failed, and
// returns the error to end it with; nil while the client waits.
func (e *Engine) backupAbandoned(ctx context.Context, actor store.Actor, b *StoreBackup, when string) error {
	if ctx.Err() == nil {
		return nil
	}
	e.log.Warn("store backup abandoned: client gone", "uid", actor.UID, "when", when)
	e.auditBackup(actor, b, store.OutcomeFailed, "client gone "+when)
	return &Error{Code: api.CodeClientGone, Message: "store backup abandoned: client gone " + when, Err: context.Cause(ctx), audited: true}
}

// backupFreeSpace is the space an unprivileged process may still write
// on the file system holding dir (a variable so tests can run out of it).
var backupFreeSpace = func(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// copyStore writes and verifies the copy, and returns it open for reading
// and already unlinked. The caller holds backupMu.
func (e *Engine) copyStore() (*os.File, StoreBackup, error) {
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
	// Room for the copy and as much again, so that the live store can
	// still grow (and issuance go on) while the copy exists.
	fi, err := os.Stat(e.store.Path())
	if err != nil {
		return nil, b, fmt.Errorf("store backup: %w", err)
	}
	free, err := backupFreeSpace(dir)
	if err != nil {
		return nil, b, fmt.Errorf("store backup: free space in %s: %w", dir, err)
	}
	if need := 2 * uint64(fi.Size()); free < need {
		return nil, b, &Error{Code: api.CodeBackupNoSpace, Message: fmt.Sprintf(
			"%s has %d bytes free; a backup needs %d (the copy of the %d-byte store, and as much again for the store to grow meanwhile): no copy made",
			dir, free, need, fi.Size())}
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
	if errors.Is(err, store.ErrPageStructure) {
		e.log.Error("store backup: the copy's page structure is damaged; the live store has the same damage", "err", err)
		return nil, b, fmt.Errorf("the copy fails its check (the live store has the same damage): %w", err)
	}
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
