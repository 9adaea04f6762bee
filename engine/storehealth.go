package engine

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"signerd/store"
)

// StoreStatus is whether the store takes writes, as the last write found.
type StoreStatus struct {
	Writable bool
	// Since is when writes last started failing or working again.
	Since time.Time
	// Error is what the last failed write said, while failing.
	Error string
}

// storeHealth follows the outcome of the engine's writes. Any failed
// write marks the store failing; only a recorded batch marks it writable
// again, since on a nearly full disk small writes (an audit event) may
// still succeed while certificates cannot be recorded. A change is
// logged; it cannot be audited, the audit log being in the store.
type storeHealth struct {
	mu     sync.Mutex
	status StoreStatus
	// stranded are requests left "signing" by a batch whose result could
	// not be written, nor their serials burned; the next batch burns them,
	// so their RAs can retry without a restart.
	stranded []*store.Request
}

// Store returns the store's status.
func (e *Engine) Store() StoreStatus {
	e.storeHealth.mu.Lock()
	defer e.storeHealth.mu.Unlock()
	return e.storeHealth.status
}

// update runs fn in a write transaction and notes a failure to write it.
// Requests that fail because of one are answered store_unavailable.
func (e *Engine) update(fn func(*store.Tx) error) error {
	err := e.store.Update(fn)
	if errors.Is(err, store.ErrWrite) {
		e.noteStore(err)
	}
	return err
}

func (e *Engine) noteStore(err error) {
	h := &e.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	now := e.cfg.Now().UTC()
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

// storeCode is the code for a failed store operation.
func storeCode(err error) Code {
	if errors.Is(err, store.ErrWrite) {
		return CodeStoreUnavailable
	}
	return CodeInternal
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
	if err != nil {
		e.log.Error("burn serials of stranded requests; will try again", "err", err)
		e.strand(rs)
	}
}
