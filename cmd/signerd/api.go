package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/store"
)

// maxBody bounds a request body: a CSR and a subject fit many times over.
const maxBody = 64 << 10

// maxRequestTarget bounds the request-target (path and query) on every
// route: the longest route with a 20-byte serial and an issuer query is
// well under it, and a signed request's evidence holds the target whole.
const maxRequestTarget = 1 << 10

// server is the HTTP face of the engine on the Unix socket: it serves
// the contract package api describes.
type server struct {
	eng     *engine.Engine
	log     *slog.Logger
	metrics *metrics
	sigs    raSignatures
	refused *refusalLog // where refusals before the engine are recorded
	// backupTimeout: store.backup_timeout (backup.go).
	backupTimeout time.Duration
	// exportTimeout bounds sending an audit bundle
	// (socket.timeouts.export).
	exportTimeout time.Duration
}

func (a *server) routes(roles roles) http.Handler {
	mux := a.mux(roles, func(string) {})
	// ServeMux answers a path that is not clean (//v1/health, /v1/./health,
	// /v1/x/../crl) with a redirect of its own, before any peer check and
	// unaudited, and "OPTIONS *" has no path at all: to signerd they are
	// no route, refused and audited as an unknown one is.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && (p == "" || p[0] != '/' || cleanPath(p) != p) {
			a.noRoute(w, r, roles)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPath is p as ServeMux cleans it: no empty, "." or ".." segments,
// a trailing slash kept.
func cleanPath(p string) string {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// noRoute refuses a request for a path signerd has no route for,
// audited like every refusal, whoever asks (a peer without a role too):
// an unknown route is someone probing.
func (a *server) noRoute(w http.ResponseWriter, r *http.Request, roles roles) {
	a.refuse(w, r, peerOf(r, roles), api.CodeNoRoute, fmt.Sprintf("no route %s %s; see docs/api.md", r.Method, r.URL.EscapedPath()), string(api.CodeNoRoute))
}

// peerOf is the peer of r with its roles.
func peerOf(r *http.Request, roles roles) peer {
	p := peerFrom(r.Context())
	p.Roles = roles.rolesOf(p)
	return p
}

// mux builds the routes, telling seen each pattern (for the test that
// holds docs/api.md to them).
func (a *server) mux(roles roles, seen func(pattern string)) *http.ServeMux {
	mux := http.NewServeMux()
	route := func(rt api.Route, allowed []string, h func(http.ResponseWriter, *http.Request, peer)) {
		pattern := rt.Pattern()
		seen(pattern)
		takesBody := rt.TakesBody()
		mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
			w, p := &recorder{ResponseWriter: rw}, peerOf(r, roles)
			defer a.metrics.count(pattern, w)
			if !a.admit(w, r, p, allowed) {
				return
			}
			// Before the target is read for the signature or reaches the
			// engine: a signed request's evidence holds it whole. (A refused
			// request's event holds at most maxRefusalObject bytes of it.)
			if len(r.RequestURI) > maxRequestTarget {
				msg := fmt.Sprintf("request-target of %d bytes, over %d", len(r.RequestURI), maxRequestTarget)
				a.refuse(w, r, p, api.CodeURITooLong, msg, string(api.CodeURITooLong)+": "+msg)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
			if !takesBody && !a.noBody(w, r, p) {
				return
			}
			if slices.Contains(allowed, roleRA) {
				evidence, err := a.checkSignature(r)
				if err != nil {
					a.refuseSignature(w, r, p, err)
					return
				}
				p.evidence = evidence
			}
			h(w, r, p)
			if w.status >= 400 && !w.audited {
				a.auditRefusal(r, p, w.code+": "+w.message)
			}
		})
	}
	ra, op, aud := []string{roleRA}, []string{roleOperator}, []string{roleAuditor}
	route(api.RouteIssue, ra, a.issue)
	route(api.RouteStatus, ra, a.status)
	route(api.RouteRenew, ra, a.renew)
	route(api.RouteExtend, ra, a.extend)
	route(api.RouteRevoke, ra, a.revoke)
	route(api.RouteHold, ra, a.hold)
	route(api.RouteRestore, ra, a.restore)
	route(api.RouteLatestCRL, ra, a.latestCRL)
	route(api.RouteSignCRL, op, a.signCRL)
	route(api.RouteStatistics, aud, a.statistics)
	route(api.RouteExportAudit, aud, a.exportAudit)
	route(api.RouteBackupStore, op, a.backupStore)
	route(api.RouteHealth, op, a.health)
	route(api.RouteMetrics, op, func(w http.ResponseWriter, r *http.Request, _ peer) { a.metrics.handler().ServeHTTP(w, r) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			other := r.Clone(r.Context())
			other.Method = m
			if _, pattern := mux.Handler(other); pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			a.noRoute(w, r, roles)
			return
		}
		// Audited like every refusal, whoever asks (a peer without a role
		// too).
		w.Header().Set("Allow", strings.Join(allow, ", "))
		a.refuse(w, r, peerOf(r, roles), api.CodeMethod, fmt.Sprintf("%s takes %s, not %s", r.URL.EscapedPath(), strings.Join(allow, " or "), r.Method), string(api.CodeMethod))
	})
	return mux
}

