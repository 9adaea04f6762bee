package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEngineRefusalFloodIsTallied: an RA (a role holder, so its requests
// reach the engine) sends a few thousand issues the engine refuses
// (unknown_profile). They are tallied like the daemon's own refusals: a
// bounded number of certificate.issue refused events, whose counts add up
// to exactly the requests sent, the last ones written at shutdown.
func TestEngineRefusalFloodIsTallied(t *testing.T) {
	const (
		refused = 2000
		window  = 10 * time.Second // signerd's default refusal_window
	)
	d := newDaemonProc(t, "")
	d.start(t)
	ra := os.Getuid()
	before := d.exportAudit(t)
	began := time.Now()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 4, MaxIdleConnsPerHost: 4,
		DialContext: d.client().Transport.(*http.Transport).DialContext}}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < refused; i += 4 {
				body := fmt.Sprintf(`{"request_id":"flood-%d","profile":"no-such-profile"}`, i)
				resp, err := client.Post("http://signerd/v1/certificates", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if r := parseReply(resp.StatusCode, raw); r.status != http.StatusBadRequest || r.code != "unknown_profile" {
					errs <- fmt.Errorf("flood request %d: %d %.200s", i, r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	client.CloseIdleConnections()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// What is still counted is written at shutdown.
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	elapsed := time.Since(began)
	d.start(t)
	counted, written, first, stopped := 0, 0, 0, false
	for _, ev := range d.exportAudit(t) {
		if ev.Seq <= before[len(before)-1].Seq {
			continue
		}
		if ev.Action == "signerd.stop" {
			stopped = true
		}
		if ev.Action != "certificate.issue" || ev.Actor.UID != ra {
			continue
		}
		if ev.Outcome != "refused" || reasonCode(ev.Event) != "unknown_profile" {
			t.Errorf("event %d: %s %q, want refused unknown_profile", ev.Seq, ev.Outcome, ev.Reason)
		}
		if stopped {
			t.Errorf("refusal event %d after signerd.stop", ev.Seq)
		}
		if n := refusalCount(t, ev.Event); n == 1 && ev.Detail == "" {
			first++ // written at once, with the request it refused
			if !strings.HasPrefix(ev.Object, "request flood-") {
				t.Errorf("first refusal event %d: object %q, want the request id", ev.Seq, ev.Object)
			}
		}
		counted += refusalCount(t, ev.Event)
		written++
	}
	// The first refusal, then at most an aggregate per window, and one
	// more for a window cut short by an idle one.
	bound := 2 * (int(elapsed/window) + 2)
	t.Logf("%d refused issues in %v written as %d events (%d written at once)", refused, elapsed.Round(time.Millisecond), written, first)
	if counted != refused {
		t.Errorf("the audit log accounts for %d refused issues, want %d", counted, refused)
	}
	if written > bound || first == 0 {
		t.Errorf("%d refused issues written as %d events (%d at once), want 1..%d", refused, written, first, bound)
	}
}
