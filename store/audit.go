package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

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
	Prev   []byte `json:"prev"`
}

// ChainHash is the hash of a stored event, the next event's Prev.
func ChainHash(stored []byte) []byte {
	h := sm3.Sum(stored)
	return h[:]
}

// genesis is Prev of the first event.
var genesis = make([]byte, sm3.Size)

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
}

func (t *Tx) auditHead() (auditHead, error) {
	raw := t.bucket(bucketMeta).Get(keyAuditHead)
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
	if err := t.bucket(bucketAudit).Put(seqKey(e.Seq), raw); err != nil {
		return e, err
	}
	headRaw, _ := json.Marshal(auditHead{Seq: e.Seq, Hash: ChainHash(raw)})
	return e, t.bucket(bucketMeta).Put(keyAuditHead, headRaw)
}

// Events calls fn with each event from seq from on, with the bytes it is
// stored as (what the chain hashes).
func (t *Tx) Events(from uint64, fn func(e Event, stored []byte) error) error {
	cur := t.bucket(bucketAudit).Cursor()
	for k, v := cur.Seek(seqKey(from)); k != nil; k, v = cur.Next() {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("audit event %d: decode: %w", binary.BigEndian.Uint64(k), err)
		}
		if err := fn(e, v); err != nil {
			return err
		}
	}
	return nil
}

// VerifyAuditChain walks the whole log and reports the first event whose
// sequence number or link to its predecessor is wrong, or a head that does
// not match the last event.
func (t *Tx) VerifyAuditChain() error {
	want := uint64(1)
	prev := genesis
	err := t.Events(1, func(e Event, stored []byte) error {
		if e.Seq != want {
			return fmt.Errorf("audit event %d: found where %d belongs", e.Seq, want)
		}
		if !bytes.Equal(e.Prev, prev) {
			return fmt.Errorf("audit event %d: does not chain to event %d", e.Seq, e.Seq-1)
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
	if head.Seq != want-1 || !bytes.Equal(head.Hash, prev) {
		return fmt.Errorf("audit log ends at event %d but its head names event %d", want-1, head.Seq)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}
