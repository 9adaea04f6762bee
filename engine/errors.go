package engine

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code; the daemon returns it to
// RAs as is, so codes are never renamed.
type Code string

const (
	CodeBadRequest        Code = "bad_request"
	CodeUnknownProfile    Code = "unknown_profile"
	CodeMalformedCSR      Code = "malformed_csr"
	CodeBadCSRSignature   Code = "bad_csr_signature"
	CodeMalformedKey      Code = "malformed_public_key"
	CodeKeyTypeNotAllowed Code = "key_type_not_allowed"
	CodeWrongCurve        Code = "wrong_curve"
	CodeSubjectIncomplete Code = "subject_incomplete"
	CodeValidityTooLong   Code = "validity_too_long"
	CodeSubjectReserved   Code = "subject_reserved"    // the subject is one of the CA's own names
	CodeKeyReused         Code = "key_reused"          // the key is certified for another use already
	CodeRequestConflict   Code = "request_conflict"    // same request id, different content
	CodeInProgress        Code = "request_in_progress" // same request id is being signed now
	CodeNotFound          Code = "not_found"
	CodeInvalidState      Code = "invalid_state" // e.g. restoring a certificate not on hold
	CodeBusy              Code = "busy"          // queue full; retry later
	CodeShuttingDown      Code = "shutting_down"
	CodeClockBackwards    Code = "clock_backwards"   // refusing to sign with a time before the last one
	CodeHSMUnavailable    Code = "hsm_unavailable"   // retryable HSM fault
	CodeStoreUnavailable  Code = "store_unavailable" // the store took no write; retryable
	CodeLintFailed        Code = "lint_failed"
	CodeInternal          Code = "internal"
	CodeAlreadySuperseded Code = "already_superseded"  // the certificate was replaced, or is being replaced now
	CodeKeyCompromised    Code = "key_compromised"     // the public key was revoked for keyCompromise
	CodeIssuerExpired     Code = "issuer_expired"      // the clock reads outside the issuing CA's validity
	CodeBackupInProgress  Code = "backup_in_progress"  // another store backup is being made or sent
	CodeBackupNoSpace     Code = "backup_no_space"     // too little free space beside the store for a backup
	CodeClientGone        Code = "client_gone"         // the client went before its request was done
	CodeBackupNotEmbedded Code = "backup_not_embedded" // store backup: the store is a database, backed up by its own tools
)

// errHSM marks a failure of the HSM itself (no signature, or one that
// does not verify): the RA is told hsm_unavailable and may retry.
var errHSM = errors.New("HSM")

// Retryable reports whether the same request may succeed if sent again
// unchanged, soon and without anyone acting. clock_backwards is not: the
// clock reads behind the last signing or revocation time, and only an
// operator setting it (or, for a small step, time itself) ends that.
func (c Code) Retryable() bool {
	switch c {
	case CodeBusy, CodeInProgress, CodeBackupInProgress, CodeHSMUnavailable, CodeStoreUnavailable, CodeShuttingDown, CodeInternal:
		return true
	}
	return false
}

// Error is an engine error with a stable code. Message is meant for the RA
// developer reading it; it never holds secrets.
type Error struct {
	Code    Code
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
func errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
	if code == CodeInternal {
		for _, a := range args {
			if cause, ok := a.(error); ok && storeFailed(cause) {
				e.Code, e.Err = CodeStoreUnavailable, cause
				break
			}
		}
	}
	return e
}

// CodeOf returns err's code: store_unavailable for the store's failures
// without one, CodeInternal for other errors without one.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case storeFailed(err):
		return CodeStoreUnavailable
	}
	return CodeInternal
}
