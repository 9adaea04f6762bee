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
