package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"signerd/hsm"
	"signerd/issuance"
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

// hsmHealth is the engine's way to the HSM's keys: every signature the
// engine has made goes through it (sign, issue), and it follows their
// outcome. Each change is logged and audited once ("hsm.unavailable",
// "hsm.recovered"), so the audit log shows every outage and how long it
// lasted, not every failure.
type hsmHealth struct {
	log     *slog.Logger
	now     func() time.Time
	metrics Metrics
	store   *storeHealth // where status changes are audited
	// What probe signs with or checks: the audit key (nil if none), the
	// issuing keys, and the HSM's random source for the probe's digest.
	auditKey AuditSigner
	issuers  []*issuance.Issuer
	random   io.Reader
	// recovered, if set, is called when the HSM comes back (the CRL
	// schedule then signs what failed, without waiting out its backoff).
	recovered func()

	mu     sync.Mutex
	status HSMStatus
}

// HSM returns the HSM's status.
func (e *Engine) HSM() HSMStatus { return e.hsmHealth.Status() }

// Status is the HSM's status.
func (h *hsmHealth) Status() HSMStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}

// sign has signer sign the digest, counting the signature in the
// metrics. The caller passes the outcome to note once it holds no store
// transaction (note may write an audit event).
func (h *hsmHealth) sign(ctx context.Context, signer AuditSigner, digest []byte) ([]byte, error) {
	start := time.Now()
	sig, err := signer.SignDigest(ctx, digest)
	h.metrics.Signature(time.Since(start), err)
	return sig, err
}

// issue has iss's key sign tok and issuance check the result. A
// signature that does not verify is the HSM's failure, counted and noted
// as one (errHSM); a refusal after it (the TBS, the lints) is not.
func (h *hsmHealth) issue(ctx context.Context, iss *issuance.Issuer, tok *issuance.Token) (*issuance.Issued, error) {
	start := time.Now()
	sig, err := iss.Signer.SignDigest(ctx, tok.Digest())
	took := time.Since(start)
	var out *issuance.Issued
	if err == nil {
		out, err = iss.Issue(tok, sig)
	}
	hsmErr := err
	if sig != nil && !errors.Is(err, hsm.ErrBadSignature) {
		hsmErr = nil // the HSM's signature verifies
	}
	h.metrics.Signature(took, hsmErr)
	if !errors.Is(hsmErr, context.Canceled) {
		// A signature given up by its caller (the engine closing) says
		// nothing of the HSM.
		h.note(hsmErr)
	}
	if hsmErr != nil {
		return nil, fmt.Errorf("%w: %w", errHSM, err)
	}
	return out, err
}

// note records the outcome of an HSM operation: a failure while up
// takes the HSM down, a success while down brings it back.
func (h *hsmHealth) note(err error) {
	h.mu.Lock()
	was := h.status
	if err == nil && was.Up {
		h.mu.Unlock()
		return // the common case, on every signature
	}
	now := h.now().UTC()
	switch {
	case err != nil && was.Up:
		h.status = HSMStatus{Since: now, Error: err.Error()}
	case err != nil:
		h.status.Error = err.Error()
	case !was.Up:
		h.status = HSMStatus{Up: true, Since: now}
	}
	h.mu.Unlock()
	var ev store.Event
	switch {
	case err != nil && was.Up:
		h.log.Error("HSM unavailable", "err", err)
		ev = store.Event{Actor: store.System, Action: "hsm.unavailable", Outcome: store.OutcomeFailed, Reason: err.Error()}
	case err == nil && !was.Up:
		down := now.Sub(was.Since).Round(time.Millisecond)
		h.log.Info("HSM recovered", "down_for", down.String())
		ev = store.Event{Actor: store.System, Action: "hsm.recovered", Outcome: store.OutcomeOK,
			Detail: fmt.Sprintf("unavailable for %s since %s; last error: %s", down, was.Since.Format(time.RFC3339Nano), was.Error)}
	default:
		return
	}
	if aerr := h.store.appendEvent(ev); aerr != nil {
		h.log.Error("audit HSM status change", "action", ev.Action, "err", aerr)
	}
	if err == nil && h.recovered != nil {
		h.recovered()
	}
}

// ProbeHSM checks that the HSM signs: the audit key signs a fresh random
// digest, verified and then dropped, and every issuing key is found in the
// token and allowed to sign. Issuing keys are checked without signing, so
// that every signature a CA key ever makes is over a certificate or a CRL.
// ProbeHSM is what the daemon's watchdog asks before each ping, and how an
// outage is seen to end while no request comes.
func (e *Engine) ProbeHSM(ctx context.Context) error { return e.hsmHealth.probe(ctx) }

func (h *hsmHealth) probe(ctx context.Context) error {
	err := h.probeKeys(ctx)
	h.note(err)
	return err
}

// usableKey is a Signer that can show its key usable without signing
// (hsm.SM2Signer).
type usableKey interface {
	Usable(ctx context.Context) error
}

func (h *hsmHealth) probeKeys(ctx context.Context) error {
	if h.auditKey != nil {
		digest := make([]byte, 32)
		if _, err := io.ReadFull(h.random, digest); err != nil {
			return fmt.Errorf("HSM random: %w", err)
		}
		if _, err := h.auditKey.SignDigest(ctx, digest); err != nil {
			return err
		}
	}
	for _, iss := range h.issuers {
		if k, ok := iss.Signer.(usableKey); ok {
			if err := k.Usable(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}
