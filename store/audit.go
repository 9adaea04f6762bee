package store

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
)

// Actor is who caused an audit event: a socket peer (uid, gid, pid and the
// role they were mapped to), a ceremony operator, or signerd itself.
type Actor struct {
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	PID      int    `json:"pid,omitempty"`
	Role     string `json:"role"`
	Operator string `json:"operator,omitempty"`
	// Evidence is what the actor presented as proof of who asked (a
	// signed RA request), kept with every event it caused.
	Evidence []byte `json:"evidence,omitempty"`
}

// System is the actor for what signerd does on its own (start-up
// recovery, a clock alarm).
var System = Actor{UID: -1, GID: -1, Role: "system"}

// Outcomes of an audited action.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
	OutcomeFailed  = "failed"
)

// Event is one audit log entry (SPEC §7.1). Prev is the SM3 hash of the
// previous event exactly as stored, so editing, removing, inserting or
// reordering events breaks the chain.
type Event struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   Actor     `json:"actor"`
	Action  string    `json:"action"`
	Object  string    `json:"object,omitempty"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	// Detail is a longer account, such as a ceremony's transcript.
	Detail string `json:"detail,omitempty"`
	// Seal, on an "audit.seal" event, signs the event's own Seq and Prev,
	// so it vouches for every event before it (SPEC §7.2).
	Seal *Seal  `json:"seal,omitempty"`
	Prev []byte `json:"prev"`
}

// Seal is an SM2 signature by the audit key over SealMessage(Seq, Prev)
// of the event that carries it.
type Seal struct {
	KeyID     []byte `json:"key_id"` // the audit key's CKA_ID / SKI
	Signature []byte `json:"signature"`
}

// SealMessage is what a seal signs: the sealing event's position and the
// hash of the event before it.
func SealMessage(seq uint64, prev []byte) []byte {
	return fmt.Appendf(nil, "signerd-audit-seal-v1\n%d\n%x\n", seq, prev)
}

// VerifySeal checks e's seal against the audit key pub (SM2, default ID).
func VerifySeal(pub *ecdsa.PublicKey, e Event) error {
	if e.Seal == nil {
		return fmt.Errorf("audit event %d: not a seal", e.Seq)
	}
	if !sm2.VerifyASN1WithSM2(pub, nil, SealMessage(e.Seq, e.Prev), e.Seal.Signature) {
		return fmt.Errorf("audit event %d: seal signature does not verify under the audit key", e.Seq)
	}
	return nil
}

// ChainHash is the hash of a stored event, the next event's Prev.
func ChainHash(stored []byte) []byte {
	h := sm3.Sum(stored)
	return h[:]
}

// genesis is Prev of the first event.
var genesis = make([]byte, sm3.Size)

// Genesis is Prev of the log's first event: 32 zero bytes.
func Genesis() []byte { return bytes.Clone(genesis) }

// AuditHead is the last event's sequence number and chain hash (the next
// event's Prev); zero and the genesis hash for an empty log.
func (t *Tx) AuditHead() (uint64, []byte, error) {
	h, err := t.auditHead()
	return h.Seq, h.Hash, err
}

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
}

func (t *Tx) auditHead() (auditHead, error) {
	raw, err := t.r.get(tableMeta, t.chain.metaKey(keyAuditHead))
	if err != nil {
		return auditHead{}, fmt.Errorf("audit head: %w", err)
	}
	if raw == nil {
		return auditHead{Hash: genesis}, nil
	}
	var h auditHead
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("audit head: %w", err)
	}
	return h, nil
}

// Append adds e at the end of the audit log, filling in Seq, Prev and (if
// zero) Time, and returns the stored event.
func (t *Tx) Append(e Event) (Event, error) {
	if t.foreign {
		return e, fmt.Errorf("audit event: %s is another node's; a node appends to its own", t.chain)
	}
	head, err := t.auditHead()
	if err != nil {
		return e, err
	}
	e.Seq = head.Seq + 1
	e.Prev = head.Hash
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	raw, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("audit event %d: %w", e.Seq, err)
	}
	if err := t.r.put(tableAudit, t.chain.eventKey(e.Seq), raw); err != nil {
		return e, err
	}
	if e.Seal != nil {
		if err := t.r.put(tableMeta, t.chain.metaKey(keyAuditLastSeal), seqKey(e.Seq)); err != nil {
			return e, err
		}
	}
	headRaw, _ := json.Marshal(auditHead{Seq: e.Seq, Hash: ChainHash(raw)})
	return e, t.r.put(tableMeta, t.chain.metaKey(keyAuditHead), headRaw)
}

// LastSeal returns the most recent seal event, or nil if there is none.
func (t *Tx) LastSeal() (*Event, error) {
	k, err := t.r.get(tableMeta, t.chain.metaKey(keyAuditLastSeal))
	if err != nil || k == nil {
		return nil, err
	}
	if len(k) != 8 {
		return nil, fmt.Errorf("audit log: the last seal's position %x is malformed", k)
	}
	raw, err := t.r.get(tableAudit, t.chain.eventKey(binary.BigEndian.Uint64(k)))
	if err != nil {
		return nil, fmt.Errorf("audit log: the last seal, event %d: %w", binary.BigEndian.Uint64(k), err)
	}
	if raw == nil {
		return nil, fmt.Errorf("audit log: the last seal, event %d, is missing", binary.BigEndian.Uint64(k))
	}
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("audit event %d: decode: %w", binary.BigEndian.Uint64(k), err)
	}
	if e.Seal == nil {
		return nil, fmt.Errorf("audit event %d: recorded as the last seal but carries none", e.Seq)
	}
	return &e, nil
}

// Events calls fn with each event from seq from on, with the bytes it is
// stored as (what the chain hashes).
func (t *Tx) Events(from uint64, fn func(e Event, stored []byte) error) error {
	return t.EventsAt(from, func(_ uint64, e Event, stored []byte) error { return fn(e, stored) })
}

// EventsAt is Events, also giving the sequence number each event is
// stored under, which an edited event need not carry.
func (t *Tx) EventsAt(from uint64, fn func(at uint64, e Event, stored []byte) error) error {
	return t.r.scan(tableAudit, t.chain.eventKey(from), t.chain.eventPrefix(), func(k, v []byte) error {
		at, ok := t.chain.seqOf(k)
		if !ok {
			return fmt.Errorf("audit log: malformed key %x", k)
		}
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("audit event %d: decode: %w", at, err)
		}
		return fn(at, e, v)
	})
}

// VerifyAuditChain walks the whole log and reports the first event whose
// sequence number or link to its predecessor is wrong, or a head that does
// not match the last event.
func (t *Tx) VerifyAuditChain() error { return t.VerifyAuditChainFrom(1, genesis) }

// VerifyAuditChainFrom is VerifyAuditChain from event from on, which must
// link to prev (the hash a seal vouches for).
func (t *Tx) VerifyAuditChainFrom(from uint64, prev []byte) error {
	want := from
	err := t.Events(from, func(e Event, stored []byte) error {
		if e.Seq != want {
			return &chainError{want, fmt.Errorf("audit event %d: found where %d belongs", e.Seq, want)}
		}
		if !bytes.Equal(e.Prev, prev) {
			return &chainError{want, fmt.Errorf("audit event %d: does not chain to event %d", e.Seq, e.Seq-1)}
		}
		prev = ChainHash(stored)
		want++
		return nil
	})
	if err != nil {
		return err
	}
	head, err := t.auditHead()
	if err != nil {
		return err
	}
	switch {
	case head.Seq != want-1:
		return &chainError{want - 1, fmt.Errorf("audit log ends at event %d but its head names event %d (events removed from the end?)", want-1, head.Seq)}
	case !bytes.Equal(head.Hash, prev):
		return &chainError{head.Seq, fmt.Errorf("audit event %d: stored bytes differ from those the log's head recorded (edited?)", head.Seq)}
	}
	return nil
}

// chainError is a break in the chain and the sequence number of the
// event where it shows.
type chainError struct {
	seq uint64
	err error
}

func (e *chainError) Error() string { return e.err.Error() }
func (e *chainError) Unwrap() error { return e.err }

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// BoundedText is s cut to at most max bytes on a character boundary (and
// marked so), with control and bidirectional formatting characters
// replaced, so that a listing of the log shows what was stored. Audit fields
// that carry what a client sent go through it.
func BoundedText(s string, max int) string {
	cut := len(s) > max
	if cut {
		n := max
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
	if cut {
		s += "…"
	}
	return s
}
