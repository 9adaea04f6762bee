package main

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"signerd/ocsp"
)

// responder answers OCSP requests (RFC 6960 over HTTP, RFC 5019's
// profile) from pre-signed responses. It signs nothing.
type responder struct {
	issuers    issuers
	source     source
	maxRequest int
	now        func() time.Time
	log        *slog.Logger

	lastErrorLog atomic.Int64 // unix seconds: errors are logged at most once a second
	counts       counts
}

// counts are logged when the responder stops.
type counts struct {
	good, notModified, unauthorized, malformed, stale, unavailable, internal atomic.Uint64
}

const contentTypeResponse = "application/ocsp-response"

// isGETPath reports whether p (escaped, after the leading /) can be a
// GET request at all: base64 in either alphabet, percent-escaped or not.
// Any other path is not ours (404), rather than a malformed request.
func isGETPath(p string) bool {
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '+', c == '/', c == '=', c == '%', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

func (r *responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var der []byte
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		p, _ := strings.CutPrefix(req.URL.EscapedPath(), "/")
		if req.URL.RawQuery != "" || !isGETPath(p) {
			http.NotFound(w, req)
			return
		}
		// Every octet of the request may come percent-escaped.
		if len(p) > 3*base64.StdEncoding.EncodedLen(r.maxRequest) {
			r.fail(w, ocsp.MalformedRequest)
			return
		}
		var err error
		if der, err = ocsp.DecodeGET(p); err != nil || len(der) > r.maxRequest {
			r.fail(w, ocsp.MalformedRequest)
			return
		}
	case http.MethodPost:
		if req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/ocsp-request" {
			http.Error(w, "Content-Type must be application/ocsp-request", http.StatusUnsupportedMediaType)
			return
		}
		// An oversize request is answered malformedRequest, as OCSP
		// clients read the status from the body; the rest of its body is
		// not read, so the connection is closed after the answer.
		if req.ContentLength > int64(r.maxRequest) {
			w.Header().Set("Connection", "close")
			r.fail(w, ocsp.MalformedRequest)
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, int64(r.maxRequest)+1))
		if err != nil || len(body) > r.maxRequest {
			w.Header().Set("Connection", "close")
			r.fail(w, ocsp.MalformedRequest)
			return
		}
		der = body
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	ids, err := ocsp.ParseRequest(der)
	switch {
	case errors.Is(err, ocsp.ErrHashAlgorithm):
		// A CertID hashed with an algorithm no issuer is served under
		// names no issuer this responder serves.
		r.fail(w, ocsp.Unauthorized)
		return
	case err != nil, len(ids) != 1:
		// RFC 5019 §2.1.1: one request per OCSPRequest; a pre-signed
		// response answers one certificate.
		r.fail(w, ocsp.MalformedRequest)
		return
	}
	issuer := r.issuers.lookup(ids[0])
	if issuer == "" {
		r.fail(w, ocsp.Unauthorized)
		return
	}
	resp, err := r.source.response(req.Context(), issuer, ids[0].Serial)
	if errors.Is(err, errUnavailable) {
		// The store is down or slow: the client may ask again, and the
		// log says why.
		r.counts.unavailable.Add(1)
		r.logError("source unavailable", err, "issuer", issuer)
		r.fail(w, ocsp.TryLater)
		return
	}
	if err != nil {
		r.logError("reading a response", err, "issuer", issuer)
		r.fail(w, ocsp.InternalError)
		return
	}
	if resp == nil {
		r.fail(w, ocsp.Unauthorized)
		return
	}
	now := r.now()
	if !now.Before(resp.times.NextUpdate) {
		// Stale: RFC 5019 §2.2.4 forbids serving it. The responder does
		// serve this issuer and a response for this certificate exists,
		// so "unauthorized" (not ours, or unknown to us) would be false;
		// signerd has not refreshed it in time, which tryLater says and
		// the log shows.
		r.counts.stale.Add(1)
		r.logError("stale response", errors.New("past its nextUpdate"), "issuer", issuer, "serial", ids[0].Serial, "next_update", resp.times.NextUpdate)
		r.fail(w, ocsp.TryLater)
		return
	}
	r.serve(w, req, resp, now)
}

// serve writes a successful response: for a GET with RFC 5019 §6.2's
// caching headers, and 304 to a conditional GET whose ETag matches; a
// POST answer is not cacheable (RFC 5019 §5) and carries none.
func (r *responder) serve(w http.ResponseWriter, req *http.Request, resp *response, now time.Time) {
	h := w.Header()
	h["Content-Type"] = []string{contentTypeResponse}
	if req.Method != http.MethodPost {
		maxAge := int64(resp.times.NextUpdate.Sub(now) / time.Second)
		h["Cache-Control"] = []string{"max-age=" + strconv.FormatInt(maxAge, 10) + ", public, no-transform, must-revalidate"}
		h["Last-Modified"] = []string{resp.lastModified}
		h["Expires"] = []string{resp.expires}
		h["Etag"] = []string{resp.etag}
		if notModified(req, resp) {
			r.counts.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	} else {
		h["Cache-Control"] = []string{"no-store"}
	}
	h["Content-Length"] = []string{strconv.Itoa(len(resp.der))}
	r.counts.good.Add(1)
	w.WriteHeader(http.StatusOK)
	if req.Method != http.MethodHead {
		w.Write(resp.der)
	}
}

// notModified: If-None-Match decides (RFC 9110 §13.2.2); If-Modified-Since
// alone never does.
func notModified(req *http.Request, resp *response) bool {
	if inm := req.Header.Values("If-None-Match"); len(inm) > 0 {
		for _, v := range inm {
			for _, tag := range strings.Split(v, ",") {
				tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
				if tag == "*" || tag == resp.etag {
					return true
				}
			}
		}
		return false
	}
	// If-Modified-Since alone is never answered 304: thisUpdate has
	// seconds, and a certificate issued and revoked within one second has
	// two responses of one Last-Modified; a cache holding the first would
	// keep "good".
	return false
}

// fail answers with an unsigned OCSP error response (RFC 6960 §4.2.1),
// HTTP 200 as OCSP clients expect, never cached: the status it reports
// may change at the next publication.
func (r *responder) fail(w http.ResponseWriter, status ocsp.ResponseStatus) {
	switch status {
	case ocsp.Unauthorized:
		r.counts.unauthorized.Add(1)
	case ocsp.MalformedRequest:
		r.counts.malformed.Add(1)
	case ocsp.InternalError:
		r.counts.internal.Add(1)
	}
	body := ocsp.ErrorResponse(status)
	h := w.Header()
	h["Content-Type"] = []string{contentTypeResponse}
	h["Cache-Control"] = []string{"no-store"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// logError logs at most once a second: a failing disk or a refresh that
// stopped would otherwise log once per request.
func (r *responder) logError(msg string, err error, args ...any) {
	now := time.Now().Unix()
	last := r.lastErrorLog.Load()
	if now <= last || !r.lastErrorLog.CompareAndSwap(last, now) {
		return
	}
	r.log.Error(msg, append(args, "err", err)...)
}