// admit refuses unknown peers and peers whose role may not use the route;
// both are audited (and logged) by auditRefusal.
func (a *server) admit(w http.ResponseWriter, r *http.Request, p peer, allowed []string) bool {
	var code api.Code
	switch {
	case len(p.Roles) == 0:
		code = api.CodeUnknownPeer
	case !slices.ContainsFunc(p.Roles, func(role string) bool { return slices.Contains(allowed, role) }):
		code = api.CodeForbidden
	default:
		return true
	}
	a.refuse(w, r, p, code, fmt.Sprintf("uid %d gid %d (roles %v) may not %s %s", p.UID, p.GID, p.Roles, r.Method, r.URL.Path), string(code))
	return false
}

// refuse audits a refusal made before the engine saw the request, with
// reason ("code" or "code: message"), and answers it.
func (a *server) refuse(w http.ResponseWriter, r *http.Request, p peer, code api.Code, msg, reason string) {
	a.auditRefusal(r, p, reason)
	writeError(w, code, msg)
}

// auditRefusal records a request the daemon refused before the engine
// saw it (the engine records its own); reason is "code" or "code: message".
// What is recorded is bounded, and tallied per peer and code (refusals.go).
func (a *server) auditRefusal(r *http.Request, p peer, reason string) {
	code, _, _ := strings.Cut(reason, ":")
	a.refused.refuse(p.actor(), requestObject(r), code, reason)
}

// engineRequest is the request q asks the engine for, its PEM fields
// decoded.
func engineRequest(q *api.IssueRequest) (engine.Request, error) {
	req := engine.Request{ID: q.RequestID, Profile: q.Profile, Subject: q.Subject, DNSNames: q.DNSNames,
		Emails: q.Emails, Identity: q.Identity, ValidityDays: q.ValidityDays}
	var err error
	if req.CSR, err = pemField(q.CSR, "csr", api.PEMCSR, api.CodeMalformedCSR); err != nil {
		return req, err
	}
	req.PublicKey, err = pemField(q.PublicKey, "public_key", api.PEMPublicKey, api.CodeMalformedKey)
	return req, err
}

func pemField(s, field, typ string, code api.Code) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != typ || strings.TrimSpace(string(rest)) != "" {
		return nil, &api.Error{Code: code, Message: fmt.Sprintf("%s: want one PEM %q block", field, typ)}
	}
	return b.Bytes, nil
}

