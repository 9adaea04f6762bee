package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"signerd/revocation"
	"time"
)

// CertStatus is where a certificate is in its lifecycle.
type CertStatus string

const (
	StatusGood       CertStatus = "good"
	StatusRevoked    CertStatus = "revoked"
	StatusOnHold     CertStatus = "on-hold"
	StatusSuperseded CertStatus = "superseded" // renewed or extended; still valid until revoked or expired
)

// Certificate is an issued certificate and its lifecycle state.
type Certificate struct {
	Serial    []byte     `json:"serial"`
	DER       []byte     `json:"der"`
	Profile   string     `json:"profile"`
	Subject   string     `json:"subject"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	Issuer    string     `json:"issuer"` // issuing key ID (hex of its SKI)
	RequestID string     `json:"request_id"`
	Status    CertStatus `json:"status"`
	// RevokedAt and Reason (an RFC 5280 CRLReason) are set while the
	// certificate is revoked or on hold.
	RevokedAt    time.Time         `json:"revoked_at,omitzero"`
	Reason       revocation.Reason `json:"reason,omitempty"`
	Replaces     []byte            `json:"replaces,omitempty"`
	SupersededBy []byte            `json:"superseded_by,omitempty"`
	// Superseding is the id of the renewal or extension being signed to
	// replace this certificate: claimed in the transaction that reserves
	// its serial, so no other request can claim it meanwhile, and cleared
	// when that request is recorded or fails.
	Superseding string `json:"superseding,omitempty"`
}

// Listed reports whether the certificate belongs on its issuer's CRL.
func (c *Certificate) Listed() bool {
	return c.Status == StatusRevoked || c.Status == StatusOnHold
}

// Certificate returns the certificate with this serial.
func (t *Tx) Certificate(serial []byte) (*Certificate, error) {
	return get[Certificate](t, tableCerts, serial, fmt.Sprintf("certificate %x", serial))
}

// PutCertificate records c. A certificate's DER never changes once
// written; its state may.
func (t *Tx) PutCertificate(c *Certificate) error {
	if len(c.Serial) == 0 || len(c.DER) == 0 || c.Issuer == "" {
		return fmt.Errorf("certificate %x: serial, DER and issuer are required", c.Serial)
	}
	old, err := t.r.get(tableCerts, c.Serial)
	if err != nil {
		return fmt.Errorf("certificate %x: %w", c.Serial, err)
	}
	var prev *Certificate
	if old != nil {
		prev = new(Certificate)
		if err := json.Unmarshal(old, prev); err != nil {
			return fmt.Errorf("certificate %x: decode: %w", c.Serial, err)
		}
		if !bytes.Equal(prev.DER, c.DER) {
			return fmt.Errorf("certificate %x: %w", c.Serial, ErrImmutable)
		}
	} else if err := t.indexKey(c); err != nil {
		return err
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := t.r.put(tableCerts, c.Serial, raw); err != nil {
		return err
	}
	if listingChanged(prev, c) {
		if err := t.appendCRLChange(c); err != nil {
			return err
		}
	}
	key := revokedKey(c.Issuer, c.Serial)
	if c.Listed() {
		return t.r.put(tableRevoked, key, revokedValue(c))
	}
	return t.r.delete(tableRevoked, key)
}

// RevokedEntry is what a CRL lists of a certificate.
type RevokedEntry struct {
	Serial    []byte
	RevokedAt time.Time
	Reason    revocation.Reason
	NotAfter  time.Time // expired certificates leave the CRL
}

// Revoked calls fn for each certificate of issuer that is revoked or on
// hold, in serial order. The revocation index holds each entry's time and
// reason, so a CRL of many entries is built without reading the
// certificates (an index entry written without them is read from its
// certificate).
func (t *Tx) Revoked(issuer string, fn func(RevokedEntry) error) error {
	return t.revoked(revokedKey(issuer, nil), fn)
}

// AllRevoked calls fn for each certificate of every issuer that is revoked
// or on hold.
func (t *Tx) AllRevoked(fn func(RevokedEntry) error) error {
	return t.revoked(nil, fn)
}

func (t *Tx) revoked(prefix []byte, fn func(RevokedEntry) error) error {
	return t.r.scan(tableRevoked, nil, prefix, func(k, v []byte) error {
		e, err := t.revokedEntry(k, v)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

// RevokedRange calls fn for each certificate of issuer that is revoked or
// on hold and whose serial is at or after lo and before hi (bytewise; hi
// empty: to the last), in serial order, as Revoked does: one CRL shard's
// entries, read as they are scanned, not gathered first.
func (t *Tx) RevokedRange(issuer string, lo, hi []byte, fn func(RevokedEntry) error) error {
	end := prefixEnd(revokedKey(issuer, nil))
	if len(hi) > 0 {
		end = revokedKey(issuer, hi)
	}
	return t.r.scanRange(tableRevoked, revokedKey(issuer, lo), end, func(k, v []byte) error {
		e, err := t.revokedEntry(k, v)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

// RevokedEntryOf returns the revoked index's entry for serial of issuer;
// false if the certificate is not listed.
func (t *Tx) RevokedEntryOf(issuer string, serial []byte) (RevokedEntry, bool, error) {
	k := revokedKey(issuer, serial)
	v, err := t.r.get(tableRevoked, k)
	if err != nil || v == nil {
		if err != nil {
			err = fmt.Errorf("revoked entry of certificate %x: %w", serial, err)
		}
		return RevokedEntry{}, false, err
	}
	e, err := t.revokedEntry(k, v)
	return e, err == nil, err
}

// revokedEntry decodes the revoked index's record under k.
func (t *Tx) revokedEntry(k, v []byte) (RevokedEntry, error) {
	e := RevokedEntry{Serial: k[bytes.IndexByte(k, 0)+1:]}
	if len(v) == revokedValueSize {
		e.RevokedAt = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
		e.NotAfter = time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))).UTC()
		e.Reason = revocation.Reason(v[16])
		return e, nil
	}
	c, err := t.Certificate(e.Serial)
	if err != nil {
		return e, err
	}
	e.RevokedAt, e.Reason, e.NotAfter = c.RevokedAt, c.Reason, c.NotAfter
	return e, nil
}

// revokedValue is an index entry's value: the revocation time and the
// certificate's notAfter in Unix nanoseconds (big-endian), and the reason
// code.
func revokedValue(c *Certificate) []byte {
	v := make([]byte, 0, revokedValueSize)
	v = binary.BigEndian.AppendUint64(v, uint64(c.RevokedAt.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, uint64(c.NotAfter.UnixNano()))
	return append(v, byte(c.Reason))
}

const revokedValueSize = 17

// Certificates calls fn for every certificate, in serial order.
func (t *Tx) Certificates(fn func(*Certificate) error) error {
	return t.r.scan(tableCerts, nil, nil, func(k, v []byte) error {
		c := new(Certificate)
		if err := json.Unmarshal(v, c); err != nil {
			return fmt.Errorf("certificate %x: decode: %w", k, err)
		}
		return fn(c)
	})
}

// CertificatesAfter calls fn for up to limit certificates whose serial
// sorts after after (nil: from the first), in serial order: a walk of
// every certificate in bounded transactions.
func (t *Tx) CertificatesAfter(after []byte, limit int, fn func(*Certificate) error) error {
	var from []byte
	if after != nil {
		from = append(bytes.Clone(after), 0)
	}
	n := 0
	err := t.r.scan(tableCerts, from, nil, func(k, v []byte) error {
		if n == limit {
			return errStopScan
		}
		n++
		c := new(Certificate)
		if err := json.Unmarshal(v, c); err != nil {
			return fmt.Errorf("certificate %x: decode: %w", k, err)
		}
		return fn(c)
	})
	if errors.Is(err, errStopScan) {
		return nil
	}
	return err
}

func revokedKey(issuer string, serial []byte) []byte {
	return append(append([]byte(issuer), 0), serial...)
}

// SerialState is what became of a serial number.
type SerialState string

const (
	SerialReserved SerialState = "reserved" // recorded before signing
	SerialIssued   SerialState = "issued"
	SerialBurned   SerialState = "burned" // signing did not finish; never used again
)

// Serial is the record of one serial number.
type Serial struct {
	RequestID string      `json:"request_id"`
	State     SerialState `json:"state"`
}

// ReserveSerial records serial as taken by requestID. A serial that was
// ever reserved, whatever became of it, gives ErrSerialUsed.
func (t *Tx) ReserveSerial(serial []byte, requestID string) error {
	old, err := t.r.get(tableSerials, serial)
	if err != nil {
		return fmt.Errorf("serial %x: %w", serial, err)
	}
	if old != nil {
		return fmt.Errorf("serial %x: %w", serial, ErrSerialUsed)
	}
	return t.putSerial(serial, Serial{RequestID: requestID, State: SerialReserved})
}

// SetSerialState moves a reserved serial to issued or burned.
func (t *Tx) SetSerialState(serial []byte, state SerialState) error {
	s, err := t.Serial(serial)
	if err != nil {
		return err
	}
	if s.State != SerialReserved {
		return fmt.Errorf("serial %x is %s, not reserved", serial, s.State)
	}
	s.State = state
	return t.putSerial(serial, *s)
}

// Serial returns the record of a serial number.
func (t *Tx) Serial(serial []byte) (*Serial, error) {
	return get[Serial](t, tableSerials, serial, fmt.Sprintf("serial %x", serial))
}

// Serials calls fn for every serial ever reserved.
func (t *Tx) Serials(fn func(serial []byte, s Serial) error) error {
	return t.r.scan(tableSerials, nil, nil, func(k, v []byte) error {
		var s Serial
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("serial %x: decode: %w", k, err)
		}
		return fn(k, s)
	})
}

func (t *Tx) putSerial(serial []byte, s Serial) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return t.r.put(tableSerials, serial, raw)
}

// HexSerial formats a serial the way logs, audit events and the API show it.
func HexSerial(serial []byte) string { return hex.EncodeToString(serial) }
