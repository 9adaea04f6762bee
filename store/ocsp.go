package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// OCSPResponse is the latest signed response for one certificate.
type OCSPResponse struct {
	Issuer     string // issuer id (hex SKI)
	Serial     []byte
	ThisUpdate time.Time
	// NextUpdate is zero for a response that names none.
	NextUpdate time.Time
	DER        []byte // the whole OCSPResponse
}

// The OCSP records. A certificate's record in tableOCSPResponses, under
// issuer, a zero byte and its serial, holds its latest response and the
// time it is next due (ocspRecord); its entry in tableOCSPDue, under that
// time (big-endian Unix nanoseconds, 8 bytes), a zero byte, the issuer, a
// zero byte and the serial, with an empty value, is what the pre-signer
// finds by scanning the due times in order up to now. The record names
// its one due entry, so that an entry is moved by deleting the old key and
// writing the new, and a serial never has two; a certificate due before
// its first response has a record without one (no DER) to name it.
//
// Issuer ids hold no zero byte (crlIssuer), so the first zero byte after
// the time ends the issuer and the serial, which may hold zero bytes, is
// the rest.

// ocspRecordFormat is the first byte of every record in tableOCSPResponses:
// a later layout gets another number, so that neither is read as the other.
const ocspRecordFormat = 1

// ocspRecordHeader is a record's size without its DER: the format byte,
// thisUpdate, nextUpdate and the due time (Unix nanoseconds, big-endian, 8
// bytes each; 0 for none).
const ocspRecordHeader = 1 + 3*8

// ocspRecord is a decoded record of tableOCSPResponses.
type ocspRecord struct {
	thisUpdate, nextUpdate time.Time
	// dueAt is when the response is next due, zero for never (no entry
	// in tableOCSPDue).
	dueAt time.Time
	// der is the response, nil if none was recorded yet.
	der []byte
}

func (r *ocspRecord) encode() []byte {
	v := make([]byte, 1, ocspRecordHeader+len(r.der))
	v[0] = ocspRecordFormat
	v = binary.BigEndian.AppendUint64(v, ocspNanos(r.thisUpdate))
	v = binary.BigEndian.AppendUint64(v, ocspNanos(r.nextUpdate))
	v = binary.BigEndian.AppendUint64(v, ocspNanos(r.dueAt))
	return append(v, r.der...)
}

// decodeOCSPRecord reads a record of tableOCSPResponses; der aliases v.
func decodeOCSPRecord(v []byte) (ocspRecord, error) {
	var r ocspRecord
	switch {
	case len(v) < ocspRecordHeader:
		return r, fmt.Errorf("%d bytes, want at least %d", len(v), ocspRecordHeader)
	case v[0] != ocspRecordFormat:
		return r, fmt.Errorf("record format %d, want %d", v[0], ocspRecordFormat)
	}
	var err error
	for i, t := range []*time.Time{&r.thisUpdate, &r.nextUpdate, &r.dueAt} {
		n := binary.BigEndian.Uint64(v[1+8*i:])
		if n > math.MaxInt64 {
			err = errors.Join(err, fmt.Errorf("time %d is before 1970", int64(n)))
			continue
		}
		if n != 0 {
			*t = time.Unix(0, int64(n)).UTC()
		}
	}
	if err != nil {
		return r, err
	}
	if len(v) > ocspRecordHeader {
		r.der = v[ocspRecordHeader:]
	}
	switch {
	case r.der == nil && r.dueAt.IsZero():
		return r, errors.New("neither a response nor a due time")
	case r.der == nil && (!r.thisUpdate.IsZero() || !r.nextUpdate.IsZero()):
		return r, errors.New("update times without a response")
	case r.der != nil && r.thisUpdate.IsZero():
		return r, errors.New("a response without thisUpdate")
	case !r.nextUpdate.IsZero() && r.nextUpdate.Before(r.thisUpdate):
		return r, fmt.Errorf("nextUpdate %v before thisUpdate %v", r.nextUpdate, r.thisUpdate)
	}
	return r, nil
}

