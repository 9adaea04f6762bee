package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"signerd/engine/audit"
	"signerd/hsm"
	"signerd/store"
)

// Export is what an audit export wrote.
type Export struct {
	First, Last uint64
	Bytes       int64
	SM3         []byte // of the bundle as written
}

// ExportAudit writes a bundle (package audit) of the audit log to w. It
// seals the log first, so the bundle ends on a seal that vouches for
// everything up to the export. The bundle covers the events from since to
// until (zero: no bound), reaching back to the seal before since and on to
// the first seal after until, so both ends are signed. The export is
// itself audited, with the bundle's SM3 hash.
func (e *Engine) ExportAudit(ctx context.Context, actor store.Actor, since, until time.Time, w io.Writer) (Export, error) {
	var x Export
	if e.auditKey == nil {
		return x, errorf(CodeInternal, "no audit key: the log cannot be sealed for export")
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		err := errorf(CodeBadRequest, "until %s is before since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
		e.auditExport(actor, x, store.OutcomeRefused, err.Error())
		return x, err
	}
	exportSeal, err := e.seal(ctx, fmt.Sprintf("audit export for uid %d", actor.UID), true)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(CodeInternal, "%v", err)
	}
	// No read transaction is held while the bundle is written: a client
	// that reads slowly, or not at all, must not hold back the store's
	// writer (bbolt cannot grow its memory map under an open reader).
	// The events are read in short transactions of their own; the log is
	// append-only, so the events up to the export's seal read that way
	// are those one snapshot would hold.
	hdr, err := e.exportRange(since, until, exportSeal)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(CodeInternal, "audit export: %v", err)
	}
	hdr.ExportedAt, hdr.ExportedBy = e.cfg.Now().UTC(), actor
	if !since.IsZero() {
		hdr.Since = &since
	}
	if !until.IsZero() {
		hdr.Until = &until
	}
	x.First, x.Last = hdr.First, hdr.Last
	h := sm3.New()
	n := &countingWriter{w: io.MultiWriter(w, h)}
	bw, err := audit.NewWriter(n, hdr, hsm.KeyID(e.auditPub), func(msg []byte) ([]byte, error) {
		return e.auditKey.SignDigest(ctx, e.auditKey.Digest(msg))
	})
	if err == nil {
		err = e.eachEvent(hdr.First, hdr.Last, func(_ store.Event, stored []byte) error { return bw.Event(stored) })
	}
	x.Bytes, x.SM3 = n.n, h.Sum(nil)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(CodeInternal, "audit export: %v", err)
	}
	e.auditExport(actor, x, store.OutcomeOK, "")
	return x, nil
}

// Bounds on what one read transaction of eachEvent copies: it holds the
// store's memory map for no longer than copying this much takes, and an
// export a client stopped reading holds no more than this in memory.
const (
	eventChunkEvents = 64
	eventChunkBytes  = 256 << 10
)

// eachEvent calls fn with each audit event stored from seq from through
// seq through, with a copy of its stored bytes. The events are read in
// chunks, each in a short read transaction of its own, and fn runs
// outside any transaction, so fn may take as long as it likes (write to
// a client) without holding back the store's writer. The log being
// append-only, the events read are those of one snapshot taken when
// through was the head or later. Events are taken by the sequence number
// they are stored under, whatever an edited one says, so that an edited
// log is exported as it is, for its verification to find the edit.
func (e *Engine) eachEvent(from, through uint64, fn func(ev store.Event, stored []byte) error) error {
	type storedEvent struct {
		ev     store.Event
		stored []byte
	}
	for next := from; next <= through; {
		var chunk []storedEvent
		size := 0
		err := e.view(func(tx *store.Tx) error {
			return tx.EventsAt(next, func(at uint64, ev store.Event, stored []byte) error {
				if at > through || len(chunk) == eventChunkEvents || (len(chunk) > 0 && size+len(stored) > eventChunkBytes) {
					return errStop
				}
				chunk = append(chunk, storedEvent{ev, bytes.Clone(stored)})
				size += len(stored)
				next = at + 1
				return nil
			})
		})
		if err != nil && err != errStop {
			return err
		}
		if len(chunk) == 0 {
			return fmt.Errorf("audit log: no event %d (the log ends before event %d)", next, through)
		}
		for _, c := range chunk {
			if err := fn(c.ev, c.stored); err != nil {
				return err
			}
		}
	}
	return nil
}

var errStop = errors.New("stop")

// exportRange finds the bundle's ends and the audit keys whose seals lie
// between them: from the last seal before the first event at or after
// since (or the log's first event) to the first seal after until (or the
// export's own seal, exportSeal).
func (e *Engine) exportRange(since, until time.Time, exportSeal uint64) (audit.Header, error) {
	var h audit.Header
	first, last, lastSeal := uint64(0), uint64(0), uint64(1)
	keyIDs := map[string][]byte{}
	err := e.eachEvent(1, exportSeal, func(ev store.Event, stored []byte) error {
		if first == 0 {
			if !since.IsZero() && ev.Time.Before(since) && ev.Seq < exportSeal {
				if ev.Seal != nil {
					lastSeal = ev.Seq
					clear(keyIDs)
					keyIDs[hex.EncodeToString(ev.Seal.KeyID)] = ev.Seal.KeyID
				}
				return nil
			}
			first = lastSeal
		}
		if ev.Seal != nil {
			keyIDs[hex.EncodeToString(ev.Seal.KeyID)] = ev.Seal.KeyID
			if ev.Seq == exportSeal || (!until.IsZero() && ev.Time.After(until)) {
				last, h.Head = ev.Seq, store.ChainHash(stored)
				return errStop
			}
		}
		return nil
	})
	if err != nil && err != errStop {
		return h, err
	}
	if last == 0 {
		return h, fmt.Errorf("the export's seal, event %d, was not found", exportSeal)
	}
	h.First, h.Last = first, last
	err = e.view(func(tx *store.Tx) error {
		for _, name := range slices.Sorted(maps.Keys(keyIDs)) {
			k, err := e.auditKeyCertificate(tx, keyIDs[name])
			if err != nil {
				return err
			}
			h.Keys = append(h.Keys, k)
		}
		return nil
	})
	return h, err
}

// auditExport records an export and how it went.
func (e *Engine) auditExport(actor store.Actor, x Export, outcome, reason string) {
	ev := store.Event{Actor: actor, Action: "audit.export", Outcome: outcome, Reason: reason}
	if x.Last != 0 {
		ev.Object = fmt.Sprintf("events %d-%d", x.First, x.Last)
		ev.Detail = fmt.Sprintf("bundle of %d bytes, SM3 %x", x.Bytes, x.SM3)
	}
	if err := e.Audit(ev); err != nil {
		e.log.Error("audit an audit export", "err", err)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
