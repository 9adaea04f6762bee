package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"signerd/api"
	"signerd/store"
)

// StoreStatus is whether the store takes writes: as the last write
// found, or stalled now.
type StoreStatus struct {
	Writable bool
	// Stalled: writes are waiting and none has completed for
	// Config.WriteStallAfter (the disk, or whatever holds the store, does
	// not answer). Writable is then false.
	Stalled bool
	// Since is when writes last started failing or working again, or,
	// while stalled, when the last write completed (or the first of those
	// waiting began).
	Since time.Time
	// Error is what the last failed write said, while failing, or how
	// long writes have stalled.
	Error string
}

// DefaultWriteStallAfter is Config.WriteStallAfter's default: far longer
// than a batch's commit on a working disk, well within a systemd
// watchdog interval.
const DefaultWriteStallAfter = 10 * time.Second

// storeHealth follows the outcome of the engine's writes. Any failed
// write marks the store failing; only a recorded batch marks it writable
// again, since on a nearly full disk small writes (an audit event) may
// still succeed while certificates cannot be recorded. A change is
// logged; it cannot be audited, the audit log being in the store.
//
// It also follows the writes in progress, so that a store whose writes
// hang (a frozen or dying disk, a reader holding bbolt's memory map)
// is told apart from a slow one without waiting on the store: a stall is
// writes waiting with none completed for WriteStallAfter. Its end is
// logged and audited ("store.stalled") by the write that ends it.
type storeHealth struct {
	mu     sync.Mutex
	status StoreStatus
	// timedOut: the last failure was a write that ran out of time (a
	// database blocked, by a lock or a load), which an empty probe does
	// not prove over: only a recorded batch ends it.
	timedOut bool
	// stranded are requests left "signing" by a batch whose result could
	// not be written, nor their serials burned; the next batch burns them,
	// so their RAs can retry without a restart.
	stranded []*store.Request
	// writing counts the writes begun and not returned; progress is when
	// one last returned, or when the first of those now writing began.
	// Both are on the monotonic clock, so a clock step is no stall.
	writing  int
	progress time.Time
	// stallLogged: the stall now in progress has been logged.
	stallLogged bool
}

// Store returns the store's status. It never waits on the store.
func (e *Engine) Store() StoreStatus {
	h := &e.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing == 0 {
		return h.status
	}
	stalled := time.Since(h.progress)
	if stalled < e.cfg.WriteStallAfter {
		return h.status
	}
	why := fmt.Sprintf("writes stalled: none has completed for %s, %d waiting", stalled.Round(time.Second), h.writing)
	if !h.stallLogged {
		h.stallLogged = true
		e.log.Error("store writes stalled", "since", h.progress.UTC(), "waiting", h.writing)
	}
	return StoreStatus{Stalled: true, Since: h.progress.UTC(), Error: why}
}

// update runs fn in a write transaction and notes a failure to write it.
// Requests that fail because of one are answered store_unavailable. Every
// write the engine makes goes through update, which also times it for
// Store.
func (e *Engine) update(fn func(*store.Tx) error) error {
	return e.write(fn, true)
}

// write is update; a write that ends a stall audits the stall if
// auditStall (not the stall's own event, which could otherwise report
// itself).
func (e *Engine) write(fn func(*store.Tx) error, auditStall bool) error {
	e.beginWrite()
	err := e.store.Update(fn)
	from, to, waiting, stalled := e.endWrite()
	if storeFailed(err) {
		e.noteStore(err)
	}
	if stalled {
		e.stallEnded(from, to, waiting, err, auditStall)
	}
	return err
}

func (e *Engine) beginWrite() {
	h := &e.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing == 0 {
		h.progress = time.Now()
	}
	h.writing++
}

// endWrite notes a write returned. It reports a stall this ends: from when
// no write had completed, with how many were waiting.
func (e *Engine) endWrite() (from, to time.Time, waiting int, stalled bool) {
	h := &e.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	from, to, waiting = h.progress, time.Now(), h.writing
	h.writing--
	h.progress = to
	h.stallLogged = false
	return from, to, waiting, to.Sub(from) >= e.cfg.WriteStallAfter
}

