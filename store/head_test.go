package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"signerd/store/pgtest"
)

// TestStoreThatWentBackTakesNoWrite: a database put back behind a running
// signerd (here: its last audit events removed and its head set back, as
// a restore or a failover to a lagging standby leaves it) is found by the
// next write, which fails ErrLogBehind and ErrWrite; so does every later
// write and the engine's probe, even once the log is long again. A log
// that moved on from what this process wrote (its own commit whose
// answer was lost) is no regression.
func TestStoreThatWentBackTakesNoWrite(t *testing.T) {
	dsn := newPostgresDatabase(t)
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	appendEvent := func(s *Store, action string) error {
		return s.Update(func(tx *Tx) error {
			_, err := tx.Append(Event{Action: action, Outcome: OutcomeOK})
			return err
		})
	}
	for i := range 3 {
		if err := appendEvent(s, fmt.Sprintf("event.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var headAt2 []byte
	view(t, s, func(tx *Tx) error {
		return tx.EventsAt(2, func(at uint64, _ Event, stored []byte) error {
			if at == 2 {
				headAt2 = ChainHash(stored)
			}
			return nil
		})
	})

	// Moved on behind this Store's back by one event chained to its head:
	// accepted. (other writes through the same connections, knowing no
	// head.)
	other := func() *Store { return &Store{b: s.b} }
	if err := appendEvent(other(), "event.elsewhere"); err != nil {
		t.Fatal(err)
	}
	if err := appendEvent(s, "event.3"); err != nil {
		t.Fatalf("a log that moved on from this process's head: %v", err)
	}

	// Put back to event 2.
	srv := pgtest.Shared(t)
	db := pgtest.DatabaseName(t, dsn)
	srv.Exec(t, db, "DELETE FROM audit WHERE k > $1", seqKey(2))
	raw, err := json.Marshal(auditHead{Seq: 2, Hash: headAt2})
	if err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, db, "UPDATE meta SET v = $1 WHERE k = $2", raw, keyAuditHead)

	err = appendEvent(s, "event.after-restore")
	if !errors.Is(err, ErrLogBehind) || !errors.Is(err, ErrWrite) {
		t.Fatalf("write to a log put back: %v; want ErrLogBehind and ErrWrite", err)
	}
	// For good, even once the log is as long as before, and for the probe.
	for i := range 3 {
		if err := appendEvent(other(), fmt.Sprintf("event.refill.%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := appendEvent(s, "event.later"); !errors.Is(err, ErrLogBehind) {
		t.Errorf("a later write: %v; want ErrLogBehind", err)
	}
	if err := s.Probe(); !errors.Is(err, ErrLogBehind) {
		t.Errorf("probe: %v; want ErrLogBehind", err)
	}
}
