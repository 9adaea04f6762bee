package store

import (
	"fmt"
	"time"
)

// RAReplayMark is, for the RA certificate serial, a time at or before
// which no request it signed may be accepted, because an earlier run of
// signerd may have accepted it already; zero if never set.
func (t *Tx) RAReplayMark(serial []byte) (time.Time, error) {
	raw, err := t.r.get(tableRAReplay, serial)
	if err != nil || raw == nil {
		return time.Time{}, err
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
	raw, _ := ts.UTC().MarshalText()
	return t.r.put(tableRAReplay, serial, raw)
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
	var ahead [][]byte
	if err := t.r.scan(tableRAReplay, nil, nil, func(serial, raw []byte) error {
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
	// Written once the table has been read: none changes under its scan.
	for _, serial := range ahead {
		if err := t.r.put(tableRAReplay, serial, raw); err != nil {
			return nil, err
		}
	}
	return ahead, nil
}