// stallEnded logs and audits a stall that is over: ended by the write
// that returned with err.
func (e *Engine) stallEnded(from, to time.Time, waiting int, err error, audit bool) {
	took := to.Sub(from).Round(time.Millisecond)
	if err != nil {
		e.log.Warn("a stalled store write ended, failed", "stalled_for", took.String(), "since", from.UTC(), "waiting", waiting, "err", err)
	} else {
		e.log.Warn("store writes completed again", "stalled_for", took.String(), "since", from.UTC(), "waiting", waiting)
	}
	if !audit {
		return
	}
	ev := store.Event{Actor: store.System, Action: "store.stalled", Outcome: store.OutcomeFailed,
		Reason: fmt.Sprintf("no store write completed for %s", took),
		Detail: fmt.Sprintf("from %s to %s; writes waiting: %d", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano), waiting)}
	if err := e.write(func(tx *store.Tx) error {
		_, err := tx.Append(ev)
		return err
	}, false); err != nil {
		e.log.Error("audit a store stall", "err", err)
	}
}

func (e *Engine) noteStore(err error) {
	h := &e.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	now := e.cfg.Now().UTC()
	if err != nil {
		h.timedOut = errors.Is(err, context.DeadlineExceeded)
	}
	switch {
	case err != nil && h.status.Writable:
		e.log.Error("store not writable", "err", err)
		h.status = StoreStatus{Since: now, Error: err.Error()}
	case err != nil:
		h.status.Error = err.Error()
	case !h.status.Writable:
		e.log.Info("store writable again", "failing_for", now.Sub(h.status.Since).Round(time.Millisecond).String())
		h.status = StoreStatus{Writable: true, Since: now}
	}
}

// view runs fn in a read transaction and notes a store that cannot be
// reached.
func (e *Engine) view(fn func(*store.Tx) error) error {
	err := e.store.View(fn)
	if errors.Is(err, store.ErrUnavailable) {
		e.noteStore(err)
	}
	return err
}

// storeFailed reports whether err is the store's failure (a write not
// taken, a database not reached) rather than the request's.
func storeFailed(err error) bool {
	return errors.Is(err, store.ErrWrite) || errors.Is(err, store.ErrUnavailable)
}

// storeCode is the code for a failed store operation.
func storeCode(err error) api.Code {
	if storeFailed(err) {
		return api.CodeStoreUnavailable
	}
	return api.CodeInternal
}

// storeProbeInterval is how often a database store that failed is tried
// again while nothing else writes to it.
const storeProbeInterval = 2 * time.Second

// watchStore follows a database store (not the embedded file) while
// signerd runs: once writes fail, it probes the database every
// storeProbeInterval, so health says writable again as soon as the
// database takes writes, with no request needed to find out, and the
// serials of requests stranded meanwhile are burned then.
func (e *Engine) watchStore(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(storeProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if e.Store().Writable {
			continue
		}
		e.beginWrite()
		err := e.store.Probe()
		e.endWrite()
		if err == nil && e.storeTimedOut() {
			continue
		}
		e.noteStore(err)
		if err == nil {
			e.burnStranded()
		}
	}
}

// storeTimedOut reports whether the store's last failure was a write
// that ran out of time.
func (e *Engine) storeTimedOut() bool {
	e.storeHealth.mu.Lock()
	defer e.storeHealth.mu.Unlock()
	return e.storeHealth.timedOut
}

// strand remembers requests whose serials could not be burned.
func (e *Engine) strand(rs []*store.Request) {
	e.storeHealth.mu.Lock()
	defer e.storeHealth.mu.Unlock()
	e.storeHealth.stranded = append(e.storeHealth.stranded, rs...)
}

// burnStranded burns the serials of stranded requests still signing with
// the serial they were stranded with.
func (e *Engine) burnStranded() {
	e.storeHealth.mu.Lock()
	rs := e.storeHealth.stranded
	e.storeHealth.stranded = nil
	e.storeHealth.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	err := e.update(func(tx *store.Tx) error {
		for _, s := range rs {
			r, err := tx.Request(s.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue // its reservation was never recorded
			}
			if err != nil {
				return err
			}
			if r.State == store.RequestSigning && bytes.Equal(r.Serial, s.Serial) {
				if err := e.burn(tx, r, store.System, "result could not be recorded; serial burned, retry the request"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNodeTakenOver), errors.Is(err, store.ErrLogBehind):
		// This process writes nothing more, ever. The requests stay
		// signing under its node, and the next process to start as the
		// node (or this one restarted) burns them at start-up.
		e.log.Error("serials of stranded requests left to the next start: this process writes no more", "requests", len(rs), "err", err)
	case err != nil:
		e.log.Error("burn serials of stranded requests; will try again", "err", err)
		e.strand(rs)
	}
}
