package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/store"
)

// TestClockResetLowersRAReplayMarks: while the clock ran 100 days ahead
// an RA's signed request was accepted, so its replay mark in the store is
// 100 days ahead (and the last signing time with it). After the clock is
// corrected and signerd restarted with --acknowledge-clock-reset, the
// RA's freshly signed requests are accepted at once, not refused
// replayed_request for 100 days: the reset lowered the mark to just
// before the clock (a request dated at the clock's second is taken),
// in its transaction, and its event names the RA certificate. A request
// dated before the clock is still refused as a possible replay.
func TestClockResetLowersRAReplayMarks(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	raKey, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{}, raKey)
	body, _ := json.Marshal(map[string]any{"request_id": "ra-cert", "profile": "ra-sign",
		"subject": map[string]string{"CN": "RA 前台 07", "O": "某市政务服务中心"}, "csr": pemCSR(csr)})
	raSerial := certView(t, d.call(t, "POST", "/v1/certificates", string(body))).Serial
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	appendFile(t, d.config, "ra_signatures: {required: true, max_skew: 2m}\n")

	// What the run with the clock ahead left: a request dated then was
	// accepted, the mark raised past it, something signed.
	ahead := time.Now().UTC().Truncate(time.Second).AddDate(0, 0, 100)
	serial, _ := hex.DecodeString(raSerial)
	st, err := store.Open(d.store)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(func(tx *store.Tx) error {
		if err := tx.RaiseRAReplayMark(serial, ahead.Add(time.Second)); err != nil {
			return err
		}
		return tx.NoteSigningTime(ahead)
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	const statement = "Li Wei, operator: NTP served a date 100 days ahead, corrected, ticket 4712"
	d.args = []string{"--acknowledge-clock-reset", statement}
	d.start(t)
	started := time.Now()
	issue := issueBody(t, "after-reset", "person-sign")
	want(t, "the RA's fresh request after the acknowledged reset",
		d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", issue, issue, time.Now()), http.StatusCreated, "")
	early := issueBody(t, "dated-before-reset", "person-sign")
	want(t, "a request dated before the clock at the reset",
		d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", early, early, started.Add(-time.Minute)), http.StatusUnauthorized, codeReplayed)
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	resets := d.storeEvents(t, "clock.reset.acknowledged")
	if len(resets) != 1 || !strings.Contains(resets[0].Reason, "1 RA replay marks at or after it lowered to just before it") ||
		!strings.Contains(strings.ToLower(resets[0].Reason), strings.ToLower(raSerial)) {
		t.Errorf("clock.reset.acknowledged events %+v: want one counting the lowered RA replay mark and naming %s", resets, raSerial)
	}
}