// view is how a certificate record is shown.
func view(c *store.Certificate) api.Certificate {
	v := api.Certificate{Serial: hex.EncodeToString(c.Serial), Status: string(c.Status), Profile: c.Profile,
		Subject: c.Subject, Issuer: c.Issuer, NotBefore: c.NotBefore, NotAfter: c.NotAfter, Reason: c.Reason,
		RequestID: c.RequestID, Replaces: hex.EncodeToString(c.Replaces), SupersededBy: hex.EncodeToString(c.SupersededBy),
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}))}
	if !c.RevokedAt.IsZero() {
		v.RevokedAt = &c.RevokedAt
	}
	return v
}

func (a *server) issue(w http.ResponseWriter, r *http.Request, p peer) {
	var q api.IssueRequest
	if !decode(w, r, &q) {
		return
	}
	req, err := engineRequest(&q)
	if err != nil {
		a.failEarly(w, r, err)
		return
	}
	c, err := a.eng.Issue(r.Context(), p.actor(), req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, view(c))
}

func (a *server) renew(w http.ResponseWriter, r *http.Request, p peer) {
	serial, ok := pathSerial(w, r)
	var q api.IssueRequest
	if !ok || !decode(w, r, &q) {
		return
	}
	req, err := engineRequest(&q)
	if err != nil {
		a.failEarly(w, r, err)
		return
	}
	c, err := a.eng.Renew(r.Context(), p.actor(), serial, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, view(c))
}

func (a *server) extend(w http.ResponseWriter, r *http.Request, p peer) {
	serial, ok := pathSerial(w, r)
	var q api.ExtendRequest
	if !ok || !decode(w, r, &q) {
		return
	}
	c, err := a.eng.Extend(r.Context(), p.actor(), q.RequestID, serial, q.ValidityDays)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, view(c))
}

func (a *server) revoke(w http.ResponseWriter, r *http.Request, p peer) {
	serial, ok := pathSerial(w, r)
	var q api.RevokeRequest
	if !ok || !decode(w, r, &q) {
		return
	}
	reason, err := q.RevocationReason()
	if err != nil {
		a.failEarly(w, r, err)
		return
	}
	a.answer(w, r, func() (*store.Certificate, error) { return a.eng.Revoke(p.actor(), serial, reason) })
}

func (a *server) hold(w http.ResponseWriter, r *http.Request, p peer) {
	if serial, ok := pathSerial(w, r); ok && emptyBody(w, r) {
		a.answer(w, r, func() (*store.Certificate, error) { return a.eng.Hold(p.actor(), serial) })
	}
}

func (a *server) restore(w http.ResponseWriter, r *http.Request, p peer) {
	if serial, ok := pathSerial(w, r); ok && emptyBody(w, r) {
		a.answer(w, r, func() (*store.Certificate, error) { return a.eng.Restore(p.actor(), serial) })
	}
}

func (a *server) status(w http.ResponseWriter, r *http.Request, p peer) {
	if serial, ok := pathSerial(w, r); ok {
		a.answer(w, r, func() (*store.Certificate, error) { return a.eng.StatusFor(p.actor(), serial) })
	}
}

func (a *server) answer(w http.ResponseWriter, r *http.Request, op func() (*store.Certificate, error)) {
	c, err := op()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, view(c))
}

// crlName is the CRL series a CRL route's query names.
func crlName(r *http.Request) (engine.CRLName, error) {
	q := r.URL.Query()
	name := engine.CRLName{Issuer: q.Get(api.QueryIssuer)}
	if s := q.Get(api.QueryShard); s != "" {
		k, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return name, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("%s=%q: a shard number", api.QueryShard, s)}
		}
		name.Shard = int(k)
	}
	switch d := q.Get(api.QueryDelta); d {
	case "", "false":
	case "true":
		name.Delta = true
	default:
		return name, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("%s=%q: true or false", api.QueryDelta, d)}
	}
	return name, nil
}

