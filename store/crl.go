package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// CRLState is one CRL shard's sequence: the least number its next CRL may
// take, and what its latest complete and delta CRLs say. A shard's
// complete and delta CRLs share one sequence of numbers (RFC 5280 §5.2.3).
type CRLState struct {
	// Next is one more than the last CRL number taken. The engine numbers
	// a CRL by its signing time and takes Next only when that is not
	// larger, so Next alone does not say how many CRLs were signed.
	Next uint64 `json:"next"`
	// ThisUpdate, NextUpdate and Number are the latest complete CRL
	// recorded.
	ThisUpdate time.Time `json:"this_update,omitzero"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	// DER is the last CRL whose signature was recorded, in states written
	// before CRLObject kept the shards' CRLs apart; CRLObject reads it
	// when it has no object of its own. A number is taken (Next raised)
	// before signing, so a crash leaves a gap, never a reuse.
	DER []byte `json:"der,omitempty"`
	// Number is the latest complete CRL's number (zero in states recorded
	// before it was kept, by a single signerd, whose CRLs were recorded in
	// order).
	Number uint64 `json:"number,omitempty"`
	// BaseSeq is the change log's sequence (CRLChangeSeq) the latest
	// complete CRL lists the changes up to: its deltas list the changes
	// after it.
	BaseSeq uint64 `json:"base_seq,omitempty"`
	// DeltaNumber, DeltaThisUpdate and DeltaNextUpdate are the latest
	// delta CRL recorded.
	DeltaNumber     uint64    `json:"delta_number,omitempty"`
	DeltaThisUpdate time.Time `json:"delta_this_update,omitzero"`
	DeltaNextUpdate time.Time `json:"delta_next_update,omitzero"`
	// Claim is a node's reservation of the shard's next CRL, so that of
	// several nodes one signs it each interval; nil: none.
	Claim *CRLClaim `json:"claim,omitempty"`
}

// CRLClaim is a node's reservation of a shard's next CRL.
type CRLClaim struct {
	Node  string    `json:"node"`  // "" for the unnamed node
	Until time.Time `json:"until"` // when the claim lapses unless renewed
	Delta bool      `json:"delta,omitempty"`
}

// MaxCRLShards is the most shards a layout may have: a shard's number is
// two bytes in the keys of its records.
const MaxCRLShards = math.MaxUint16

// CRLState returns issuer's CRL state (its shard 0's); a new issuer's
// starts at number 1.
func (t *Tx) CRLState(issuer string) (CRLState, error) {
	raw, err := t.r.get(tableCRL, []byte(issuer))
	if err != nil {
		return CRLState{}, fmt.Errorf("CRL state of %s: %w", issuer, err)
	}
	return decodeCRLState(raw, fmt.Sprintf("CRL state of %s", issuer))
}

// PutCRLState records issuer's CRL state (its shard 0's).
func (t *Tx) PutCRLState(issuer string, s CRLState) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return t.r.put(tableCRL, []byte(issuer), raw)
}

// CRLShardState returns the state of issuer's CRL shard; a new shard's
// starts at number 1. Shard 0's is CRLState's: the sequence an issuer had
// before it was sharded carries on there.
func (t *Tx) CRLShardState(issuer string, shard int) (CRLState, error) {
	what := fmt.Sprintf("CRL state of %s shard %d", issuer, shard)
	key, err := crlShardKey(issuer, shard)
	if err != nil {
		return CRLState{}, fmt.Errorf("%s: %w", what, err)
	}
	raw, err := t.r.get(tableCRL, key)
	if err != nil {
		return CRLState{}, fmt.Errorf("%s: %w", what, err)
	}
	return decodeCRLState(raw, what)
}

// PutCRLShardState records the state of issuer's CRL shard.
func (t *Tx) PutCRLShardState(issuer string, shard int, s CRLState) error {
	key, err := crlShardKey(issuer, shard)
	if err != nil {
		return fmt.Errorf("CRL state of %s shard %d: %w", issuer, shard, err)
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return t.r.put(tableCRL, key, raw)
}

func decodeCRLState(raw []byte, what string) (CRLState, error) {
	if raw == nil {
		return CRLState{Next: 1}, nil
	}
	var s CRLState
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("%s: decode: %w", what, err)
	}
	return s, nil
}

// The keys of the crl table: an issuer's id (lowercase hex) for its shard
// 0, as before it was sharded; the id, a zero byte and the shard's number
// (big-endian, two bytes) for each other shard; the id, a zero byte and
// crlLayoutSuffix for its layout. No id holds a zero byte, so none of
// these is another issuer's.
var crlLayoutSuffix = []byte("layout")

// crlIssuer refuses an issuer id the keys of the CRL records cannot hold.
func crlIssuer(issuer string) error {
	if issuer == "" || strings.IndexByte(issuer, 0) >= 0 {
		return fmt.Errorf("issuer id %q: empty or holding a zero byte", issuer)
	}
	return nil
}

func crlShardKey(issuer string, shard int) ([]byte, error) {
	if err := crlIssuer(issuer); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= MaxCRLShards {
		return nil, fmt.Errorf("shard %d out of range [0, %d)", shard, MaxCRLShards)
	}
	if shard == 0 {
		return []byte(issuer), nil
	}
	return binary.BigEndian.AppendUint16(append([]byte(issuer), 0), uint16(shard)), nil
}

func crlLayoutKey(issuer string) []byte {
	return append(append([]byte(issuer), 0), crlLayoutSuffix...)
}

// crlKeyKind is what a key of the crl table names.
type crlKeyKind int

const (
	crlKeyMalformed crlKeyKind = iota
	crlKeyState
	crlKeyLayout
)

// parseCRLKey reads a key of the crl table: an issuer's shard state (and
// the shard) or layout.
func parseCRLKey(k []byte) (issuer string, shard int, kind crlKeyKind) {
	i := bytes.IndexByte(k, 0)
	switch {
	case len(k) == 0 || i == 0:
		return "", 0, crlKeyMalformed
	case i < 0:
		return string(k), 0, crlKeyState
	case bytes.Equal(k[i+1:], crlLayoutSuffix):
		return string(k[:i]), 0, crlKeyLayout
	case len(k) == i+3:
		if shard := int(binary.BigEndian.Uint16(k[i+1:])); shard != 0 {
			return string(k[:i]), shard, crlKeyState
		}
	}
	return "", 0, crlKeyMalformed
}

// crlObjectKey is where a shard's latest complete (kind 0) or delta (kind
// 1) CRL is kept: the issuer, a zero byte, the shard (big-endian, two
// bytes), a zero byte and the kind.
func crlObjectKey(issuer string, shard int, delta bool) ([]byte, error) {
	if err := crlIssuer(issuer); err != nil {
		return nil, err
	}
	if shard < 0 || shard >= MaxCRLShards {
		return nil, fmt.Errorf("shard %d out of range [0, %d)", shard, MaxCRLShards)
	}
	k := binary.BigEndian.AppendUint16(append([]byte(issuer), 0), uint16(shard))
	kind := byte(0)
	if delta {
		kind = 1
	}
	return append(k, 0, kind), nil
}

// parseCRLObjectKey reads a key of the crl-objects table.
func parseCRLObjectKey(k []byte) (issuer string, shard int, delta, ok bool) {
	n := len(k)
	if n < 6 || k[n-5] != 0 || k[n-2] != 0 || k[n-1] > 1 || bytes.IndexByte(k[:n-5], 0) >= 0 {
		return "", 0, false, false
	}
	return string(k[:n-5]), int(binary.BigEndian.Uint16(k[n-4:])), k[n-1] == 1, true
}

// CRLObject returns the latest complete or delta CRL recorded for issuer's
// shard, a copy that outlives the transaction, or nil if there is none.
// Shard 0's complete CRL, if none was recorded as an object, is the one a
// CRL state written before objects were kept holds.
func (t *Tx) CRLObject(issuer string, shard int, delta bool) ([]byte, error) {
	what := fmt.Sprintf("CRL object of %s shard %d (delta %v)", issuer, shard, delta)
	key, err := crlObjectKey(issuer, shard, delta)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	raw, err := t.r.get(tableCRLObjects, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if raw != nil {
		return bytes.Clone(raw), nil
	}
	if shard != 0 || delta {
		return nil, nil
	}
	s, err := t.CRLState(issuer)
	if err != nil {
		return nil, err
	}
	return s.DER, nil
}

// PutCRLObject records der as the latest complete or delta CRL of issuer's
// shard. Shard 0's complete CRL, once an object, is dropped from its
// state, where a CRL state written before objects were kept held it: the
// state is read often, the object only when served.
func (t *Tx) PutCRLObject(issuer string, shard int, delta bool, der []byte) error {
	what := fmt.Sprintf("CRL object of %s shard %d (delta %v)", issuer, shard, delta)
	key, err := crlObjectKey(issuer, shard, delta)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(der) == 0 {
		return fmt.Errorf("%s: empty", what)
	}
	if err := t.r.put(tableCRLObjects, key, der); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if shard != 0 || delta {
		return nil
	}
	s, err := t.CRLState(issuer)
	if err != nil || s.DER == nil {
		return err
	}
	s.DER = nil
	return t.PutCRLState(issuer, s)
}

// CRLLayout is how an issuer's certificates are spread over CRL shards.
// Once a certificate of the issuer exists, its CRL distribution point
// names a shard, so the layout is fixed (Pinned).
type CRLLayout struct {
	Shards int `json:"shards"`
	// URL is the distribution point template ({shard} for the shard's
	// number); DeltaURL the delta CRLs' (FreshestCRL).
	URL      string `json:"url,omitempty"`
	DeltaURL string `json:"delta_url,omitempty"`
	// Pinned: a certificate of the issuer exists, and the layout no
	// longer changes.
	Pinned bool `json:"pinned,omitempty"`
}

// ErrLayoutPinned: a pinned CRL layout would change.
var ErrLayoutPinned = errors.New("the CRL layout is pinned: certificates name its distribution points")

// CRLLayout returns issuer's CRL layout; false if none is recorded.
func (t *Tx) CRLLayout(issuer string) (CRLLayout, bool, error) {
	what := "CRL layout of " + issuer
	if err := crlIssuer(issuer); err != nil {
		return CRLLayout{}, false, fmt.Errorf("%s: %w", what, err)
	}
	raw, err := t.r.get(tableCRL, crlLayoutKey(issuer))
	if err != nil || raw == nil {
		if err != nil {
			err = fmt.Errorf("%s: %w", what, err)
		}
		return CRLLayout{}, false, err
	}
	var l CRLLayout
	if err := json.Unmarshal(raw, &l); err != nil {
		return CRLLayout{}, false, fmt.Errorf("%s: decode: %w", what, err)
	}
	return l, true, nil
}

// PutCRLLayout records issuer's CRL layout. A pinned layout is recorded
// once and then only again as it is (ErrLayoutPinned otherwise): the
// certificates issued under it name its shards' distribution points.
func (t *Tx) PutCRLLayout(issuer string, l CRLLayout) error {
	what := "CRL layout of " + issuer
	if l.Shards < 1 || l.Shards > MaxCRLShards {
		return fmt.Errorf("%s: %d shards, want 1 to %d", what, l.Shards, MaxCRLShards)
	}
	old, found, err := t.CRLLayout(issuer)
	if err != nil {
		return err
	}
	if found && old.Pinned && old != l {
		return fmt.Errorf("%s: %w (recorded %+v, asked %+v)", what, ErrLayoutPinned, old, l)
	}
	raw, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return t.r.put(tableCRL, crlLayoutKey(issuer), raw)
}

// HasCertificateOf reports whether any certificate names issuer. It reads
// the certificates until the first of issuer: once per issuer, when its
// layout is first recorded.
func (t *Tx) HasCertificateOf(issuer string) (bool, error) {
	errFound := errors.New("found")
	// A record that cannot name the issuer is passed over undecoded.
	mark, err := json.Marshal(issuer)
	if err != nil {
		return false, err
	}
	err = t.r.scan(tableCerts, nil, nil, func(k, v []byte) error {
		if !bytes.Contains(v, mark) {
			return nil
		}
		var c struct {
			Issuer string `json:"issuer"`
		}
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("certificate %x: decode: %w", k, err)
		}
		if c.Issuer == issuer {
			return errFound
		}
		return nil
	})
	switch {
	case errors.Is(err, errFound):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("certificates of %s: %w", issuer, err)
	}
	return false, nil
}

// The change log: a record for each change of a certificate's listing on
// its issuer's CRL, so that a delta CRL lists what changed after its base
// without reading every entry. Its key is the issuer, a zero byte and the
// change's sequence (big-endian, 8 bytes); its value the change's time
// (Unix nanoseconds, big-endian, 8 bytes; 0 for none) and the serial. The
// sequence is the store's, across issuers and nodes: keyCRLChangeSeq in
// meta holds the last one given, raised by write transactions, which run
// one at a time.
var keyCRLChangeSeq = []byte("crl-change-seq")

// CRLChange is one change of a certificate's listing.
type CRLChange struct {
	Seq    uint64
	Serial []byte
	// At is the revocation time of a certificate listed by the change
	// (revoked, put on hold, or its reason or time changed), zero for one
	// restored from hold: the store has no time of its own to give it.
	At time.Time
}

// CRLChangeSeq is the last sequence number given to a change, 0 if none.
func (t *Tx) CRLChangeSeq() (uint64, error) {
	raw, err := t.r.get(tableMeta, keyCRLChangeSeq)
	switch {
	case err != nil:
		return 0, fmt.Errorf("CRL change sequence: %w", err)
	case raw == nil:
		return 0, nil
	case len(raw) != 8:
		return 0, fmt.Errorf("CRL change sequence: %d bytes, want 8", len(raw))
	}
	return binary.BigEndian.Uint64(raw), nil
}

// appendCRLChange logs a change of c's listing.
func (t *Tx) appendCRLChange(c *Certificate) error {
	what := fmt.Sprintf("CRL change of certificate %x", c.Serial)
	if err := crlIssuer(c.Issuer); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	seq, err := t.CRLChangeSeq()
	if err != nil {
		return err
	}
	seq++
	var at time.Time
	if c.Listed() {
		at = c.RevokedAt
	}
	if err := t.r.put(tableMeta, keyCRLChangeSeq, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := t.r.put(tableCRLChanges, crlChangeKey(c.Issuer, seq), crlChangeValue(at, c.Serial)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// listingChanged reports whether a certificate's listing differs between
// its record before (nil: none) and after a write.
func listingChanged(before, after *Certificate) bool {
	if before == nil {
		return after.Listed()
	}
	if before.Listed() != after.Listed() {
		return true
	}
	return after.Listed() && (!before.RevokedAt.Equal(after.RevokedAt) || before.Reason != after.Reason)
}

func crlChangeKey(issuer string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(issuer), 0), seq)
}

func crlChangeValue(at time.Time, serial []byte) []byte {
	var nanos uint64
	if !at.IsZero() {
		nanos = uint64(at.UnixNano())
	}
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(serial)), nanos), serial...)
}

// parseCRLChange reads a record of the change log.
func parseCRLChange(k, v []byte) (issuer string, c CRLChange, err error) {
	n := len(k)
	if n < 10 || k[n-9] != 0 || bytes.IndexByte(k[:n-9], 0) >= 0 {
		return "", c, errors.New("malformed key: want an issuer id, a zero byte and an 8-byte sequence")
	}
	issuer, c.Seq = string(k[:n-9]), binary.BigEndian.Uint64(k[n-8:])
	if c.Seq == 0 {
		return issuer, c, errors.New("sequence 0: changes are numbered from 1")
	}
	if len(v) < 9 {
		return issuer, c, fmt.Errorf("value of %d bytes: want an 8-byte time and a serial", len(v))
	}
	if nanos := binary.BigEndian.Uint64(v); nanos != 0 {
		c.At = time.Unix(0, int64(nanos)).UTC()
	}
	c.Serial = v[8:]
	return issuer, c, nil
}

// CRLChanges calls fn for each change of issuer's certificates after
// sequence after, in sequence order. Serial is valid until the
// transaction ends.
func (t *Tx) CRLChanges(issuer string, after uint64, fn func(CRLChange) error) error {
	what := "CRL changes of " + issuer
	if err := crlIssuer(issuer); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if after == math.MaxUint64 {
		return nil
	}
	prefix := append([]byte(issuer), 0)
	return t.r.scanRange(tableCRLChanges, crlChangeKey(issuer, after+1), prefixEnd(prefix), func(k, v []byte) error {
		_, c, err := parseCRLChange(k, v)
		if err != nil {
			return fmt.Errorf("%s: record %x: %w", what, k, err)
		}
		return fn(c)
	})
}

// PruneCRLChanges deletes up to limit of issuer's changes of sequence upTo
// or less, oldest first, and returns how many it deleted: the changes no
// delta CRL will list any more, once a complete CRL lists past them.
func (t *Tx) PruneCRLChanges(issuer string, upTo uint64, limit int) (int, error) {
	what := "prune CRL changes of " + issuer
	if err := crlIssuer(issuer); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if limit <= 0 || upTo == 0 {
		return 0, nil
	}
	hi := prefixEnd(append([]byte(issuer), 0))
	if upTo < math.MaxUint64 {
		hi = crlChangeKey(issuer, upTo+1)
	}
	errEnough := errors.New("enough")
	var keys [][]byte
	// Deleted once the scan is over: neither engine's scan may see its
	// table change under it.
	err := t.r.scanRange(tableCRLChanges, crlChangeKey(issuer, 0), hi, func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		if len(keys) == limit {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	for _, k := range keys {
		if err := t.r.delete(tableCRLChanges, k); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
	}
	return len(keys), nil
}
