package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/store"
)

// TestClockResetKeepsRequestAcceptedByRightClock: with max_skew 2m and
// the clock right, an RA request dated 90 s ahead (the RA's clock fast)
// is accepted. Then only the last signing time runs an hour ahead and
// signerd is restarted with --acknowledge-clock-reset. The captured
// request, sent again byte for byte, stays refused replayed_request: the
// reset lowers replay marks no further than the clock plus max_skew, past
// every date a right clock accepted, and it lowered none here.
func TestClockResetKeepsRequestAcceptedByRightClock(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra, other := d.issueFor(t, "ra-cert", "ra-sign"), d.issueFor(t, "ra-cert-other", "ra-sign")
	raKey, raSerial := ra.key, ra.serials[0]
	otherKey, otherSerial := other.key, other.serials[0]
	target := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "victim", "person-sign"))).Serial
	d.restartWith(t, "ra_signatures: {required: true, max_skew: 2m}\n")
	hold := signRADated(t, raKey, raSerial, "POST", "/v1/certificates/"+target+"/hold", "", time.Now().Add(90*time.Second))
	want(t, "the hold dated 90 s ahead, the clock right", d.send(t, hold), http.StatusOK, "")
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}

	// The clock ran an hour ahead for a moment and something was signed;
	// no RA request was accepted meanwhile.
	d.editStore(t, func(tx *store.Tx) error { return tx.NoteSigningTime(time.Now().Add(time.Hour)) })
	d.args = []string{"--acknowledge-clock-reset", "Li Wei, operator: NTP served a time 1h ahead for a minute, corrected, ticket 4713"}
	d.start(t)
	// Another RA releases the hold, so the replayed hold would act.
	want(t, "restore by another RA", d.send(t, signRADated(t, otherKey, otherSerial, "POST", "/v1/certificates/"+target+"/restore", "", time.Now())),
		http.StatusOK, "")
	want(t, "the captured hold sent again after the reset", d.send(t, hold), http.StatusUnauthorized, string(api.CodeReplayed))
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	resets := d.storeEvents(t, "clock.reset.acknowledged")
	if len(resets) != 1 || !strings.Contains(resets[0].Reason, "0 RA replay marks after the clock plus max_skew 2m0s") {
		t.Errorf("clock.reset.acknowledged events %+v: want one lowering no RA replay mark", resets)
	}
}
