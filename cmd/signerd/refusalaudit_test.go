package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"signerd/api"
	"signerd/audit"
	"signerd/store"
)

// exportedEvent is an event of an audit bundle, with its bytes as stored.
type exportedEvent struct {
	store.Event
	raw []byte
}

// exportAudit exports the whole audit log as the auditor, checks the
// bundle against the CA's root and returns its events.
func (d *daemonProc) exportAudit(t *testing.T) []exportedEvent {
	t.Helper()
	r := d.curlAs(t, auditorUID, "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "{}",
		"http://signerd/v1/audit/export")
	if r.status != http.StatusOK {
		t.Fatalf("audit export: %d %s", r.status, r.body)
	}
	if rep := audit.Verify(r.body, audit.Options{Root: d.ca.Root}); !rep.OK() {
		t.Fatalf("audit bundle: %v", rep.Problems)
	}
	lines := bytes.Split(bytes.TrimSuffix(r.body, []byte("\n")), []byte("\n"))
	events := make([]exportedEvent, 0, len(lines)-1)
	for _, line := range lines[1:] {
		ev := exportedEvent{raw: line}
		if err := json.Unmarshal(line, &ev.Event); err != nil {
			t.Fatalf("bundle line %q: %v", line, err)
		}
		events = append(events, ev)
	}
	return events
}

// flood makes requests 0 to n-1 with send from four goroutines over at
// most four connections, as a client in a hurry would; the first error
// send returns fails the test.
func (d *daemonProc) flood(t *testing.T, n int, send func(client *http.Client, i int) error) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 4, MaxIdleConnsPerHost: 4,
		DialContext: d.client().Transport.(*http.Transport).DialContext}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if err := send(client, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// reasonCode is the stable code an event's reason starts with.
func reasonCode(ev store.Event) string {
	code, _, _ := strings.Cut(ev.Reason, ":")
	return code
}

// refusalCount is how many refusals an api.refused event stands for: one,
// or the N of an aggregate's reason "CODE: count=N".
func refusalCount(t *testing.T, ev store.Event) int {
	t.Helper()
	_, n, ok := strings.Cut(ev.Reason, ": count=")
	if !ok || ev.Detail == "" {
		return 1
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		t.Fatalf("aggregate refusal event %d: reason %q", ev.Seq, ev.Reason)
	}
	return count
}

// TestRefusalsAreAudited does each thing signerd refuses before its engine
// sees the request (and the refusals of peers without a role or outside
// it), then exports the audit log as the auditor and finds, for each, one
// api.refused event naming the peer, the request and the code.
func TestRefusalsAreAudited(t *testing.T) {
	const maxConns = 2
	d := newDaemonProc(t, "")
	d.editConfig(t, "  mode: \"0666\"\n", fmt.Sprintf("  mode: \"0666\"\n  max_connections_per_uid: %d\n", maxConns))
	d.start(t)
	ra := os.Getuid()
	notPEM := `{"request_id":"np-%s","profile":"person-sign","subject":{"CN":"a"},"%s":"MIIB"}`
	tests := []struct {
		name       string
		uid        int
		do         func(t *testing.T) reply
		status     int
		code, role string
		object     string
	}{
		{name: "CSR not PEM", uid: ra, role: roleRA, status: 400, code: "malformed_csr", object: "POST /v1/certificates",
			do: func(t *testing.T) reply {
				return d.call(t, "POST", "/v1/certificates", fmt.Sprintf(notPEM, "csr", "csr"))
			}},
		{name: "public key not PEM", uid: ra, role: roleRA, status: 400, code: "malformed_public_key", object: "POST /v1/certificates/0a/renew",
			do: func(t *testing.T) reply {
				return d.call(t, "POST", "/v1/certificates/0a/renew", fmt.Sprintf(notPEM, "key", "public_key"))
			}},
		{name: "bad revocation reason", uid: ra, role: roleRA, status: 400, code: "bad_request", object: "POST /v1/certificates/0b/revoke",
			do: func(t *testing.T) reply {
				return d.call(t, "POST", "/v1/certificates/0b/revoke", `{"reason":"bored"}`)
			}},
		{name: "no such route", uid: ra, role: roleRA, status: 404, code: string(api.CodeNoRoute), object: "GET /v2/everything",
			do: func(t *testing.T) reply { return d.call(t, "GET", "/v2/everything", "") }},
		{name: "wrong method", uid: ra, role: roleRA, status: 405, code: string(api.CodeMethod), object: "DELETE /v1/certificates/01",
			do: func(t *testing.T) reply { return d.call(t, "DELETE", "/v1/certificates/01", "") }},
		{name: "no such route, unknown peer", uid: strangerUID, status: 404, code: string(api.CodeNoRoute), object: "GET /etc/passwd",
			do: func(t *testing.T) reply { return d.callAs(t, strangerUID, "GET", "/etc/passwd") }},
		{name: "wrong method, unknown peer", uid: strangerUID, status: 405, code: string(api.CodeMethod), object: "PUT /v1/crl",
			do: func(t *testing.T) reply { return d.callAs(t, strangerUID, "PUT", "/v1/crl") }},
		{name: "route, unknown peer", uid: strangerUID, status: 403, code: string(api.CodeUnknownPeer), object: "GET /v1/crl",
			do: func(t *testing.T) reply { return d.callAs(t, strangerUID, "GET", "/v1/crl") }},
		{name: "route outside the role", uid: operatorUID, role: roleOperator, status: 403, code: string(api.CodeForbidden), object: "GET /v1/crl",
			do: func(t *testing.T) reply { return d.callAs(t, operatorUID, "GET", "/v1/crl") }},
		{name: "too many connections", uid: ra, role: roleRA, status: 503, code: string(api.CodeTooManyConnections), object: "connection",
			do: func(t *testing.T) reply {
				release := d.holdConnections(t, maxConns)
				r := d.call(t, "GET", "/v1/crl", "")
				release()
				d.awaitConnections(t, 0)
				return r
			}},
	}
	for _, tt := range tests {
		want(t, tt.name, tt.do(t), tt.status, tt.code)
	}
	events := d.exportAudit(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var found []store.Event
			for _, ev := range events {
				if ev.Actor.UID == tt.uid && ev.Outcome == store.OutcomeRefused && reasonCode(ev.Event) == tt.code {
					found = append(found, ev.Event)
				}
			}
			if len(found) != 1 {
				t.Fatalf("%d refused events of uid %d with code %s, want 1: %+v", len(found), tt.uid, tt.code, found)
			}
			ev := found[0]
			gid := tt.uid // curl runs with gid = uid
			if tt.uid == ra {
				gid = os.Getgid()
			}
			if ev.Action != "api.refused" || ev.Object != tt.object || ev.Actor.Role != tt.role || ev.Actor.GID != gid {
				t.Errorf("refusal event %+v, want api.refused of %q by uid %d gid %d (role %q)", ev, tt.object, tt.uid, gid, tt.role)
			}
		})
	}
}

