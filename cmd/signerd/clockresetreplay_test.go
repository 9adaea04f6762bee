package main

import (
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"signerd/api"
	"signerd/store"
)

// TestClockResetLowersRAReplayMarks: while the clock ran 100 days ahead
// an RA's signed request was accepted, so its replay mark in the store is
// 100 days ahead (and the last signing time with it). After the clock is
// corrected and signerd restarted with --acknowledge-clock-reset, the
// RA's freshly signed requests are not refused replayed_request for 100
// days: the reset lowered the mark, in its transaction, to the clock plus
// max_skew (2m), and its event names the RA certificate. The cost of the
// skew: a fresh request dated at the clock is refused as a possible
// replay (a right clock may have accepted one dated up to max_skew
// ahead), one dated max_skew ahead (an RA whose clock is fast, or any RA
// once max_skew has passed) is taken.
func TestClockResetLowersRAReplayMarks(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := d.issueFor(t, "ra-cert", "ra-sign")
	raKey, raSerial := ra.key, ra.serials[0]
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	appendFile(t, d.config, "ra_signatures: {required: true, max_skew: 2m}\n")

	// What the run with the clock ahead left: a request dated then was
	// accepted, the mark raised past it, something signed.
	ahead := time.Now().UTC().Truncate(time.Second).AddDate(0, 0, 100)
	serial, _ := hex.DecodeString(raSerial)
	d.editStore(t, func(tx *store.Tx) error {
		if err := tx.RaiseRAReplayMark(serial, ahead.Add(time.Second)); err != nil {
			return err
		}
		return tx.NoteSigningTime(ahead)
	})

	const statement = "Li Wei, operator: NTP served a date 100 days ahead, corrected, ticket 4712"
	d.args = []string{"--acknowledge-clock-reset", statement}
	d.start(t)
	const maxSkew = 2 * time.Minute
	now := issueBody(t, "dated-at-the-clock", "person-sign")
	want(t, "the RA's fresh request dated at the clock, within max_skew of the reset",
		d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", now, now, time.Now()), http.StatusUnauthorized, string(api.CodeReplayed))
	issue := issueBody(t, "after-reset", "person-sign")
	want(t, "the RA's fresh request dated max_skew ahead, after the lowered mark",
		d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", issue, issue, time.Now().Add(maxSkew)), http.StatusCreated, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	resets := d.storeEvents(t, "clock.reset.acknowledged")
	if len(resets) != 1 || !strings.Contains(resets[0].Reason, "1 RA replay marks after the clock plus max_skew 2m0s") ||
		!strings.Contains(strings.ToLower(resets[0].Reason), strings.ToLower(raSerial)) {
		t.Errorf("clock.reset.acknowledged events %+v: want one counting the lowered RA replay mark and naming %s", resets, raSerial)
	}
}
