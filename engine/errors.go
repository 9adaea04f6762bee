package engine

import (
	"errors"
	"fmt"

	"signerd/api"
)

// errHSM marks a failure of the HSM itself (no signature, or one that
// does not verify): the RA is told hsm_unavailable and may retry.
var errHSM = errors.New("HSM")

// Error is an engine error with a stable code, answered to the RA as is
// (api.Code says with which HTTP status). Message is meant for the RA
// developer reading it; it never holds secrets.
type Error struct {
	Code    api.Code
	Message string
	Err     error
	// audited: the engine has already recorded this failure as an audit
	// event (a burned serial), so the refusal is not recorded twice.
	audited bool
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

// errorf makes an Error. An internal error caused by the store's failure
// (a write not taken, a database not reached) is store_unavailable, which
// the RA may retry, whoever formatted it.
func errorf(code api.Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
	if code == api.CodeInternal {
		for _, a := range args {
			if cause, ok := a.(error); ok && storeFailed(cause) {
				e.Code, e.Err = api.CodeStoreUnavailable, cause
				break
			}
		}
	}
	return e
}

// CodeOf returns err's code: store_unavailable for the store's failures
// without one, api.CodeInternal for other errors without one.
func CodeOf(err error) api.Code {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case storeFailed(err):
		return api.CodeStoreUnavailable
	}
	return api.CodeInternal
}
