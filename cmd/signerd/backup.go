package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"time"

	"signerd/api"
	"signerd/engine"
)

// defaultBackupTimeout is store.backup_timeout's default.
const defaultBackupTimeout = time.Minute

// backupSendTimeout is how long sending a copy of size bytes may take.
func (a *server) backupSendTimeout(size int64) time.Duration {
	return a.backupTimeout + time.Duration(size>>20)*time.Second
}

// backupStore sends a verified copy of the store (engine.BackupStore).
// The copy is made and checked before the status is sent, so a failure
// to make it is an ordinary error answer; the copy is sent from a file
// the store no longer holds, so a slow client holds back no write; it
// holds the copy's disk space and the one backup slot until its write
// deadline (backupSendTimeout), when the copy is dropped.
func (a *server) backupStore(w http.ResponseWriter, r *http.Request, p peer) {
	if !emptyBody(w, r) {
		return
	}
	started := false
	var sent int64
	var head uint64
	err := a.eng.BackupStore(r.Context(), p.actor(), func(b engine.StoreBackup, copy io.Reader) error {
		head = b.AuditHead
		// A client that reads slowly or not at all keeps the copy (the
		// store's size on disk) and the one backup slot: the send is
		// given its size at 1 MiB/s and the configured time more, and
		// then the copy is dropped.
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.backupSendTimeout(b.Size))); err != nil {
			a.log.Warn("store backup: write deadline", "err", err)
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="signerd-store.db"`)
		h.Set("Content-Length", strconv.FormatInt(b.Size, 10))
		h.Set(api.HeaderBackupSHA256, hex.EncodeToString(b.SHA256))
		h.Set(api.HeaderBackupAuditHead, strconv.FormatUint(b.AuditHead, 10))
		h.Set(api.HeaderBackupLastSeal, strconv.FormatUint(b.LastSeal, 10))
		w.WriteHeader(http.StatusOK)
		started = true
		var err error
		sent, err = io.Copy(w, copy)
		return err
	})
	switch {
	case err != nil && !started:
		a.fail(w, r, err)
	case err != nil:
		// The one line for it (the engine logs none): a client that went
		// or stalled past its deadline, not a failure of signerd's.
		a.log.Warn("store backup cut short", "uid", p.UID, "audit_head", head, "sent", sent, "err", err)
	default:
		a.log.Info("store backed up", "uid", p.UID, "bytes", sent)
	}
}