func (a *server) latestCRL(w http.ResponseWriter, r *http.Request, _ peer) {
	name, err := crlName(r)
	if err != nil {
		a.failEarly(w, r, err)
		return
	}
	der, err := a.eng.LatestCRL(name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Write(der)
}

func (a *server) signCRL(w http.ResponseWriter, r *http.Request, p peer) {
	if !emptyBody(w, r) {
		return
	}
	name, err := crlName(r)
	if err != nil {
		a.failEarly(w, r, err)
		return
	}
	der, err := a.eng.SignCRL(r.Context(), p.actor(), name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.WriteHeader(http.StatusCreated)
	w.Write(der)
}

func (a *server) statistics(w http.ResponseWriter, r *http.Request, _ peer) {
	month := r.PathValue("month")
	stats, err := a.eng.Statistics(month)
	switch {
	case engine.CodeOf(err) == api.CodeBadRequest:
		// The engine records no read: a month that is not one is refused
		// here, and audited as api.refused.
		a.failEarly(w, r, err)
		return
	case err != nil:
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.Statistics{Month: month, Profiles: stats})
}

// exportAudit streams an audit bundle. The status is sent with the
// bundle's first line, so an error found before it is an ordinary error
// answer; one after it cuts the bundle short, which its verifier reports.
func (a *server) exportAudit(w http.ResponseWriter, r *http.Request, p peer) {
	var q api.ExportRequest
	body := bufio.NewReader(r.Body)
	if _, err := body.Peek(1); err != io.EOF { // no body: the whole log
		r.Body = io.NopCloser(body)
		if !decode(w, r, &q) {
			return
		}
	}
	// A whole log takes longer to send than any other answer.
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(a.exportTimeout)); err != nil {
		a.log.Warn("audit export: write deadline", "err", err)
	}
	bw := &bundleWriter{w: w}
	x, err := a.eng.ExportAudit(r.Context(), p.actor(), q.Since, q.Until, bw)
	switch {
	case err != nil && !bw.started:
		a.fail(w, r, err)
	case err != nil:
		a.log.Error("audit export cut short", "uid", p.UID, "err", err)
	default:
		a.log.Info("audit exported", "uid", p.UID, "first", x.First, "last", x.Last, "bytes", x.Bytes)
	}
}

// bundleWriter sends the headers of a bundle answer with its first bytes.
type bundleWriter struct {
	w       http.ResponseWriter
	started bool
}

func (b *bundleWriter) Write(p []byte) (int, error) {
	if !b.started {
		b.started = true
		b.w.Header().Set("Content-Type", "application/x-ndjson")
		b.w.Header().Set("Content-Disposition", `attachment; filename="audit-bundle.jsonl"`)
		b.w.WriteHeader(http.StatusOK)
	}
	return b.w.Write(p)
}

// health answers 200 "ok" while signerd can sign and record, and 503
// "degraded" with the reason while the HSM does not sign or the store
// takes no write (failing, or stalled). The answer waits on neither.
func (a *server) health(w http.ResponseWriter, _ *http.Request, _ peer) {
	h, s := a.eng.HSM(), a.eng.Store()
	answer := api.Health{Status: api.HealthOK, QueueDepth: a.eng.Queue().Depth(),
		HSM:   api.HSMHealth{Up: h.Up, Since: h.Since, Error: h.Error},
		Store: api.StoreHealth{Writable: s.Writable, Since: s.Since, Error: s.Error}}
	failing := a.eng.CRLFailures()
	for _, f := range failing {
		answer.CRLFailing = append(answer.CRLFailing, api.CRLFailure{Issuer: f.Name.Issuer, Shard: f.Name.Shard, Delta: f.Name.Delta, Publishing: f.Publishing,
			Since: f.Since, Attempts: f.Attempts, Error: f.Error, Expires: f.Expires})
	}
	switch {
	case !h.Up:
		answer.Code, answer.Message = api.CodeHSMUnavailable, fmt.Sprintf("HSM unavailable since %s: %s", h.Since.Format(time.RFC3339), h.Error)
	case !s.Writable:
		answer.Code, answer.Message = api.CodeStoreUnavailable, fmt.Sprintf("store takes no write since %s: %s", s.Since.Format(time.RFC3339), s.Error)
	case len(failing) > 0:
		f := failing[0]
		answer.Code = f.Code
		if answer.Code.Status() < 500 {
			answer.Code = api.CodeInternal // a failing schedule is signerd's problem, whatever refused it
		}
		answer.Message = fmt.Sprintf("%d CRL series failing; %s since %s (%d attempts): %s", len(failing), f.Name, f.Since.Format(time.RFC3339), f.Attempts, f.Error)
	default:
		writeJSON(w, http.StatusOK, answer)
		return
	}
	// Shaped as an error too, so clients that read only code and message
	// (signerctl) say why. It is a report, not a refusal: not audited, so
	// that it never waits on a store whose writes have stalled.
	if rec, ok := w.(*recorder); ok {
		rec.audited = true
	}
	answer.Status = api.HealthDegraded
	writeJSON(w, answer.Code.Status(), answer)
}

// decode reads exactly one JSON object with no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, api.CodeMediaType, "send application/json")
		return false
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, next := dec.Token(); next != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, api.CodeBodyTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
		} else {
			writeError(w, api.CodeMalformedJSON, "body: "+err.Error())
		}
		return false
	}
	return true
}