// ocspNanos is t in Unix nanoseconds, 0 for the zero time. Callers have
// checked that t is representable (ocspTime).
func ocspNanos(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

// ocspTime refuses a time the records cannot hold: one before 1970 or
// after 2262 (Unix nanoseconds in an int64), and 1970-01-01T00:00:00Z
// itself, which is how they say "none". Due keys sort by their time
// bytewise only because none is negative.
func ocspTime(what string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	lo, hi := time.Unix(0, 1), time.Unix(0, math.MaxInt64)
	if t.Before(lo) || t.After(hi) {
		return fmt.Errorf("%s %v: outside the times the store holds (after 1970, before 2262)", what, t)
	}
	return nil
}

func ocspResponseKey(issuer string, serial []byte) ([]byte, error) {
	if err := crlIssuer(issuer); err != nil {
		return nil, err
	}
	if len(serial) == 0 {
		return nil, errors.New("empty serial")
	}
	k := make([]byte, 0, len(issuer)+1+len(serial))
	return append(append(append(k, issuer...), 0), serial...), nil
}

// parseOCSPResponseKey reads a key of tableOCSPResponses.
func parseOCSPResponseKey(k []byte) (issuer string, serial []byte, ok bool) {
	i := ocspIssuerEnd(k)
	if i < 0 {
		return "", nil, false
	}
	return string(k[:i]), k[i+1:], true
}

// ocspIssuerEnd is the index of the zero byte that ends the issuer of a
// key of tableOCSPResponses, -1 if it is no such key.
func ocspIssuerEnd(k []byte) int {
	i := bytes.IndexByte(k, 0)
	if i <= 0 || i == len(k)-1 {
		return -1
	}
	return i
}

// ocspDueKey is the due entry of the response under responseKey (issuer,
// a zero byte, serial) at dueAt.
func ocspDueKey(dueAt time.Time, responseKey []byte) []byte {
	k := make([]byte, 0, 9+len(responseKey))
	k = binary.BigEndian.AppendUint64(k, ocspNanos(dueAt))
	return append(append(k, 0), responseKey...)
}

// parseOCSPDueKey reads a key of tableOCSPDue; responseKey aliases k.
func parseOCSPDueKey(k []byte) (dueAt time.Time, responseKey []byte, ok bool) {
	if len(k) < 9 || k[8] != 0 {
		return time.Time{}, nil, false
	}
	n := binary.BigEndian.Uint64(k)
	if n == 0 || n > math.MaxInt64 {
		return time.Time{}, nil, false
	}
	if ocspIssuerEnd(k[9:]) < 0 {
		return time.Time{}, nil, false
	}
	return time.Unix(0, int64(n)).UTC(), k[9:], true
}

// ocspDueBefore is the least due key of a time after until: every entry
// due at or before until sorts before it.
func ocspDueBefore(until time.Time) []byte {
	var n int64
	switch {
	case until.Before(time.Unix(0, 1)):
	case until.After(time.Unix(0, math.MaxInt64)):
		// UnixNano is undefined past 2262; every due time is before.
		n = math.MaxInt64
	default:
		n = until.UnixNano()
	}
	if n < math.MaxInt64 {
		n++
	}
	return binary.BigEndian.AppendUint64(nil, uint64(n))
}

// ocspRecordOf reads the record under key, nil if there is none.
func (t *Tx) ocspRecordOf(key []byte) (*ocspRecord, error) {
	raw, err := t.r.get(tableOCSPResponses, key)
	if err != nil || raw == nil {
		return nil, err
	}
	r, err := decodeOCSPRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &r, nil
}

// moveOCSPDue writes rec under key, its due entry moved from the time the
// record held (old, zero if none) to rec.dueAt (zero: none).
func (t *Tx) moveOCSPDue(key []byte, old time.Time, rec *ocspRecord) error {
	if !old.IsZero() && !old.Equal(rec.dueAt) {
		if err := t.r.delete(tableOCSPDue, ocspDueKey(old, key)); err != nil {
			return err
		}
	}
	if !rec.dueAt.IsZero() && !rec.dueAt.Equal(old) {
		if err := t.r.put(tableOCSPDue, ocspDueKey(rec.dueAt, key), nil); err != nil {
			return err
		}
	}
	if rec.der == nil && rec.dueAt.IsZero() {
		// Nothing left to keep: no response, and none to make.
		return t.r.delete(tableOCSPResponses, key)
	}
	return t.r.put(tableOCSPResponses, key, rec.encode())
}

// OCSPResponse returns the latest response recorded for the certificate,
// a copy that outlives the transaction, or nil if none was.
func (t *Tx) OCSPResponse(issuer string, serial []byte) (*OCSPResponse, error) {
	what := fmt.Sprintf("OCSP response of %s serial %s", issuer, HexSerial(serial))
	key, err := ocspResponseKey(issuer, serial)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	raw, err := t.r.get(tableOCSPResponses, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	r, err := ocspResponseOf(issuer, serial, raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return r, nil
}

// ocspResponseOf is the response the record raw holds, copied, nil if raw
// is nil or holds only a due time.
func ocspResponseOf(issuer string, serial, raw []byte) (*OCSPResponse, error) {
	if raw == nil {
		return nil, nil
	}
	rec, err := decodeOCSPRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if rec.der == nil {
		return nil, nil
	}
	return &OCSPResponse{Issuer: issuer, Serial: bytes.Clone(serial), ThisUpdate: rec.thisUpdate,
		NextUpdate: rec.nextUpdate, DER: bytes.Clone(rec.der)}, nil
}

// PutOCSPResponse records r as the certificate's latest response and
// schedules its refresh at refreshAt (zero: never), removing the serial's
// previous due entry, whenever it was due.
//
// That includes an entry MarkOCSPDue made after r was signed: the caller
// checks, in the transaction that records r, that the certificate's
// status is still the one r states (a revocation committed while r was
// being signed would otherwise wait for r's refresh), or marks it due
// again after recording r.
func (t *Tx) PutOCSPResponse(r *OCSPResponse, refreshAt time.Time) error {
	what := fmt.Sprintf("OCSP response of %s serial %s", r.Issuer, HexSerial(r.Serial))
	key, err := ocspResponseKey(r.Issuer, r.Serial)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case !oneDERSequence(r.DER):
		return fmt.Errorf("%s: %d bytes that are not one DER SEQUENCE", what, len(r.DER))
	case r.ThisUpdate.IsZero():
		return fmt.Errorf("%s: no thisUpdate", what)
	case !r.NextUpdate.IsZero() && r.NextUpdate.Before(r.ThisUpdate):
		return fmt.Errorf("%s: nextUpdate %v before thisUpdate %v", what, r.NextUpdate, r.ThisUpdate)
	}
	if err := errors.Join(ocspTime("thisUpdate", r.ThisUpdate), ocspTime("nextUpdate", r.NextUpdate),
		ocspTime("refresh time", refreshAt)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	old, err := t.ocspRecordOf(key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var oldDue time.Time
	if old != nil {
		oldDue = old.dueAt
	}
	rec := &ocspRecord{thisUpdate: r.ThisUpdate, nextUpdate: r.NextUpdate, dueAt: refreshAt, der: r.DER}
	if err := t.moveOCSPDue(key, oldDue, rec); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// MarkOCSPDue makes the certificate's response due at at, unless it is
// due at that time or earlier already: a certificate is marked when it is
// issued and when its listing changes, at the time it happens, and a
// later mark must not put off a response already due.
func (t *Tx) MarkOCSPDue(issuer string, serial []byte, at time.Time) error {
	return t.setOCSPDue("mark OCSP response of %s serial %s due", issuer, serial, at, true)
}

// RetryOCSPDue puts the certificate's due entry off to at, later or
// earlier: a response whose signing failed is tried again then, and is
// not taken first by every batch meanwhile (MarkOCSPDue never puts one
// off). A certificate with no due entry gets one.
func (t *Tx) RetryOCSPDue(issuer string, serial []byte, at time.Time) error {
	return t.setOCSPDue("retry OCSP response of %s serial %s", issuer, serial, at, false)
}

// setOCSPDue makes the certificate's response due at at; if onlyEarlier,
// not if it is due at that time or earlier already. doing names the
// change in errors (issuer and serial filled in).
func (t *Tx) setOCSPDue(doing, issuer string, serial []byte, at time.Time, onlyEarlier bool) error {
	what := fmt.Sprintf(doing, issuer, HexSerial(serial))
	key, err := ocspResponseKey(issuer, serial)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if at.IsZero() {
		return fmt.Errorf("%s: no time", what)
	}
	if err := ocspTime("due time", at); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	rec, err := t.ocspRecordOf(key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if rec == nil {
		rec = &ocspRecord{}
	}
	old := rec.dueAt
	if onlyEarlier && !old.IsZero() && !at.Before(old) {
		return nil
	}
	rec.dueAt = at
	if err := t.moveOCSPDue(key, old, rec); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ClearOCSPDue removes the certificate's due entry, if it has one: it
// expired, and no response is made for it any more. Its latest response
// stays.
func (t *Tx) ClearOCSPDue(issuer string, serial []byte) error {
	what := fmt.Sprintf("clear OCSP due time of %s serial %s", issuer, HexSerial(serial))
	key, err := ocspResponseKey(issuer, serial)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	rec, err := t.ocspRecordOf(key)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if rec == nil || rec.dueAt.IsZero() {
		return nil
	}
	old := rec.dueAt
	rec.dueAt = time.Time{}
	if err := t.moveOCSPDue(key, old, rec); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// errOCSPEnough stops a scan once it has given what was asked.
var errOCSPEnough = errors.New("enough")

// DueOCSP calls fn for up to limit due entries with dueAt ≤ until, in due
// order (then issuer, then serial, bytewise). serial is fn's to keep; the
// entry stays until a response is recorded or ClearOCSPDue removes it, so
// a later call gives it again.
func (t *Tx) DueOCSP(until time.Time, limit int, fn func(issuer string, serial []byte, dueAt time.Time) error) error {
	if limit <= 0 {
		return nil
	}
	n := 0
	// Serials are copied into shared blocks rather than one allocation
	// each, and each issuer's id, one of a few, is made a string once.
	var block []byte
	issuers := map[string]string{}
	err := t.r.scanRangeLimit(tableOCSPDue, nil, ocspDueBefore(until), limit, func(k, _ []byte) error {
		dueAt, rk, ok := parseOCSPDueKey(k)
		if !ok {
			return fmt.Errorf("due entry %x: malformed key", k)
		}
		i := bytes.IndexByte(rk, 0)
		issuer, seen := issuers[string(rk[:i])]
		if !seen {
			issuer = string(rk[:i])
			issuers[issuer] = issuer
		}
		serial := rk[i+1:]
		if cap(block)-len(block) < len(serial) {
			block = make([]byte, 0, max(4096, len(serial)))
		}
		block = append(block, serial...)
		if err := fn(issuer, block[len(block)-len(serial):len(block):len(block)], dueAt); err != nil {
			return err
		}
		if n++; n == limit {
			return errOCSPEnough
		}
		return nil
	})
	if errors.Is(err, errOCSPEnough) {
		return nil
	}
	return err
}

// CountOCSPDue counts the due entries with dueAt ≤ until, up to max: the
// count stops there, so it costs no more than reading max entries.
func (t *Tx) CountOCSPDue(until time.Time, max int) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	n := 0
	err := t.r.scanRangeLimit(tableOCSPDue, nil, ocspDueBefore(until), max, func([]byte, []byte) error {
		if n++; n == max {
			return errOCSPEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errOCSPEnough) {
		return 0, fmt.Errorf("count OCSP responses due: %w", err)
	}
	return n, nil
}

// OCSPResponses calls fn for each response of issuer whose serial sorts
// after after (bytewise; nil: from the first), in serial order, up to
// limit of them (limit ≤ 0: all). A certificate due before its first
// response has none, and is passed over. Each response is a copy.
func (t *Tx) OCSPResponses(issuer string, after []byte, limit int, fn func(*OCSPResponse) error) error {
	what := "OCSP responses of " + issuer
	if err := crlIssuer(issuer); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	prefix := append([]byte(issuer), 0)
	lo := prefix
	if len(after) > 0 {
		// The least key after issuer's serial after: the serial with a
		// zero byte appended.
		lo = append(append(bytes.Clone(prefix), after...), 0)
	}
	n := 0
	var fnErr error
	err := t.r.scanRangeLimit(tableOCSPResponses, lo, prefixEnd(prefix), limit, func(k, v []byte) error {
		r, err := ocspResponseOf(issuer, k[len(prefix):], v)
		if err != nil {
			return fmt.Errorf("serial %s: %w", HexSerial(k[len(prefix):]), err)
		}
		if r == nil {
			return nil
		}
		if fnErr = fn(r); fnErr != nil {
			return fnErr
		}
		if n++; n == limit {
			return errOCSPEnough
		}
		return nil
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err != nil && !errors.Is(err, errOCSPEnough):
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// OCSPKey names a certificate's OCSP records, for Prefetch.
type OCSPKey struct {
	Issuer string
	Serial []byte
}

// keyOCSPBackfill records how far the one-time marking of the
// certificates recorded before OCSP pre-signing began has got: 'p' and
// the last serial marked, or 'd' once done.
var keyOCSPBackfill = []byte("ocsp-backfill")

// OCSPBackfill returns the last serial the marking of older certificates
// reached (nil: not begun) and whether it is complete.
func (t *Tx) OCSPBackfill() (after []byte, done bool, err error) {
	raw, err := t.r.get(tableMeta, keyOCSPBackfill)
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("OCSP backfill: %w", err)
	case len(raw) == 0:
		return nil, false, nil
	case raw[0] == 'd':
		return nil, true, nil
	case raw[0] == 'p':
		return bytes.Clone(raw[1:]), false, nil
	}
	return nil, false, fmt.Errorf("OCSP backfill: record %q does not decode", raw)
}

// PutOCSPBackfill records the marking's progress: after, the last serial
// marked, or done.
func (t *Tx) PutOCSPBackfill(after []byte, done bool) error {
	if done {
		return t.r.put(tableMeta, keyOCSPBackfill, []byte{'d'})
	}
	return t.r.put(tableMeta, keyOCSPBackfill, append([]byte{'p'}, after...))
}
