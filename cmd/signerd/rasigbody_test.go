package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"signerd/api"
	"strings"
	"testing"
	"time"
)

// TestRASignatureRequiredWhateverTheBody: with ra_signatures required, no
// body gets an RA route served unsigned. A body too long to read whole is
// refused (413) before anything is served, and a GET, which takes no body,
// refuses one (400) whether it is signed or not, so what was not signed
// is never part of a served request. Each refusal is audited.
func TestRASignatureRequiredWhateverTheBody(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := d.issueFor(t, "ra-body", "ra-sign")
	victim := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "victim", "person-sign"))).Serial
	d.restartWith(t, "ra_signatures: {required: true}\n")
	want(t, "unsigned status", d.call(t, "GET", "/v1/certificates/"+victim, ""), http.StatusUnauthorized, string(api.CodeSignatureRequired))

	big := strings.Repeat("x", maxBody+1)
	revoke := "/v1/certificates/" + victim + "/revoke"
	for _, c := range []struct {
		what   string
		send   func() reply
		status int
		code   string
	}{
		{"unsigned GET status with a body over the limit", func() reply { return d.sendEarly(t, unsigned("GET", "/v1/certificates/"+victim, big)) },
			http.StatusBadRequest, string(api.CodeMalformedJSON)},
		{"unsigned GET crl with a body over the limit", func() reply { return d.sendEarly(t, unsigned("GET", "/v1/crl", big)) },
			http.StatusBadRequest, string(api.CodeMalformedJSON)},
		{"unsigned GET status with a one-byte body", func() reply { return d.call(t, "GET", "/v1/certificates/"+victim, "x") },
			http.StatusBadRequest, string(api.CodeMalformedJSON)},
		{"signed GET status with a signed body", func() reply {
			return d.send(t, signRA(t, ra.key, ra.serials[0], "GET", "/v1/certificates/"+victim, "{}"))
		}, http.StatusBadRequest, string(api.CodeMalformedJSON)},
		{"unsigned revoke with a body over the limit", func() reply { return d.sendEarly(t, unsigned("POST", revoke, big)) },
			http.StatusRequestEntityTooLarge, string(api.CodeBodyTooLarge)},
		{"signed revoke with a body over the limit", func() reply { return d.sendEarly(t, signRA(t, ra.key, ra.serials[0], "POST", revoke, big)) },
			http.StatusRequestEntityTooLarge, string(api.CodeBodyTooLarge)},
	} {
		want(t, c.what, c.send(), c.status, c.code)
	}
	if s := certView(t, d.sendFresh(t, ra, "GET", "/v1/certificates/"+victim)).Status; s != "good" {
		t.Fatalf("victim after the refused requests: %s", s)
	}
	refused := map[string]bool{}
	for _, ev := range d.exportAudit(t) {
		if ev.Action == actionRefused && ev.Actor.UID == os.Getuid() {
			refused[reasonCode(ev.Event)] = true
		}
	}
	for _, code := range []string{string(api.CodeMalformedJSON), string(api.CodeBodyTooLarge)} {
		if !refused[code] {
			t.Errorf("no %s event for the RA's refused requests (got %v)", code, refused)
		}
	}
}

// unsigned is a request with a JSON body and no signature.
func unsigned(method, path, body string) capturedRequest {
	return capturedRequest{method: method, path: path, body: body, header: http.Header{"Content-Type": {"application/json"}}}
}

// sendEarly sends c on a connection of its own and reads the answer while
// the body is still being written: signerd answers a body it refuses
// unread and closes the connection, so an HTTP client still writing would
// report a broken pipe instead of the answer.
func (d *daemonProc) sendEarly(t *testing.T, c capturedRequest) reply {
	t.Helper()
	req, err := http.NewRequest(c.method, "http://signerd"+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = c.header.Clone()
	conn, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	go req.Write(conn) // its error is the broken pipe this avoids
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseReply(resp.StatusCode, raw)
}
