package hsm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/miekg/pkcs11"
)

// session is a PKCS#11 session and the pool generation it was opened in.
// A recovery starts a new generation; sessions of older ones are closed as
// they come back, and key handles found in them are looked up again.
type session struct {
	h   pkcs11.SessionHandle
	gen uint64
}

// sessionPool hands each operation a session of its own. At most size
// sessions are open; callers wait for one when all are busy.
type sessionPool struct {
	m     *Module
	slots chan struct{} // a token per session that may be in use
	idle  chan *session

	mu      sync.Mutex
	slot    uint
	gen     uint64
	closed  bool
	refused error // a login failure that must not be retried (wrong PIN)
	// refusedCh is closed when refused is set, for whoever must stop
	// rather than wait for a login that will never be tried.
	refusedCh chan struct{}
	inUse     map[pkcs11.SessionHandle]bool
	peak      int // most sessions ever in use at once
}

func newSessionPool(m *Module, slot uint, size int) (*sessionPool, error) {
	p := &sessionPool{
		m:         m,
		slots:     make(chan struct{}, size),
		idle:      make(chan *session, size),
		slot:      slot,
		inUse:     map[pkcs11.SessionHandle]bool{},
		refusedCh: make(chan struct{}),
	}
	h, err := m.login(slot)
	if err != nil {
		return nil, err
	}
	p.idle <- &session{h: h}
	return p, nil
}

func (p *sessionPool) get(ctx context.Context) (*session, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for HSM session: %w", ctx.Err())
	}
	for {
		p.mu.Lock()
		gen, closed, refused, slot := p.gen, p.closed, p.refused, p.slot
		p.mu.Unlock()
		if closed || refused != nil {
			<-p.slots
			if closed {
				return nil, ErrClosed
			}
			return nil, refused
		}
		var s *session
		select {
		case s = <-p.idle:
			if s.gen != gen {
				p.m.lib.ctx.CloseSession(s.h)
				continue
			}
		default:
			h, err := p.m.lib.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
			if err != nil {
				<-p.slots
				err = fmt.Errorf("open session: %w", err)
				if sessionLost(err) {
					return nil, p.restore(gen, err)
				}
				return nil, err
			}
			s = &session{h: h, gen: gen}
		}
		if err := p.claim(s); err != nil {
			<-p.slots
			return nil, err
		}
		return s, nil
	}
}

// claim records s as in use. Handing one session to two callers would let
// one caller's C_SignInit clobber another's; this makes that a loud error.
func (p *sessionPool) claim(s *session) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[s.h] {
		return fmt.Errorf("HSM session %d handed out twice", s.h)
	}
	p.inUse[s.h] = true
	p.peak = max(p.peak, len(p.inUse))
	return nil
}

func (p *sessionPool) unclaim(s *session) {
	p.mu.Lock()
	delete(p.inUse, s.h)
	stale := s.gen != p.gen || p.closed
	p.mu.Unlock()
	if stale {
		p.m.lib.ctx.CloseSession(s.h)
		return
	}
	p.keep(s)
}

// keep puts s among the idle sessions, or closes it if they are full.
func (p *sessionPool) keep(s *session) {
	select {
	case p.idle <- s:
	default:
		p.m.lib.ctx.CloseSession(s.h)
	}
}

// put returns a healthy session.
func (p *sessionPool) put(s *session) {
	p.unclaim(s)
	<-p.slots
}

// discard drops a session that failed.
func (p *sessionPool) discard(s *session) {
	p.mu.Lock()
	delete(p.inUse, s.h)
	p.mu.Unlock()
	p.m.lib.ctx.CloseSession(s.h)
	<-p.slots
}

// recover restores the login after a failure seen in generation failed: it
// finds the token again (it may have moved slot), opens a session, logs in
// and starts a new generation. Concurrent callers from the same generation
// recover once. A wrong PIN is remembered and never tried again.
//
// A token that has gone (an HSM restarted, a token file removed) is often
// not seen again by a module until it is initialised anew, so when the
// token cannot be found the module is finalised and initialised again,
// with no session of this pool in use, at most once a second. That may
// fail while the token is away, leaving the module uninitialised until a
// later recovery initialises it.
func (p *sessionPool) recover(failed uint64) error {
	err := p.relogin(failed)
	lost := errors.Is(err, errTokenNotFound) || errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED))
	if !lost || !p.m.lib.mayReinitialize() {
		return err
	}
	for range cap(p.slots) {
		p.slots <- struct{}{}
	}
	defer func() {
		for range cap(p.slots) {
			<-p.slots
		}
	}()
	p.mu.Lock()
	stale := p.gen != failed
	p.mu.Unlock()
	if stale {
		return nil // recovered by another caller meanwhile
	}
	if err := p.m.lib.reinitialize(); err != nil {
		return err
	}
	return p.relogin(failed)
}

// relogin is recover without re-initialising the module.
func (p *sessionPool) relogin(failed uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused != nil {
		return p.refused
	}
	if p.gen != failed || p.closed {
		return nil
	}
	slot, err := p.m.lib.findSlot(p.m.label, p.m.serial)
	if err != nil {
		return err
	}
	h, err := p.m.login(slot)
	if err != nil {
		if refusedPIN(err) {
			p.refused = err
			close(p.refusedCh)
		}
		return err
	}
	p.slot = slot
	p.gen++
	p.keep(&session{h: h, gen: p.gen})
	return nil
}

// restore recovers after err was seen in generation gen, and returns what
// the caller is told: ErrTransient when a retry may succeed, the refusal
// itself when the token refused the PIN (a retry never will).
func (p *sessionPool) restore(gen uint64, err error) error {
	rerr := p.recover(gen)
	switch {
	case rerr == nil:
		return fmt.Errorf("%w: %w", ErrTransient, err)
	case refusedPIN(rerr):
		return fmt.Errorf("%w; restoring login: %w", err, rerr)
	default:
		return fmt.Errorf("%w: %w; restoring session: %v", ErrTransient, err, rerr)
	}
}

// close waits until no session is in use, then closes them all.
func (p *sessionPool) close() {
	for i := 0; i < cap(p.slots); i++ {
		p.slots <- struct{}{}
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for {
		select {
		case s := <-p.idle:
			p.m.lib.ctx.CloseSession(s.h)
		default:
			return
		}
	}
}