// floodPath is a request path of n bytes under prefix.
func floodPath(prefix string, n int) string {
	return prefix + strings.Repeat("a", n-len(prefix))
}

// TestRefusalFloodIsBounded floods signerd with refused requests that carry
// paths of 16 KiB: from a peer without a role (on a route and off one),
// from a role outside its routes, and with connections over the peer's
// cap. The audit log grows by a few small events (aggregates that count
// the refusals), not by an event per request, and the export still
// accounts for every refusal.
func TestRefusalFloodIsBounded(t *testing.T) {
	const (
		maxConns   = 16
		perRoute   = 1000 // role-less requests on a route, and as many off routes
		forbidden  = 300  // the operator's requests outside its role
		overCap    = 200  // connections over the cap
		pathLength = 16000
		window     = 10 * time.Second // signerd's default refusal_window
		maxEvent   = 1024             // bytes of a stored refusal event, at most
	)
	d := newDaemonProc(t, "")
	// The test's own uid holds no role: it is the stranger here.
	d.editConfig(t, fmt.Sprintf("  ra: {uids: [%d]}\n", os.Getuid()), "  ra: {uids: [4242]}\n")
	d.editConfig(t, "  mode: \"0666\"\n", fmt.Sprintf("  mode: \"0666\"\n  max_connections_per_uid: %d\n", maxConns))
	d.start(t)
	stranger := os.Getuid()
	before := d.exportAudit(t)
	fi, err := os.Stat(d.store)
	if err != nil {
		t.Fatal(err)
	}
	sizeBefore := fi.Size()

	began := time.Now()
	d.flood(t, 2*perRoute, func(client *http.Client, i int) error {
		path := floodPath("/v1/certificates/", pathLength)
		if i%2 == 1 {
			path = floodPath("/v9/", pathLength)
		}
		resp, err := client.Get("http://signerd" + path)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 && resp.StatusCode != 404 {
			return fmt.Errorf("flood request %d: %d %.200s", i, resp.StatusCode, body)
		}
		return nil
	})
	// The operator, a role holder, asks for what is not its own, on one
	// connection.
	urls := new(strings.Builder)
	for range forbidden {
		fmt.Fprintf(urls, "url = \"http://signerd%s\"\noutput = \"/dev/null\"\n", floodPath("/v1/statistics/", pathLength))
	}
	curlCfg := filepath.Join(d.dir, "forbidden.curl")
	if err := os.WriteFile(curlCfg, []byte(urls.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("curl", "-sS", "--unix-socket", d.socket, "-w", "%{http_code}\n", "-K", curlCfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: operatorUID, Gid: operatorUID}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl as the operator: %v", err)
	}
	if got := strings.Count(string(out), "403\n"); got != forbidden {
		t.Fatalf("the operator's flood: %d of %d answered 403", got, forbidden)
	}
	// Connections over the cap.
	release := d.holdConnections(t, maxConns)
	for i := range overCap {
		if r := d.call(t, "GET", floodPath("/v1/crl/", pathLength), ""); r.status != 503 || r.code != string(api.CodeTooManyConnections) {
			t.Fatalf("connection %d over the cap: %d %s", i, r.status, r.body)
		}
	}
	release()
	m := d.metrics(t)
	for sample, v := range map[string]float64{
		fmt.Sprintf(`signerd_refusals_total{code="unknown_peer",uid="%d"}`, stranger):         perRoute,
		fmt.Sprintf(`signerd_refusals_total{code="no_such_route",uid="%d"}`, stranger):        perRoute,
		fmt.Sprintf(`signerd_refusals_total{code="forbidden",uid="%d"}`, operatorUID):         forbidden,
		fmt.Sprintf(`signerd_refusals_total{code="too_many_connections",uid="%d"}`, stranger): overCap,
	} {
		if got, ok := m[sample]; !ok || got != v {
			t.Errorf("metrics: %s = %v (exposed %v), want %v", sample, got, ok, v)
		}
	}
	// What is still counted in memory is written at shutdown.
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	elapsed := time.Since(began)
	fi, err = os.Stat(d.store)
	if err != nil {
		t.Fatal(err)
	}
	grown := fi.Size() - sizeBefore
	d.start(t)
	var events []exportedEvent
	for _, ev := range d.exportAudit(t) {
		if ev.Seq > before[len(before)-1].Seq {
			events = append(events, ev)
		}
	}

	type key struct {
		uid  int
		code string
	}
	counts, written := map[key]int{}, map[key]int{}
	oversize, uncut, stopped := 0, 0, false
	cut := fmt.Sprintf("… (cut from %d bytes, sha256 %x)", len("GET ")+pathLength, sha256.Sum256([]byte("GET "+floodPath("/v1/certificates/", pathLength))))
	for _, ev := range events {
		if ev.Action == "signerd.stop" {
			stopped = true
		}
		if ev.Action != "api.refused" {
			continue
		}
		if stopped {
			t.Errorf("refusal event %d after signerd.stop", ev.Seq)
		}
		k := key{ev.Actor.UID, reasonCode(ev.Event)}
		if k == (key{stranger, string(api.CodeUnknownPeer)}) && !strings.HasSuffix(ev.Object, cut) {
			if uncut++; uncut == 1 {
				t.Errorf("refusal event %d: object %.200q…, want it cut and ending %q", ev.Seq, ev.Object, cut)
			}
		}
		counts[k] += refusalCount(t, ev.Event)
		written[k]++
		if len(ev.raw) > maxEvent {
			if oversize++; oversize == 1 {
				t.Errorf("refusal event %d is %d bytes stored: %.200s…", ev.Seq, len(ev.raw), ev.raw)
			}
		}
	}
	if oversize > 0 {
		t.Errorf("%d refusal events over %d bytes", oversize, maxEvent)
	}
	// Per peer and code: the first refusal, then at most an aggregate per
	// window, and one more for a window cut short by an idle one.
	bound := 2 * (int(elapsed/window) + 2)
	t.Logf("%v: refusal events %v for refusals %v; store grew %d bytes", elapsed.Round(time.Millisecond), written, counts, grown)
	for k, n := range map[key]int{{stranger, string(api.CodeUnknownPeer)}: perRoute, {stranger, string(api.CodeNoRoute)}: perRoute,
		{operatorUID, string(api.CodeForbidden)}: forbidden, {stranger, string(api.CodeTooManyConnections)}: overCap} {
		if counts[k] != n {
			t.Errorf("uid %d %s: the audit log accounts for %d refusals, want %d", k.uid, k.code, counts[k], n)
		}
		if written[k] > bound {
			t.Errorf("uid %d %s: %d events for %d refusals in %v, want at most %d", k.uid, k.code, written[k], n, elapsed, bound)
		}
	}
	if grown > 1<<20 {
		t.Errorf("the store grew %d bytes under the flood", grown)
	}
}

// TestRefusalAggregatesEachWindow: refusals counted in memory are written
// when their window ends, not only at shutdown.
func TestRefusalAggregatesEachWindow(t *testing.T) {
	const refused = 50
	d := newDaemonProc(t, "audit: {refusal_window: 2s}\n")
	d.editConfig(t, fmt.Sprintf("  ra: {uids: [%d]}\n", os.Getuid()), "  ra: {uids: [4242]}\n")
	d.start(t)
	d.flood(t, refused, func(client *http.Client, i int) error {
		resp, err := client.Get("http://signerd/v1/crl")
		if err != nil {
			return err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if r := parseReply(resp.StatusCode, raw); r.status != 403 || r.code != string(api.CodeUnknownPeer) {
			return fmt.Errorf("no role, request %d: %d %q, want 403 %q\n%s", i, r.status, r.code, string(api.CodeUnknownPeer), r.body)
		}
		return nil
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		total, written := 0, 0
		for _, ev := range d.exportAudit(t) {
			if ev.Action == "api.refused" && ev.Actor.UID == os.Getuid() {
				total += refusalCount(t, ev.Event)
				written++
			}
		}
		if total == refused {
			t.Logf("%d refusals written as %d events", refused, written)
			if written == refused {
				t.Errorf("%d refusals written one by one", refused)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the audit log accounts for %d of %d refusals while signerd runs", total, refused)
		}
	}
}
