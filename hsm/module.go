package hsm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// Config selects a module, a token in it and how to use it.
type Config struct {
	// ModulePath is the PKCS#11 shared library.
	ModulePath string
	// TokenLabel and/or TokenSerial select the token; at least one is set.
	TokenLabel  string
	TokenSerial string
	// PIN is the CKU_USER PIN. Open copies it; the caller zeroes its own.
	PIN []byte
	// Sessions is the size of the session pool; 0 means GOMAXPROCS.
	Sessions int
	// SM2 is how this module exposes SM2; nil means the module has none and
	// SM2 keys are refused.
	SM2 *MechanismProfile
}

// Module is one token in one PKCS#11 module, logged in as the user, with a
// pool of sessions. It is safe for concurrent use.
type Module struct {
	lib    *library
	token  string // for messages: label and serial
	label  string
	serial string
	sm2    *MechanismProfile
	pin    []byte
	pool   *sessionPool
	// dataMu serialises data object writes: each reads the newest
	// generation and creates the next, which two at once would both make.
	dataMu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

// Open loads the module (once per process), finds the token, checks that it
// offers the mechanisms the profile names, and logs in. A wrong PIN fails
// with ErrPINIncorrect and is never retried.
func Open(cfg Config) (*Module, error) {
	if cfg.TokenLabel == "" && cfg.TokenSerial == "" {
		return nil, errors.New("open HSM: token label or serial is required")
	}
	if len(cfg.PIN) == 0 {
		return nil, errors.New("open HSM: PIN is empty")
	}
	if cfg.SM2 != nil {
		if err := cfg.SM2.Validate(); err != nil {
			return nil, fmt.Errorf("open HSM: %w", err)
		}
	}
	size := cfg.Sessions
	if size <= 0 {
		size = runtime.GOMAXPROCS(0)
	}
	lib, err := openLibrary(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	m := &Module{
		lib:    lib,
		token:  fmt.Sprintf("label %q serial %q", cfg.TokenLabel, cfg.TokenSerial),
		label:  cfg.TokenLabel,
		serial: cfg.TokenSerial,
		sm2:    cfg.SM2,
		pin:    append([]byte(nil), cfg.PIN...),
	}
	slot, err := lib.findSlot(cfg.TokenLabel, cfg.TokenSerial)
	if err == nil {
		err = m.checkMechanisms(slot)
	}
	if err == nil {
		m.pool, err = newSessionPool(m, slot, size)
	}
	if err != nil {
		zero(m.pin)
		lib.release()
		return nil, fmt.Errorf("open HSM token %s: %w", m.token, err)
	}
	return m, nil
}

// Close waits for operations in flight, closes every session and releases
// the module. The PIN copy is zeroed. Later calls do nothing.
func (m *Module) Close() error {
	m.closeOnce.Do(func() {
		m.pool.close()
		zero(m.pin)
		m.closeErr = m.lib.release()
	})
	return m.closeErr
}

// LoginRefused is closed when the token refuses the PIN while the module
// restores a lost login (the PIN was changed or locked behind its back).
// The module never presents that PIN again: every later operation fails
// with the refusal, so a daemon should stop rather than keep serving.
func (m *Module) LoginRefused() <-chan struct{} { return m.pool.refusedCh }

// LoginRefusal is the refusal LoginRefused announced (ErrPINIncorrect or
// ErrPINLocked), nil before one.
func (m *Module) LoginRefusal() error {
	m.pool.mu.Lock()
	defer m.pool.mu.Unlock()
	return m.pool.refused
}

func (m *Module) checkMechanisms(slot uint) error {
	if m.sm2 == nil {
		return nil
	}
	list, err := m.lib.ctx.GetMechanismList(slot)
	if err != nil {
		return fmt.Errorf("list mechanisms: %w", err)
	}
	offered := make(map[uint]bool, len(list))
	for _, mech := range list {
		offered[mech.Mechanism] = true
	}
	for _, need := range []struct {
		what string
		code uint
	}{{"key-gen", m.sm2.KeyGen}, {"sign", m.sm2.SignE}} {
		if !offered[need.code] {
			return fmt.Errorf("SM2 mechanism profile %q: %s mechanism 0x%08X is not offered by the token",
				m.sm2.Name, need.what, need.code)
		}
	}
	return nil
}

// login opens a session and logs the user in on it.
func (m *Module) login(slot uint) (pkcs11.SessionHandle, error) {
	ctx := m.lib.ctx
	h, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("open session: %w", err)
	}
	err = ctx.Login(h, pkcs11.CKU_USER, pinString(m.pin))
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		ctx.CloseSession(h)
		return 0, loginError(err)
	}
	return h, nil
}

