package main

import (
	"bufio"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"signerd/api"
	"signerd/audit"
)

// rawRequest sends raw bytes on a connection of its own and returns the
// answer's status line.
func (d *daemonProc) rawRequest(t *testing.T, raw string) string {
	t.Helper()
	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return strings.TrimSpace(line)
}

// TestOddRequestsAreRefusedAndAudited: requests Go's HTTP server or
// ServeMux would answer themselves ("OPTIONS *" with 200, a path that is
// not clean with a redirect) are refused as no route and audited; so are
// an RA's status of signerd's own certificate and an auditor's statistics
// for a month that is not one.
func TestOddRequestsAreRefusedAndAudited(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := os.Getuid()
	bundle := d.callAs(t, auditorUID, "POST", "/v1/audit/export")
	rep := audit.Verify(bundle.body, audit.Options{Root: d.ca.Root})
	if len(rep.Keys) == 0 {
		t.Fatalf("no audit key certificate in the bundle: %v", rep.Problems)
	}
	own := hex.EncodeToString(rep.Keys[0].SerialNumber.Bytes())
	odd := []string{"OPTIONS *", "GET //v1/health", "GET /v1/./health", "GET /v1/x/../crl"}
	for _, req := range odd {
		if got := d.rawRequest(t, req+" HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"); got != "HTTP/1.1 404 Not Found" {
			t.Errorf("%s: %q, want 404", req, got)
		}
	}
	want(t, "status of the audit key's certificate", d.call(t, "GET", "/v1/certificates/"+own, ""), http.StatusNotFound, "not_found")
	want(t, "statistics for month 13", d.callAs(t, auditorUID, "GET", "/v1/statistics/2026-13"), http.StatusBadRequest, "bad_request")
	// Tallies are written at shutdown.
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	d.start(t)
	noRoute, objects := 0, map[string]bool{}
	ownStatus, badMonth := false, false
	for _, ev := range d.exportAudit(t) {
		if ev.Seq <= rep.Header.Last {
			continue
		}
		switch {
		case ev.Action == "api.refused" && ev.Actor.UID == ra && reasonCode(ev.Event) == string(api.CodeNoRoute):
			noRoute += refusalCount(t, ev.Event)
			objects[ev.Object] = true
		case ev.Action == "certificate.status" && ev.Actor.UID == ra:
			ownStatus = ev.Outcome == "refused" && ev.Object == own && strings.HasPrefix(ev.Reason, "not_found: signerd's own certificate")
		case ev.Action == "api.refused" && ev.Actor.UID == auditorUID && reasonCode(ev.Event) == "bad_request":
			badMonth = ev.Object == "GET /v1/statistics/2026-13"
		}
	}
	if noRoute != len(odd) || !objects["OPTIONS *"] {
		t.Errorf("%d of %d odd requests audited as no_such_route (objects %v)", noRoute, len(odd), objects)
	}
	if !ownStatus {
		t.Error("the status of signerd's own certificate is not audited as certificate.status refused")
	}
	if !badMonth {
		t.Error("statistics for month 13 is not audited as api.refused bad_request")
	}
}
