package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// ErrNotEmbedded: the store is not a bbolt file, so it has no copy of its
// own to take; a PostgreSQL store is backed up by the database's tools
// (pg_basebackup and WAL archiving).
var ErrNotEmbedded = errors.New("the store is on PostgreSQL: back it up with pg_basebackup and WAL archiving, not signerd")

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
	if s.bolt == nil {
		return snap, ErrNotEmbedded
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return snap, fmt.Errorf("copy the store: %w", err)
	}
	h := sha256.New()
	err = s.bolt.db.View(func(tx *bolt.Tx) error {
		var err error
		if snap.AuditHead, snap.AuditHash, err = (&Tx{r: boltRecords{tx}}).AuditHead(); err != nil {
			return err
		}
		snap.Size, err = tx.WriteTo(io.MultiWriter(f, h))
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
