package engine

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"signerd/store"
)

// HSMStatus is whether the HSM signs, as the engine last saw it.
type HSMStatus struct {
	Up bool
	// Since is when it last went down or came back (zero: up since start).
	Since time.Time
	// Error is what the last failed signature said, while down.
	Error string
}

// hsmHealth follows the outcome of every HSM signature. Each change is
// logged and audited once ("hsm.unavailable", "hsm.recovered"), so the
// audit log shows every outage and how long it lasted, not every failure.
type hsmHealth struct {
	mu     sync.Mutex
	status HSMStatus
}

// HSM returns the HSM's status.
func (e *Engine) HSM() HSMStatus {
	e.health.mu.Lock()
	defer e.health.mu.Unlock()
	return e.health.status
}

// hsmSign has signer sign the digest, counting the signature in the
// metrics. The caller passes the outcome to noteHSM once it holds no
// store transaction (noteHSM may write an audit event).
func (e *Engine) hsmSign(ctx context.Context, signer AuditSigner, digest []byte) ([]byte, error) {
	start := time.Now()
	sig, err := signer.SignDigest(ctx, digest)
	e.cfg.Metrics.Signature(time.Since(start), err)
	return sig, err
}

// noteHSM records the outcome of an HSM operation: a failure while up
// takes the HSM down, a success while down brings it back.
func (e *Engine) noteHSM(err error) {
	e.health.mu.Lock()
	was := e.health.status
	if err == nil && was.Up {
		e.health.mu.Unlock()
		return // the common case, on every signature
	}
	now := e.cfg.Now().UTC()
	switch {
	case err != nil && was.Up:
		e.health.status = HSMStatus{Since: now, Error: err.Error()}
	case err != nil:
		e.health.status.Error = err.Error()
	case !was.Up:
		e.health.status = HSMStatus{Up: true, Since: now}
	}
	e.health.mu.Unlock()
	var ev store.Event
	switch {
	case err != nil && was.Up:
		e.log.Error("HSM unavailable", "err", err)
		ev = store.Event{Actor: store.System, Action: "hsm.unavailable", Outcome: store.OutcomeFailed, Reason: err.Error()}
	case err == nil && !was.Up:
		down := now.Sub(was.Since).Round(time.Millisecond)
		e.log.Info("HSM recovered", "down_for", down.String())
		ev = store.Event{Actor: store.System, Action: "hsm.recovered", Outcome: store.OutcomeOK,
			Detail: fmt.Sprintf("unavailable for %s since %s; last error: %s", down, was.Since.Format(time.RFC3339Nano), was.Error)}
	default:
		return
	}
	if aerr := e.Audit(ev); aerr != nil {
		e.log.Error("audit HSM status change", "action", ev.Action, "err", aerr)
	}
}

// ProbeHSM checks that the HSM signs: the audit key signs a fresh random
// digest, verified and then dropped, and every issuing key is found in the
// token and allowed to sign. Issuing keys are checked without signing, so
// that every signature a CA key ever makes is over a certificate or a CRL.
// ProbeHSM is what the daemon's watchdog asks before each ping, and how an
// outage is seen to end while no request comes.
func (e *Engine) ProbeHSM(ctx context.Context) error {
	err := e.probeHSM(ctx)
	e.noteHSM(err)
	return err
}

// usableKey is a Signer that can show its key usable without signing
// (hsm.SM2Signer).
type usableKey interface {
	Usable(ctx context.Context) error
}

func (e *Engine) probeHSM(ctx context.Context) error {
	if e.auditKey != nil {
		digest := make([]byte, 32)
		if _, err := io.ReadFull(e.cfg.Random, digest); err != nil {
			return fmt.Errorf("HSM random: %w", err)
		}
		if _, err := e.auditKey.SignDigest(ctx, digest); err != nil {
			return err
		}
	}
	for _, iss := range e.cfg.Issuers {
		if k, ok := iss.Signer.(usableKey); ok {
			if err := k.Usable(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}
