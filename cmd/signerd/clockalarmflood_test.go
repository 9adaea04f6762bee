package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/store"
)

// TestClockAlarmFloodTallied: with signerd's clock behind the last signing
// time, an RA repeating a revocation 200 times is refused clock_backwards
// each time; the audit log gets one clock.alarm for the episode and the
// RA's refusals tallied under its uid and certificate.revoke (the first at
// once, the rest as one count at shutdown), not an event per request.
func TestClockAlarmFloodTallied(t *testing.T) {
	// A window longer than the flood takes, so its tally is one count
	// whatever the machine's speed.
	d := newDaemonProc(t, "audit: {refusal_window: 1h}\n")
	d.start(t)
	c := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "victim", "device-sign")))
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	d.editStore(t, func(tx *store.Tx) error { return tx.NoteSigningTime(time.Now().Add(time.Hour)) })
	d.start(t)
	const n = 200
	for i := range n {
		r := d.call(t, "POST", "/v1/certificates/"+c.Serial+"/revoke", `{"reason":"unspecified"}`)
		if r.status != http.StatusServiceUnavailable || r.code != string(api.CodeClockBackwards) {
			t.Fatalf("revoke %d with the clock behind: %d %q, want 503 %s", i, r.status, r.code, api.CodeClockBackwards)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	alarms := d.storeEvents(t, "clock.alarm")
	refused := d.storeEvents(t, "certificate.revoke")
	t.Logf("%d revocations with the clock behind: %d clock.alarm events, %d certificate.revoke events", n, len(alarms), len(refused))
	if len(alarms) != 1 || alarms[0].Actor.Role != store.System.Role {
		t.Errorf("clock.alarm events %+v, want one of the system's", alarms)
	}
	if len(refused) != 2 {
		t.Fatalf("certificate.revoke events %+v, want 2 (the first refusal, then the count)", refused)
	}
	for _, ev := range refused {
		if ev.Outcome != store.OutcomeRefused || ev.Actor.Role != "ra" || ev.Object != c.Serial ||
			!strings.Contains(ev.Reason, string(api.CodeClockBackwards)) {
			t.Errorf("refusal event %+v, want the RA's refused revocation of %s, clock_backwards", ev, c.Serial)
		}
	}
	if !strings.Contains(refused[1].Reason, "count=199") {
		t.Errorf("tally %q, want count=199", refused[1].Reason)
	}
}
