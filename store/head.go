package store

import (
	"bytes"
	"errors"
	"fmt"
)

// A store can go back in time under a running signerd without signerd
// restarting: a database restored, or failed over to a standby that lacks
// the last commits, while signerd keeps its connections. Writing on would
// rewrite the audit log from the older head, and the next seal would move
// the HSM's audit anchor onto the shortened log, so that the check at
// start-up, which catches exactly this, would pass. Each Store therefore
// remembers the audit log's head as it last wrote it (or found it at
// open), and every write transaction first checks that the log still
// holds that event, byte for byte. A log that does not is reported once
// and for good: this process writes nothing more, and a restart puts the
// store before the anchor check.

// ErrLogBehind: the store's audit log no longer holds what this process
// wrote. It is also ErrWrite, so requests fail store_unavailable and
// health says the store takes no writes.
var ErrLogBehind = errors.New("the store went back behind what this signerd wrote")

// checkHead checks that the log still holds known, the head this process
// last wrote: as the head, or as an event before it.
func (t *Tx) checkHead(known auditHead) error {
	if known.Seq == 0 {
		return nil
	}
	head, err := t.auditHead()
	if err != nil {
		return err
	}
	if head.Seq == known.Seq && bytes.Equal(head.Hash, known.Hash) {
		return nil
	}
	if head.Seq > known.Seq {
		stored, err := t.r.get(tableAudit, t.chain.eventKey(known.Seq))
		if err != nil {
			return err
		}
		if stored != nil && bytes.Equal(ChainHash(stored), known.Hash) {
			return nil
		}
	}
	return fmt.Errorf("%w: %w: this signerd wrote audit event %d, which the store no longer holds as written (its log ends at event %d): "+
		"the database was restored, or failed over to a copy without the last commits, under a running signerd. "+
		"Nothing more is written; restart signerd, whose start-up check against the HSM's audit anchor says what is missing and what to do",
		ErrWrite, ErrLogBehind, known.Seq, head.Seq)
}

// lastWritten is the head this process last wrote, or the reason it
// writes no more (ErrLogBehind, ErrNodeTakenOver).
func (s *Store) lastWritten() (auditHead, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written, s.halted
}

// noteWritten records the outcome of a write: its head if it committed,
// and for good a log found behind.
func (s *Store) noteWritten(head auditHead, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case errors.Is(err, ErrLogBehind), errors.Is(err, ErrNodeTakenOver):
		if s.halted == nil {
			s.halted = err
		}
	case err == nil && head.Seq >= s.written.Seq:
		// Update notes its writes in order; a head never moves back.
		s.written = head
	}
}
