package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"signerd/api"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// vmRSS is a process's resident memory in KiB.
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kib
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// awaitConnections waits until signerd counts n connections open for the
// test's own uid: the kernel completes a connection before signerd
// accepts it, and signerd releases one a moment after the client sees it
// closed.
func (d *daemonProc) awaitConnections(t *testing.T, n int) {
	t.Helper()
	sample := fmt.Sprintf(`signerd_connections_open{uid="%d"}`, os.Getuid())
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, ok := d.metrics(t)[sample] // absent until signerd accepts one
		if ok && got == float64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %d", sample, got, n)
		}
	}
}

// holdConnections opens n idle connections as the test's uid, once
// signerd counts none open (start's own probe let go), and waits until it
// counts all n; release closes them.
func (d *daemonProc) holdConnections(t *testing.T, n int) (release func()) {
	t.Helper()
	d.awaitConnections(t, 0)
	var held []net.Conn
	for range n {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	d.awaitConnections(t, n)
	return func() {
		for _, c := range held {
			c.Close()
		}
	}
}

// TestHostileClientsAreBounded: a uid that holds idle and half-sent
// connections exhausts only its own share (the next is refused with
// too_many_connections) while other uids are served; oversize headers get
// 431; a burst beyond the queue gets busy, never anything else, and every
// busy request succeeds when retried; memory stays bounded throughout.
func TestHostileClientsAreBounded(t *testing.T) {
	const maxConns = 32
	d := newDaemonProc(t, "queue: {size: 1, batch: 1}\n")
	d.editConfig(t, "  mode: \"0666\"\n", fmt.Sprintf("  mode: \"0666\"\n  max_connections_per_uid: %d\n", maxConns))
	d.start(t)
	pid := d.cmd.Process.Pid
	rssStart := vmRSS(t, pid)
	refused := fmt.Sprintf(`signerd_connections_refused_total{uid="%d"}`, os.Getuid())
	d.awaitConnections(t, 0) // start's own probe connection is let go

	// The RA's uid fills its share: connections that never send, and
	// requests that stop half way through a large body.
	var held []net.Conn
	for i := range maxConns {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if i%2 == 1 {
			fmt.Fprintf(c, "POST /v1/certificates HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				maxBody, strings.Repeat("A", maxBody-100))
		}
	}
	d.awaitConnections(t, maxConns)
	want(t, "one connection over the share", d.call(t, "GET", "/v1/health", ""), 503, string(api.CodeTooManyConnections))
	if n := d.metric(t, refused); n != 1 {
		t.Errorf("%s = %v, want 1", refused, n)
	}
	want(t, "another uid meanwhile", d.callAs(t, operatorUID, "GET", "/v1/health"), 200, "")
	for _, c := range held {
		c.Close()
	}
	// Its share comes back as signerd sees the connections close.
	body := issueBody(t, "after-flood", "person-sign")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := d.call(t, "POST", "/v1/certificates", body)
		if r.code == string(api.CodeTooManyConnections) && time.Now().Before(deadline) {
			continue
		}
		want(t, "the RA once it let go", r, 201, "")
		break
	}

	// Headers over 16 KiB.
	c, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /v1/crl HTTP/1.1\r\nHost: s\r\nX-Padding: %s\r\n\r\n", strings.Repeat("p", 20<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("oversize header: %v", err)
	}
	resp.Body.Close()
	c.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversize header: %d, want 431", resp.StatusCode)
	}

	// A burst far beyond the queue's bound of one, within the uid's share.
	d.awaitConnections(t, 0)
	const burst = maxConns - 2
	bodies := make([]string, burst)
	for i := range bodies {
		bodies[i] = issueBody(t, fmt.Sprintf("burst-%d", i), "person-sign")
	}
	answers := make([]reply, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() { answers[i] = d.call(t, "POST", "/v1/certificates", bodies[i]) })
	}
	wg.Wait()
	d.awaitConnections(t, 0) // the retries below are then within the share
	busy := 0
	for i, r := range answers {
		switch {
		case r.status == 201:
		case r.status == 503 && r.code == "busy":
			busy++
			want(t, "retry after busy", d.call(t, "POST", "/v1/certificates", bodies[i]), 201, "")
		default:
			t.Errorf("burst request %d: %d %s", i, r.status, r.body)
		}
	}
	t.Logf("burst of %d on a queue of 1: %d busy, all issued on retry", burst, busy)
	if busy == 0 {
		t.Errorf("a burst of %d on a queue of 1 was never told busy", burst)
	}
	rssEnd := vmRSS(t, pid)
	t.Logf("signerd VmRSS %d KiB at start, %d KiB after the floods", rssStart, rssEnd)
	if grown := rssEnd - rssStart; grown > 64<<10 {
		t.Errorf("signerd grew %d KiB under hostile clients", grown)
	}
}