// noBody refuses, and audits, a body on a route that takes none (GET):
// before the RA signature is checked, so that whatever is not signed is
// not served either.
func (a *server) noBody(w http.ResponseWriter, r *http.Request, p peer) bool {
	n, err := r.Body.Read(make([]byte, 1))
	if n == 0 && (err == io.EOF || err == nil && r.ContentLength == 0) {
		r.Body = http.NoBody
		return true
	}
	msg := "this route takes no body"
	if err != nil && err != io.EOF {
		msg += ": " + err.Error()
	}
	a.refuse(w, r, p, api.CodeMalformedJSON, msg, string(api.CodeMalformedJSON)+": "+msg)
	return false
}

// emptyBody refuses a body on routes that take none.
func emptyBody(w http.ResponseWriter, r *http.Request) bool {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil || n > 0 {
		writeError(w, api.CodeMalformedJSON, "this route takes no body")
		return false
	}
	return true
}

func pathSerial(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	s, err := hex.DecodeString(r.PathValue("serial"))
	if err != nil || len(s) == 0 || len(s) > 20 {
		writeError(w, api.CodeBadRequest, "serial: 1..20 bytes in hex")
		return nil, false
	}
	return s, true
}

// fail answers an error of the engine, which has recorded what it
// refused: the route does not audit it again.
func (a *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if rec, ok := w.(*recorder); ok {
		rec.audited = true
	}
	a.failEarly(w, r, err)
}

// failEarly answers an error found before the engine saw the request (a
// field that is not PEM, an unknown revocation reason: an api.Error), or
// one of the engine's: for the first the engine has recorded nothing, so
// the route audits it as api.refused.
func (a *server) failEarly(w http.ResponseWriter, r *http.Request, err error) {
	var code api.Code
	var msg string
	var ee *engine.Error
	var ae *api.Error
	switch {
	case errors.As(err, &ee):
		code, msg = ee.Code, ee.Message
	case errors.As(err, &ae):
		code, msg = ae.Code, ae.Message
	default:
		// The caller went away (context cancelled) or something unforeseen.
		a.log.Error("request failed", "path", r.URL.Path, "err", err)
		writeError(w, api.CodeInternal, "internal error; see the signerd log")
		return
	}
	if code.Status() >= 500 {
		a.log.Error("request failed", "path", r.URL.Path, "code", code, "err", msg)
	}
	writeError(w, code, msg)
}

// writeError answers code, with its status and, where a retry soon may
// succeed, Retry-After (clock_backwards is a 503 too, but a clock behind
// the last signing time does not catch up in a second: an operator must
// set it, clock.alarm).
func writeError(w http.ResponseWriter, code api.Code, msg string) {
	if rec, ok := w.(*recorder); ok {
		rec.code, rec.message = string(code), msg
	}
	if code.RetryAfter() {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, code.Status(), api.Error{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
