package api

import "fmt"

// Code is a stable, machine-readable error code, answered to clients as
// is: codes are never renamed.
type Code string

// The engine's codes: a request it refused or failed.
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

// The daemon's codes: a request or connection refused before the engine
// saw it.
const (
	CodeUnknownPeer        Code = "unknown_peer" // the caller has no role
	CodeForbidden          Code = "forbidden"    // the caller's role may not use the route
	CodeMalformedJSON      Code = "malformed_json"
	CodeBodyTooLarge       Code = "body_too_large"
	CodeURITooLong         Code = "uri_too_long"
	CodeMediaType          Code = "unsupported_media_type"
	CodeNoRoute            Code = "no_such_route"
	CodeMethod             Code = "method_not_allowed"
	CodeTooManyConnections Code = "too_many_connections" // over socket.max_connections_per_uid
)

// The codes of a signed RA request refused (sign.go).
const (
	CodeSignatureRequired Code = "signature_required"
	CodeBadSignature      Code = "bad_signature"
	CodeStaleSignature    Code = "stale_signature"
	CodeRACertificate     Code = "ra_certificate_invalid"
	CodeReplayed          Code = "replayed_request"
)

// codeInfo is what a code means to a client beyond its name.
type codeInfo struct {
	status int
	// retryable: the same request may succeed if sent again unchanged,
	// soon and without anyone acting.
	retryable bool
}

// codes is every code's HTTP status, and whether a retry may succeed.
// clock_backwards is a 503 but not retryable: only an operator setting
// the clock (or, for a small step, time itself) ends it. internal is
// retryable (a fault, not the request's) but a 500.
var codes = map[Code]codeInfo{
	CodeBadRequest:        {400, false},
	CodeUnknownProfile:    {400, false},
	CodeMalformedCSR:      {400, false},
	CodeBadCSRSignature:   {400, false},
	CodeMalformedKey:      {400, false},
	CodeKeyTypeNotAllowed: {400, false},
	CodeWrongCurve:        {400, false},
	CodeSubjectIncomplete: {400, false},
	CodeValidityTooLong:   {400, false},
	CodeSubjectReserved:   {400, false},
	CodeKeyReused:         {400, false},
	CodeKeyCompromised:    {400, false},
	CodeMalformedJSON:     {400, false},
	CodeClientGone:        {400, false}, // nobody reads it: the client went away

	CodeSignatureRequired: {401, false},
	CodeBadSignature:      {401, false},
	CodeStaleSignature:    {401, false},
	CodeRACertificate:     {401, false},
	CodeReplayed:          {401, false},

	CodeUnknownPeer: {403, false},
	CodeForbidden:   {403, false},

	CodeNotFound: {404, false},
	CodeNoRoute:  {404, false},

	CodeMethod: {405, false},

	CodeRequestConflict:   {409, false},
	CodeInProgress:        {409, true},
	CodeInvalidState:      {409, false},
	CodeAlreadySuperseded: {409, false},
	CodeBackupNotEmbedded: {409, false},

	CodeBodyTooLarge: {413, false},
	CodeURITooLong:   {414, false},
	CodeMediaType:    {415, false},

	CodeInternal:      {500, true},
	CodeLintFailed:    {500, false},
	CodeIssuerExpired: {500, false}, // an operator's to fix

	CodeBusy:               {503, true},
	CodeShuttingDown:       {503, true},
	CodeHSMUnavailable:     {503, true},
	CodeStoreUnavailable:   {503, true},
	CodeBackupInProgress:   {503, true},
	CodeClockBackwards:     {503, false},
	CodeTooManyConnections: {503, true},

	CodeBackupNoSpace: {507, false}, // an operator's to fix
}

// Codes is every code signerd answers.
func Codes() []Code {
	out := make([]Code, 0, len(codes))
	for c := range codes {
		out = append(out, c)
	}
	return out
}

// Status is the HTTP status signerd answers c with; 500 for a code it
// does not know, which only a fault can make.
func (c Code) Status() int {
	if i, ok := codes[c]; ok {
		return i.status
	}
	return 500
}

// Retryable reports whether the same request may succeed if sent again
// unchanged, soon and without anyone acting.
func (c Code) Retryable() bool { return codes[c].retryable }

// RetryAfter reports whether an answer with c carries "Retry-After: 1":
// a 503 that a retry soon may end.
func (c Code) RetryAfter() bool { return c.Status() == 503 && c.Retryable() }

// Error is an error answer's body.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }
