package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestEngineRefusalFloodIsTallied: an RA (a role holder, so its requests
// reach the engine) sends a few thousand requests the engine refuses:
// issues with an unknown profile, revocations of a serial that does not
// exist. They are tallied like the daemon's own refusals: a bounded
// number of certificate.issue and certificate.revoke refused events,
// whose counts add up to exactly the requests sent, the last ones written
// at shutdown.
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
	d.flood(t, refused, func(client *http.Client, i int) error {
		path, body, code := "/v1/certificates", fmt.Sprintf(`{"request_id":"flood-%d","profile":"no-such-profile"}`, i), "unknown_profile"
		if i%2 == 1 {
			path, body, code = "/v1/certificates/7e7e/revoke", `{"reason":"keyCompromise"}`, "not_found"
		}
		resp, err := client.Post("http://signerd"+path, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if r := parseReply(resp.StatusCode, raw); r.code != code {
			return fmt.Errorf("flood request %d: %d %.200s", i, r.status, r.body)
		}
		return nil
	})
	// What is still counted is written at shutdown.
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	elapsed := time.Since(began)
	d.start(t)
	type tally struct{ counted, written, first int }
	tallies := map[string]*tally{"certificate.issue": {}, "certificate.revoke": {}}
	stopped := false
	for _, ev := range d.exportAudit(t) {
		if ev.Seq <= before[len(before)-1].Seq {
			continue
		}
		if ev.Action == "signerd.stop" {
			stopped = true
		}
		tl := tallies[ev.Action]
		if tl == nil || ev.Actor.UID != ra {
			continue
		}
		if code := reasonCode(ev.Event); ev.Outcome != "refused" || (code != "unknown_profile" && code != "not_found") {
			t.Errorf("event %d: %s %s %q, want refused", ev.Seq, ev.Action, ev.Outcome, ev.Reason)
		}
		if stopped {
			t.Errorf("refusal event %d after signerd.stop", ev.Seq)
		}
		if n := refusalCount(t, ev.Event); n == 1 && ev.Detail == "" {
			tl.first++ // written at once, with the request it refused
			if !strings.HasPrefix(ev.Object, "request flood-") && ev.Object != "7e7e" {
				t.Errorf("first refusal event %d: object %q, want the request id or serial", ev.Seq, ev.Object)
			}
		}
		tl.counted += refusalCount(t, ev.Event)
		tl.written++
	}
	// The first refusal, then at most an aggregate per window, and one
	// more for a window cut short by an idle one.
	bound := 2 * (int(elapsed/window) + 2)
	for action, tl := range tallies {
		t.Logf("%s: %d refusals in %v written as %d events (%d written at once)", action, refused/2, elapsed.Round(time.Millisecond), tl.written, tl.first)
		if tl.counted != refused/2 {
			t.Errorf("%s: the audit log accounts for %d refusals, want %d", action, tl.counted, refused/2)
		}
		if tl.written > bound || tl.first == 0 {
			t.Errorf("%s: %d refusals written as %d events (%d at once), want 1..%d", action, refused/2, tl.written, tl.first, bound)
		}
	}
}
