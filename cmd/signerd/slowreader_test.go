package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"signerd/api"
	"signerd/audit"
	"signerd/store"
)

// callWithin is one RA request that must be answered within limit; a
// request still unanswered then is an error, not a hang of the test.
func (d *daemonProc) callWithin(limit time.Duration, method, path, body string) (reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://signerd"+path, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client().Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return parseReply(resp.StatusCode, raw), nil
}

// padAuditLog appends n events of size bytes each to the audit log of the
// store at path (signerd not running), as a CA's ceremony transcripts
// would, so that an export of it outgrows every socket buffer. The file
// is left no larger than bbolt's doubling makes it (no map reserved
// ahead), so that signerd soon has to grow it.
func padAuditLog(t *testing.T, path string, n, size int) {
	t.Helper()
	st, err := store.OpenWith(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	detail := strings.Repeat("transcript line\n", size/16)
	for i := range n {
		if err := st.Update(func(tx *store.Tx) error {
			_, err := tx.Append(store.Event{Actor: store.System, Action: "test.padding", Object: fmt.Sprint(i),
				Outcome: store.OutcomeOK, Detail: detail})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// stalledExport starts an audit export on a raw connection that never
// reads (as a client piping into a pager would), and returns once signerd
// has begun to send the bundle.
func (d *daemonProc) stalledExport(t *testing.T) *net.UnixConn {
	t.Helper()
	return d.stalledPost(t, "/v1/audit/export")
}

// stalledPost POSTs to path with no body on a raw connection that never
// reads (a 1 KiB receive buffer), and returns once signerd has begun to
// send the answer.
func (d *daemonProc) stalledPost(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadBuffer(1024); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: signerd\r\nContent-Length: 0\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		queued := 0
		raw.Control(func(fd uintptr) { queued, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if err != nil {
			t.Fatal(err)
		}
		if queued > 0 {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("signerd sent nothing of POST %s in 30s", path)
		}
	}
}

// fileSize is the size of the file at path, 0 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// issueRun is how a run of issuance went.
type issueRun struct {
	issued     int
	took       time.Duration
	lastSerial string
	err        error // the first failure, after which the run stopped
}

func (i issueRun) String() string {
	return fmt.Sprintf("%d certificates in %v (%.0f/s)", i.issued, i.took.Round(time.Millisecond), float64(i.issued)/i.took.Seconds())
}

// issueUntil issues from 4 concurrent RA connections, each request with
// its own deadline, until enough (told how many have been issued, from
// one goroutine) says so or a request fails.
func (d *daemonProc) issueUntil(t *testing.T, prefix string, deadline time.Duration, enough func(issued int) bool) issueRun {
	t.Helper()
	const workers = 4
	var (
		mu  sync.Mutex
		out issueRun
		wg  sync.WaitGroup
	)
	stopped := func() bool { mu.Lock(); defer mu.Unlock(); return out.err != nil || enough(out.issued) }
	bodies := make(chan string, workers)
	go func() {
		defer close(bodies)
		for i := 0; !stopped(); i++ {
			bodies <- issueBody(t, fmt.Sprintf("%s-%d", prefix, i), "person-sign")
		}
	}()
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for body := range bodies {
				r, err := d.callWithin(deadline, "POST", "/v1/certificates", body)
				if err == nil && r.status != 201 {
					err = fmt.Errorf("%d %s", r.status, r.body)
				}
				var v api.Certificate
				json.Unmarshal(r.body, &v)
				mu.Lock()
				if err != nil && out.err == nil {
					out.err = err
				} else if err == nil {
					out.issued++
					out.lastSerial = v.Serial
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out.took = time.Since(start)
	return out
}

// TestSlowAuditorCannotStallIssuance: an auditor's export that the
// auditor stops reading (signerctl audit export | less) leaves issuance,
// status and revocation answered while the store file grows, and the
// bundle, read at last, verifies and ends where it began. It holds with
// the default memory map, and with none reserved ahead, where each growth
// of the file remaps it: the export holds no read transaction while it
// waits on its client.
func TestSlowAuditorCannotStallIssuance(t *testing.T) {
	// With the default map, bbolt grows the file 16 MiB at a time, so
	// whether a few thousand certificates make it grow depends on how the
	// batches fell; with none reserved the file doubles from small and
	// must grow, remapping.
	for _, tt := range []struct {
		name, store string
		mustGrow    bool
	}{
		{"default map", "", false},
		{"no map reserved", "initial_mmap_size: 0", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testSlowAuditor(t, tt.store, tt.mustGrow) })
	}
}

// testSlowAuditor runs TestSlowAuditorCannotStallIssuance with storeCfg
// added to the store's config.
func testSlowAuditor(t *testing.T, storeCfg string, mustGrow bool) {
	const (
		answerWithin = 20 * time.Second // an issuance slower than this has hung
		maxIssued    = 3000             // the store must grow well before
	)
	d := newDaemonProc(t, "")
	// The test's own uid is an auditor too, so a raw connection of its
	// own can export.
	d.editConfig(t, fmt.Sprintf("auditor: {uids: [%d]}", auditorUID), fmt.Sprintf("auditor: {uids: [%d, %d]}", auditorUID, os.Getuid()))
	if storeCfg != "" {
		d.editConfig(t, "store: "+d.store+"\n", fmt.Sprintf("store: {path: %s, %s}\n", d.store, storeCfg))
	}
	padAuditLog(t, d.store, 320, 4096)
	d.start(t)
	want(t, "first issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "before", "person-sign")), 201, "")
	auditor := d.stalledExport(t)
	before := fileSize(d.store)
	var grown int64
	during := d.issueUntil(t, "during", answerWithin, func(n int) bool {
		if n >= maxIssued {
			return true
		}
		if size := fileSize(d.store); size > before && grown == 0 {
			grown = size
		}
		return n >= 200 && (grown != 0 || !mustGrow)
	})
	if during.err != nil {
		h := d.callAs(t, operatorUID, "GET", "/v1/health")
		t.Fatalf("issue while an export stood still (after %d issued, store %d bytes): %v\nhealth meanwhile: %d %s",
			during.issued, fileSize(d.store), during.err, h.status, h.body)
	}
	if grown == 0 && mustGrow {
		t.Fatalf("the store did not grow past %d bytes in %d issuances", before, during.issued)
	}
	t.Logf("issued %s while an export stood still; the store grew from %d to %d bytes", during, before, grown)
	lastCert := during.lastSerial
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/certificates/" + lastCert, ""},
		{"POST", "/v1/certificates/" + lastCert + "/revoke", `{"reason":"superseded"}`},
	} {
		r, err := d.callWithin(answerWithin, c.method, c.path, c.body)
		if err != nil || r.status != 200 {
			t.Fatalf("%s %s while an export stood still: %d %s %v", c.method, c.path, r.status, r.body, err)
		}
	}
	if h := d.callAs(t, operatorUID, "GET", "/v1/health"); h.status != 200 {
		t.Errorf("health: %d %s", h.status, h.body)
	}

	// The auditor reads at last: the bundle is whole, verifies, and ends
	// with the seal made for it, before everything issued meanwhile.
	reading := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(auditor), nil)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the bundle: %v", err)
	}
	read := time.Since(reading)
	t.Logf("the auditor then read the %d-byte bundle's rest in %v (%.1f MB/s)", len(bundle), read.Round(time.Millisecond), float64(len(bundle))/read.Seconds()/1e6)
	if len(bundle) < 1<<20 {
		t.Fatalf("the bundle is %d bytes: too small to fill the socket's buffers, so its export never stood still", len(bundle))
	}
	rep := audit.Verify(bundle, audit.Options{Root: d.ca.Root})
	if resp.StatusCode != 200 || !rep.OK() || !rep.Anchored {
		t.Fatalf("the stalled export: %d, %d bytes, problems %v", resp.StatusCode, len(bundle), rep.Problems)
	}
	last := rep.Events[len(rep.Events)-1].Event
	if last.Action != "audit.seal" || !strings.HasPrefix(last.Reason, "audit export") || rep.Header.First != 1 {
		t.Fatalf("the stalled export covers %d..%d and ends with %+v", rep.Header.First, rep.Header.Last, last)
	}

	// The same issuance with no export in progress, for comparison.
	after := d.issueUntil(t, "after", answerWithin, func(n int) bool { return n >= 200 })
	if after.err != nil {
		t.Fatal(after.err)
	}
	t.Logf("issued %s with no export in progress", after)
}
