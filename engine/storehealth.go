package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// storeHealth is the engine's way to the store: every write and read the
// engine makes goes through it (update, view), and it follows their
// outcome. Any failed
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
	store      *store.Store
	log        *slog.Logger
	now        func() time.Time
	stallAfter time.Duration // Config.WriteStallAfter

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

	// watchStop and watchDone stop watch (a database store only).
	watchStop, watchDone chan struct{}
}

func newStoreHealth(st *store.Store, log *slog.Logger, now func() time.Time, stallAfter time.Duration) *storeHealth {
	return &storeHealth{store: st, log: log, now: now, stallAfter: stallAfter, status: StoreStatus{Writable: true}}
}

// Store returns the store's status. It never waits on the store.
func (e *Engine) Store() StoreStatus { return e.storeHealth.Status() }

// Status is the store's status. It never waits on the store.
func (h *storeHealth) Status() StoreStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing == 0 {
		return h.status
	}
	stalled := time.Since(h.progress)
	if stalled < h.stallAfter {
		return h.status
	}
	why := fmt.Sprintf("writes stalled: none has completed for %s, %d waiting", stalled.Round(time.Second), h.writing)
	if !h.stallLogged {
		h.stallLogged = true
		h.log.Error("store writes stalled", "since", h.progress.UTC(), "waiting", h.writing)
	}
	return StoreStatus{Stalled: true, Since: h.progress.UTC(), Error: why}
}

// update is storeHealth.update: the engine's writes.
func (e *Engine) update(fn func(*store.Tx) error) error { return e.storeHealth.update(fn) }

// view is storeHealth.view: the engine's reads.
func (e *Engine) view(fn func(*store.Tx) error) error { return e.storeHealth.view(fn) }

// update runs fn in a write transaction and notes a failure to write it.
// Requests that fail because of one are answered store_unavailable. Every
// write the engine makes goes through update, which also times it for
// Status.
func (h *storeHealth) update(fn func(*store.Tx) error) error {
	return h.write(fn, true)
}

// appendEvent writes ev to the audit log in a transaction of its own.
func (h *storeHealth) appendEvent(ev store.Event) error {
	return h.update(func(tx *store.Tx) error {
		_, err := tx.Append(ev)
		return err
	})
}

// write is update; a write that ends a stall audits the stall if
// auditStall (not the stall's own event, which could otherwise report
// itself).
func (h *storeHealth) write(fn func(*store.Tx) error, auditStall bool) error {
	h.beginWrite()
	err := h.store.Update(fn)
	from, to, waiting, stalled := h.endWrite()
	if storeFailed(err) {
		h.note(err)
	}
	if stalled {
		h.stallEnded(from, to, waiting, err, auditStall)
	}
	return err
}

func (h *storeHealth) beginWrite() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writing == 0 {
		h.progress = time.Now()
	}
	h.writing++
}

// endWrite notes a write returned. It reports a stall this ends: from when
// no write had completed, with how many were waiting.
func (h *storeHealth) endWrite() (from, to time.Time, waiting int, stalled bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	from, to, waiting = h.progress, time.Now(), h.writing
	h.writing--
	h.progress = to
	h.stallLogged = false
	return from, to, waiting, to.Sub(from) >= h.stallAfter
}

// stallEnded logs and audits a stall that is over: ended by the write
// that returned with err.
func (h *storeHealth) stallEnded(from, to time.Time, waiting int, err error, audit bool) {
	took := to.Sub(from).Round(time.Millisecond)
	if err != nil {
		h.log.Warn("a stalled store write ended, failed", "stalled_for", took.String(), "since", from.UTC(), "waiting", waiting, "err", err)
	} else {
		h.log.Warn("store writes completed again", "stalled_for", took.String(), "since", from.UTC(), "waiting", waiting)
	}
	if !audit {
		return
	}
	ev := store.Event{Actor: store.System, Action: "store.stalled", Outcome: store.OutcomeFailed,
		Reason: fmt.Sprintf("no store write completed for %s", took),
		Detail: fmt.Sprintf("from %s to %s; writes waiting: %d", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano), waiting)}
	if err := h.write(func(tx *store.Tx) error {
		_, err := tx.Append(ev)
		return err
	}, false); err != nil {
		h.log.Error("audit a store stall", "err", err)
	}
}

// note records the outcome of a write: a failure marks the store failing;
// a success (nil: a recorded batch, a probe) marks it writable again.
func (h *storeHealth) note(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now().UTC()
	if err != nil {
		h.timedOut = errors.Is(err, context.DeadlineExceeded)
	}
	switch {
	case err != nil && h.status.Writable:
		h.log.Error("store not writable", "err", err)
		h.status = StoreStatus{Since: now, Error: err.Error()}
	case err != nil:
		h.status.Error = err.Error()
	case !h.status.Writable:
		h.log.Info("store writable again", "failing_for", now.Sub(h.status.Since).Round(time.Millisecond).String())
		h.status = StoreStatus{Writable: true, Since: now}
	}
}

// view runs fn in a read transaction and notes a store that cannot be
// reached.
func (h *storeHealth) view(fn func(*store.Tx) error) error {
	err := h.store.View(fn)
	if errors.Is(err, store.ErrUnavailable) {
		h.note(err)
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

// watch follows a database store (not the embedded file) while signerd
// runs, until stopWatching: once writes fail, it probes the database every
// storeProbeInterval, so health says writable again as soon as the
// database takes writes, with no request needed to find out; writable
// then runs (the engine burns the serials of requests stranded
// meanwhile).
func (h *storeHealth) watch(writable func()) {
	if h.store.Embedded() {
		return
	}
	h.watchStop, h.watchDone = make(chan struct{}), make(chan struct{})
	go h.probe(h.watchStop, h.watchDone, writable)
}

// stopWatching stops watch and returns when it has stopped.
func (h *storeHealth) stopWatching() {
	if h.watchStop == nil {
		return
	}
	close(h.watchStop)
	<-h.watchDone
	h.watchStop = nil
}

func (h *storeHealth) probe(stop <-chan struct{}, done chan<- struct{}, writable func()) {
	defer close(done)
	t := time.NewTicker(storeProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if h.Status().Writable {
			continue
		}
		h.beginWrite()
		err := h.store.Probe()
		h.endWrite()
		if err == nil && h.lastTimedOut() {
			continue
		}
		h.note(err)
		if err == nil {
			writable()
		}
	}
}

// lastTimedOut reports whether the store's last failure was a write that
// ran out of time.
func (h *storeHealth) lastTimedOut() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.timedOut
}

// strand remembers requests whose serials could not be burned.
func (h *storeHealth) strand(rs []*store.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stranded = append(h.stranded, rs...)
}

// takeStranded returns the stranded requests and forgets them.
func (h *storeHealth) takeStranded() []*store.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	rs := h.stranded
	h.stranded = nil
	return rs
}
