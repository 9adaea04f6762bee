package engine

import (
	"errors"
	"signerd/api"
	"signerd/store"
)

// Bounds of a refusal event's object and reason, in bytes.
const (
	maxRefusalObject = 160
	maxRefusalReason = 1024
)

// auditRefusal records a request the engine refused or failed, unless
// nothing went wrong or the failure is already recorded (a burned serial,
// which stays one event per request).
func (e *Engine) auditRefusal(actor store.Actor, action, object string, err error) {
	var ee *Error
	if err == nil || (errors.As(err, &ee) && ee.audited) {
		return
	}
	outcome := store.OutcomeRefused
	code := CodeOf(err)
	switch code {
	case api.CodeInternal, api.CodeHSMUnavailable, api.CodeStoreUnavailable, api.CodeLintFailed, api.CodeIssuerExpired:
		outcome = store.OutcomeFailed
	}
	// The object and the reason quote what the RA sent (a request id, a
	// subject): bounded, so a refused request cannot grow the log by more
	// than a small event.
	e.recordRefusal(store.Event{Actor: actor, Action: action, Object: store.BoundedText(object, maxRefusalObject),
		Outcome: outcome, Reason: store.BoundedText(err.Error(), maxRefusalReason)}, code)
}

// recordRefusal hands a refusal's event to the refusal sink, or writes it
// if there is none; it reports whether it is recorded (or will be).
func (e *Engine) recordRefusal(ev store.Event, code api.Code) bool {
	if e.cfg.Refusals != nil {
		e.cfg.Refusals.Record(ev, string(code))
		return true
	}
	if err := e.Audit(ev); err != nil {
		e.log.Error("audit a refused request", "action", ev.Action, "err", err)
		return false
	}
	return true
}

// Audit records an event that goes with no engine operation (a refused
// peer, a daemon start).
func (e *Engine) Audit(ev store.Event) error {
	return e.storeHealth.appendEvent(ev)
}
