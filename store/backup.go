package store

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// Snapshot is what CopyTo wrote.
type Snapshot struct {
	Size   int64
	SHA256 []byte
	// AuditHead and AuditHash are the audit log's head in the copy: its
	// last event's sequence number and chain hash.
	AuditHead uint64
	AuditHash []byte
}

// CopyTo writes a consistent copy of the store, as one read transaction
// sees it, to the new file path (mode 0600; it must not exist), and syncs
// it. The transaction is held while the file is written, at the speed of
// the disk: writers go on committing meanwhile (while the file fits its
// memory map), but the pages they free are not reused until the copy
// ends, so the live file may grow by what they write. Never give path a
// client's pace (a socket, a pipe): copy to a file, then send the file.
func (s *Store) CopyTo(path string) (Snapshot, error) {
	var snap Snapshot
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return snap, fmt.Errorf("copy the store: %w", err)
	}
	h := sha256.New()
	err = s.View(func(tx *Tx) error {
		var err error
		if snap.AuditHead, snap.AuditHash, err = tx.AuditHead(); err != nil {
			return err
		}
		snap.Size, err = tx.tx.WriteTo(io.MultiWriter(f, h))
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return snap, fmt.Errorf("copy the store to %s: %w", path, err)
	}
	snap.SHA256 = h.Sum(nil)
	return snap, nil
}
