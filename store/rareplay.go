package store

import (
	"fmt"
	"time"
)

// bucketRAReplay holds each RA certificate's replay mark (RAReplayMark),
// made on first use.
var bucketRAReplay = []byte("ra-replay")

// RAReplayMark is, for the RA certificate serial, a time at or before
// which no request it signed may be accepted, because an earlier run of
// signerd may have accepted it already; zero if never set.
func (t *Tx) RAReplayMark(serial []byte) (time.Time, error) {
	b := t.bucket(bucketRAReplay)
	if b == nil {
		return time.Time{}, nil
	}
	raw := b.Get(serial)
	if raw == nil {
		return time.Time{}, nil
	}
	var ts time.Time
	if err := ts.UnmarshalText(raw); err != nil {
		return time.Time{}, fmt.Errorf("read RA replay mark of %x: %w", serial, err)
	}
	return ts, nil
}

// RaiseRAReplayMark raises serial's RA replay mark to ts (never lowers it).
func (t *Tx) RaiseRAReplayMark(serial []byte, ts time.Time) error {
	last, err := t.RAReplayMark(serial)
	if err != nil {
		return err
	}
	if !ts.After(last) {
		return nil
	}
	b, err := t.tx.CreateBucketIfNotExists(bucketRAReplay)
	if err != nil {
		return err
	}
	raw, _ := ts.UTC().MarshalText()
	return b.Put(serial, raw)
}

// LowerRAReplayMarks lowers every RA replay mark later than ts to ts and
// returns the RA certificate serials whose marks it lowered: for an
// acknowledged clock reset (engine.resetClock), whose marks were raised
// past dates a clock that ran ahead accepted; it passes the clock plus the
// RA signatures' max_skew, the latest date a right clock could have
// accepted. A mark at ts or before is left. It reopens what those marks
// refused: a request accepted before, dated after ts, is no longer refused
// by its date once nothing in memory remembers its nonce; the caller says
// so.
func (t *Tx) LowerRAReplayMarks(ts time.Time) ([][]byte, error) {
	b := t.bucket(bucketRAReplay)
	if b == nil {
		return nil, nil
	}
	var ahead [][]byte
	if err := b.ForEach(func(serial, raw []byte) error {
		var mark time.Time
		if err := mark.UnmarshalText(raw); err != nil {
			return fmt.Errorf("read RA replay mark of %x: %w", serial, err)
		}
		if mark.After(ts) {
			ahead = append(ahead, append([]byte(nil), serial...))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	raw, _ := ts.UTC().MarshalText()
	// Written once the bucket has been read: none changes under its cursor.
	for _, serial := range ahead {
		if err := b.Put(serial, raw); err != nil {
			return nil, err
		}
	}
	return ahead, nil
}
