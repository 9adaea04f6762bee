package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The ra-replay table holds two kinds of record, told apart by the key's
// first byte:
//
//   - an RA certificate's replay mark, under its serial (minimal, as
//     signerd draws them: never empty, never a leading zero byte), a
//     time as text;
//   - a claim of one signed request, under 0x00, the serial's length (one
//     byte), the serial and the nonce: its date (8 bytes, big-endian Unix
//     nanoseconds) and a random token of the claim (raNonceTokenSize
//     bytes). The date first, so that claims sort by date in their values
//     and expired ones are found by a comparison of bytes.
//
// The marks are read and raised under the writer lock like every record;
// the claims are only ever inserted whole and deleted (insertNew,
// deleteBefore), so that nodes sharing the store claim requests without
// waiting on each other's batches.
const raNonceClaimPrefix = 0x00

// raNonceTokenSize is the random part of a claim's value, which makes a
// claim's value its own: a retry after a lost answer finds out whether the
// claim it finds is the one it sent.
const raNonceTokenSize = 8

// raNonceClaimKey is the claim of (serial, nonce).
func raNonceClaimKey(serial []byte, nonce string) ([]byte, error) {
	if len(serial) == 0 || len(serial) > 0xff || len(nonce) == 0 || len(nonce) > 0xff {
		return nil, fmt.Errorf("RA nonce claim: serial of %d bytes, nonce of %d: each must be 1 to 255", len(serial), len(nonce))
	}
	k := make([]byte, 0, 2+len(serial)+len(nonce))
	k = append(k, raNonceClaimPrefix, byte(len(serial)))
	k = append(k, serial...)
	return append(k, nonce...), nil
}

// parseRANonceClaimKey is raNonceClaimKey's inverse.
func parseRANonceClaimKey(k []byte) (serial []byte, nonce string, ok bool) {
	if len(k) < 2 || k[0] != raNonceClaimPrefix {
		return nil, "", false
	}
	n := int(k[1])
	if n == 0 || len(k) < 2+n+1 {
		return nil, "", false
	}
	return k[2 : 2+n], string(k[2+n:]), true
}

// raNonceDate encodes a claim's date so that dates compare as bytes.
func raNonceDate(date time.Time) ([]byte, error) {
	if date.Before(time.Unix(0, 0)) || date.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("RA nonce claim: date %s is outside what a claim records (1970 to 2262)", date.UTC().Format(time.RFC3339Nano))
	}
	return binary.BigEndian.AppendUint64(nil, uint64(date.UnixNano())), nil
}

// validMarkSerial refuses a serial whose mark would be read as a claim.
func validMarkSerial(serial []byte) error {
	if len(serial) == 0 || serial[0] == raNonceClaimPrefix {
		return fmt.Errorf("RA replay mark of serial %x: not a serial signerd draws (empty, or a leading zero byte)", serial)
	}
	return nil
}

// ClaimRANonce records that the request the RA certificate serial signed
// with nonce, dated date, is being accepted, unless it was claimed before,
// by this process or any other on the store: fresh reports whether this
// call claimed it. Nodes sharing a database call it for every signed
// request, so that a request accepted at one node is refused at every
// other. It is one durable write that takes no writer lock (on
// PostgreSQL, one autocommit INSERT … ON CONFLICT DO NOTHING): two
// processes claiming the same request at once get exactly one fresh. On
// bbolt, a file one process holds, it is an ordinary write transaction
// (with its fsync). A failure to write, or a write whose outcome is
// unknown, is ErrWrite: the request may or may not be claimed. A store
// that writes no more (ErrLogBehind, ErrNodeTakenOver) claims nothing.
func (s *Store) ClaimRANonce(serial []byte, nonce string, date time.Time) (fresh bool, err error) {
	if _, halted := s.lastWritten(); halted != nil {
		return false, halted
	}
	key, err := raNonceClaimKey(serial, nonce)
	if err != nil {
		return false, err
	}
	value, err := raNonceDate(date)
	if err != nil {
		return false, err
	}
	value = append(value, make([]byte, raNonceTokenSize)...)
	if _, err := rand.Read(value[len(value)-raNonceTokenSize:]); err != nil {
		return false, fmt.Errorf("RA nonce claim: %w", err)
	}
	return s.b.insertNew(tableRAReplay, key, value)
}

// ExpireRANonceClaims deletes up to limit claims (ClaimRANonce) dated
// before the time given, and returns how many it deleted; a caller with
// more to delete calls again. Like ClaimRANonce it takes no writer lock.
// Pass a time before which no node would take the date any more (the
// date check's skew, and a margin for the nodes' clocks): a claim deleted
// earlier lets its request be accepted again.
func (s *Store) ExpireRANonceClaims(before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, errors.New("expire RA nonce claims: the limit must be positive")
	}
	max, err := raNonceDate(before)
	if err != nil {
		return 0, err
	}
	return s.b.deleteBefore(tableRAReplay, []byte{raNonceClaimPrefix}, max, limit)
}

// RAReplayMark is, for the RA certificate serial, a time at or before
// which no request it signed may be accepted, because an earlier run of
// signerd may have accepted it already; zero if never set.
func (t *Tx) RAReplayMark(serial []byte) (time.Time, error) {
	if err := validMarkSerial(serial); err != nil {
		return time.Time{}, err
	}
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
	// From the first key after the claims': the marks only.
	if err := t.r.scan(tableRAReplay, []byte{raNonceClaimPrefix + 1}, nil, func(serial, raw []byte) error {
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