// do runs fn on a session of its own. A lost session or login is restored
// before do returns, and the failure is reported as ErrTransient.
func (m *Module) do(ctx context.Context, fn func(*session) error) error {
	s, err := m.pool.get(ctx)
	if err != nil {
		return err
	}
	err = fn(s)
	if err == nil || !sessionLost(err) {
		m.pool.put(s)
		return err
	}
	m.pool.discard(s)
	return m.pool.restore(s.gen, err)
}

func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// library is one loaded and initialised PKCS#11 module. A module may be
// initialised only once per process, so every Module on it shares it.
type library struct {
	path string
	ctx  *pkcs11.Ctx
	refs int

	mu         sync.Mutex
	reinitTime time.Time // when the module was last initialised anew
}

// errTokenNotFound: no initialised token matches; after a loss it may
// come back.
var errTokenNotFound = errors.New("token not found")

// mayReinitialize reports whether a re-initialisation is due: at most one
// a second, so a token that stays away is not hammered.
func (l *library) mayReinitialize() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.reinitTime) >= time.Second
}

// reinitialize finalises and initialises the module again, so it finds
// tokens anew. Every session on it, of every Module, is gone afterwards;
// their pools see that and recover (signerd opens one Module).
func (l *library) reinitialize() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reinitTime = time.Now()
	if err := l.ctx.Finalize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		return fmt.Errorf("finalise PKCS#11 module %s: %w", l.path, err)
	}
	if err := l.ctx.Initialize(); err != nil {
		return fmt.Errorf("initialise PKCS#11 module %s again: %w", l.path, err)
	}
	return nil
}

var libraries = struct {
	sync.Mutex
	m map[string]*library
}{m: map[string]*library{}}

func openLibrary(path string) (*library, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 module path %q: %w", path, err)
	}
	libraries.Lock()
	defer libraries.Unlock()
	if l := libraries.m[abs]; l != nil {
		l.refs++
		return l, nil
	}
	ctx := pkcs11.New(abs)
	if ctx == nil {
		return nil, fmt.Errorf("load PKCS#11 module %s: not a loadable PKCS#11 library", abs)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("initialise PKCS#11 module %s: %w", abs, err)
	}
	l := &library{path: abs, ctx: ctx, refs: 1}
	libraries.m[abs] = l
	return l, nil
}

func (l *library) release() error {
	libraries.Lock()
	defer libraries.Unlock()
	l.refs--
	if l.refs > 0 {
		return nil
	}
	delete(libraries.m, l.path)
	err := l.ctx.Finalize()
	l.ctx.Destroy()
	if err != nil {
		return fmt.Errorf("finalise PKCS#11 module %s: %w", l.path, err)
	}
	return nil
}

// findSlot returns the slot holding the one initialised token that matches.
func (l *library) findSlot(label, serial string) (uint, error) {
	slots, err := l.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("list slots: %w", err)
	}
	var found []uint
	var present []string
	for _, slot := range slots {
		ti, err := l.ctx.GetTokenInfo(slot)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		present = append(present, ti.Label)
		if (label == "" || ti.Label == label) && (serial == "" || ti.SerialNumber == serial) {
			found = append(found, slot)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("%w (tokens present: %q)", errTokenNotFound, present)
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("%d tokens match; select one by serial", len(found))
	}
}
