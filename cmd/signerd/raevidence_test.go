package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"signerd/api"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/sm3"
)

// TestRequestTargetBounded: a request-target over maxRequestTarget is
// refused with 414 uri_too_long on every route, for every role, before its
// signature is looked at or the engine sees it, and the refusal is
// audited with a bounded event. One at the bound is served as usual.
// (Callers without the route's role are refused 403 first, and unknown
// routes 404, with events as bounded: TestRefusalFloodIsBounded.)
func TestRequestTargetBounded(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := d.issueFor(t, "ra-target", "ra-sign")
	pad := func(prefix string, n int) string { return prefix + strings.Repeat("p", n-len(prefix)) }
	status := "/v1/certificates/7e7e?"
	for _, c := range []struct {
		what   string
		send   func() reply
		status int
		code   string
	}{
		{"signed status at the bound", func() reply {
			return d.send(t, signRA(t, ra.key, ra.serials[0], "GET", pad(status, maxRequestTarget), ""))
		}, http.StatusNotFound, "not_found"},
		{"signed status over the bound", func() reply {
			return d.send(t, signRA(t, ra.key, ra.serials[0], "GET", pad(status, maxRequestTarget+1), ""))
		}, http.StatusRequestURITooLong, string(api.CodeURITooLong)},
		{"signed issue with a long query", func() reply {
			return d.send(t, signRA(t, ra.key, ra.serials[0], "POST", pad("/v1/certificates?", 14000), issueBody(t, "long-target", "person-sign")))
		}, http.StatusRequestURITooLong, string(api.CodeURITooLong)},
		{"operator route", func() reply { return d.callAs(t, operatorUID, "GET", pad("/v1/health?", 2000)) },
			http.StatusRequestURITooLong, string(api.CodeURITooLong)},
		{"auditor route", func() reply { return d.callAs(t, auditorUID, "GET", pad("/v1/statistics/2026-01?", 2000)) },
			http.StatusRequestURITooLong, string(api.CodeURITooLong)},
	} {
		want(t, c.what, c.send(), c.status, c.code)
	}
	seen := map[int]bool{}
	for _, ev := range d.exportAudit(t) {
		if ev.Action == actionRefused && reasonCode(ev.Event) == string(api.CodeURITooLong) {
			seen[ev.Actor.UID] = true
			if len(ev.raw) > 1024 {
				t.Errorf("uri_too_long event of %d bytes: %.200s", len(ev.raw), ev.raw)
			}
		}
		if ev.Action == "certificate.issue" && strings.Contains(string(ev.Actor.Evidence), "long-target") {
			t.Errorf("the over-long signed issue reached the engine: %.200s", ev.raw)
		}
	}
	for _, uid := range []int{os.Getuid(), operatorUID, auditorUID} {
		if !seen[uid] {
			t.Errorf("no uri_too_long event of uid %d", uid)
		}
	}
}

// TestRefusedSignedRequestKeepsBoundedEvidence: a signed request that is
// refused leaves an event whose evidence is its signature headers and the
// SM3 digest of what was signed, not the signed text (which holds the
// whole request-target); an accepted request keeps the whole text as
// before.
func TestRefusedSignedRequestKeepsBoundedEvidence(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := d.issueFor(t, "ra-evidence", "ra-sign")
	big := `{"request_id":"refused-big","profile":"` + strings.Repeat("q", 60000) + `"`
	target := "/v1/certificates?" + strings.Repeat("t", maxRequestTarget-len("/v1/certificates?"))
	refused := signRA(t, ra.key, ra.serials[0], "POST", target, big)
	want(t, "signed issue that is not JSON", d.send(t, refused), http.StatusBadRequest, string(api.CodeMalformedJSON))
	accepted := signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates", issueBody(t, "accepted-evidence", "person-sign"))
	want(t, "signed issue", d.send(t, accepted), http.StatusCreated, "")

	text := func(c capturedRequest) []byte {
		return api.SignedText(c.method, c.path, c.header.Get(api.HeaderDate), c.header.Get(api.HeaderNonce), ra.serials[0], []byte(c.body))
	}
	var gotRefused, gotAccepted bool
	for _, ev := range d.exportAudit(t) {
		if len(ev.Actor.Evidence) == 0 || ev.Actor.UID != os.Getuid() {
			continue
		}
		switch {
		case ev.Action == actionRefused && reasonCode(ev.Event) == string(api.CodeMalformedJSON):
			gotRefused = true
			t.Logf("refused signed request (%d-byte target, %d-byte body): event %d bytes, evidence %d bytes",
				len(refused.path), len(refused.body), len(ev.raw), len(ev.Actor.Evidence))
			if len(ev.Actor.Evidence) > maxRefusedEvidence {
				t.Errorf("refused signed request: evidence of %d bytes", len(ev.Actor.Evidence))
			}
			var e refusedEvidence
			if err := json.Unmarshal(ev.Actor.Evidence, &e); err != nil {
				t.Fatalf("refused evidence %s: %v", ev.Actor.Evidence, err)
			}
			h := sm3.Sum(text(refused))
			sig, _ := base64.StdEncoding.DecodeString(refused.header.Get(api.HeaderSignature))
			if e.SignedSM3 != hex.EncodeToString(h[:]) || e.Nonce != refused.header.Get(api.HeaderNonce) ||
				e.Certificate != ra.serials[0] || string(e.Signature) != string(sig) {
				t.Errorf("refused evidence does not name the request: %s", ev.Actor.Evidence)
			}
		case ev.Action == "certificate.issue" && ev.Outcome == "ok":
			var e signedEvidence
			if err := json.Unmarshal(ev.Actor.Evidence, &e); err != nil || e.Text != string(text(accepted)) {
				continue // another issue's event
			}
			gotAccepted = true
			t.Logf("accepted signed issue: event %d bytes, evidence %d bytes", len(ev.raw), len(ev.Actor.Evidence))
		}
	}
	if !gotRefused || !gotAccepted {
		t.Fatalf("events found: refused with bounded evidence %v, accepted with the signed text %v", gotRefused, gotAccepted)
	}
}
