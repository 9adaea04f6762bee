package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/publish"
)

func hostileSetup(t *testing.T, limits string) (*running, []byte, []byte) {
	t.Helper()
	ca := newCA(t, hsm.SM2, "SM2 CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{0x21}
	der := ca.sign(t, good(serial, time.Hour), ocsp.SHA1)
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: der})
	r := startResponder(t, dirConfig(pub, ca)+limits)
	return r, requestDER(t, certID(t, ca, serial, ocsp.SHA1)), der
}

// freshGET asks on a connection of its own.
func freshGET(r *running, path string) ([]byte, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(r.url() + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Slowloris clients, each dribbling its request's head a byte at a time,
// do not hold up other clients, and lose their connections once
// limits.timeouts.read_header has passed.
func TestSlowlorisDoesNotStallOthers(t *testing.T) {
	r, req, der := hostileSetup(t, "limits: {max_connections: 8, timeouts: {read_header: 1s}}\n")
	const slow = 4
	var wg sync.WaitGroup
	cut := make(chan error, slow)
	stopDribbling := make(chan struct{})
	for range slow {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			head := []byte("GET " + getPath(req) + " HTTP/1.1\r\nHost: x\r\nX-Slow: " + string(bytes.Repeat([]byte{'a'}, 10000)))
			for _, b := range head {
				select {
				case <-stopDribbling:
					cut <- nil
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Write([]byte{b}); err != nil {
					cut <- err // the responder closed it
					return
				}
			}
			cut <- nil
		}()
	}
	for i := range 50 {
		got, err := freshGET(r, getPath(req))
		if err != nil || !bytes.Equal(got, der) {
			t.Fatalf("request %d beside the slow clients: %v, %x", i, err, got)
		}
	}
	// Each slow client is cut once read_header has passed; the test's own
	// bound is only against a hang.
	deadline := time.After(time.Minute)
	for i := range slow {
		select {
		case err := <-cut:
			if err == nil {
				t.Errorf("slow client %d was never cut off", i)
			}
		case <-deadline:
			close(stopDribbling)
			t.Fatalf("slow clients still connected after a minute, with read_header 1s")
		}
	}
	wg.Wait()
}

// With max_connections held by clients that send nothing, another
// connection is closed unanswered, and is served again once one of them
// goes away.
func TestConnectionCap(t *testing.T) {
	r, req, der := hostileSetup(t, "limits: {max_connections: 4, timeouts: {read_header: 1m, idle: 1m}}\n")
	var idle []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// The responder accepts in order: the fifth is accepted after the
	// four, over the cap, and closed without an answer.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("GET " + getPath(req) + " HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Closed with the request unread: a reset, or an end of file if the
	// close came before the request.
	if b, err := io.ReadAll(bufio.NewReader(c)); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("fifth connection: %q, %v; want closed unanswered", b, err)
	}
	c.Close()
	idle[0].Close()
	for i := 0; ; i++ {
		got, err := freshGET(r, getPath(req))
		if err == nil && bytes.Equal(got, der) {
			break
		}
		if i == 100 {
			t.Fatalf("no slot freed after an idle client left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stop(t)
	if !bytes.Contains([]byte(r.logText()), []byte(`"connections_refused":`)) || bytes.Contains([]byte(r.logText()), []byte(`"connections_refused":0`)) {
		t.Errorf("refusals not counted:\n%s", r.logText())
	}
}
