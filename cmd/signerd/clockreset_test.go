package main

import (
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"signerd/store"
)

// storeEvents returns the audit events with action from the stopped
// daemon's store.
func (d *daemonProc) storeEvents(t *testing.T, action string) []store.Event {
	t.Helper()
	st := d.openStopped(t)
	defer st.Close()
	var out []store.Event
	for _, ev := range events(t, st) {
		if ev.Action == action {
			out = append(out, ev)
		}
	}
	return out
}

// editStore runs edit in a write transaction on the stopped daemon's store.
func (d *daemonProc) editStore(t *testing.T, edit func(tx *store.Tx) error) {
	t.Helper()
	st, err := store.Open(d.store)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(edit); err != nil {
		t.Fatal(err)
	}
}

// TestAcknowledgeClockResetFlag: a store whose last signing time and one
// hold were stamped by a clock 100 days ahead, since corrected. signerd
// starts, says in its log what to do, and refuses keyCompromise with
// clock_backwards; restarted with --acknowledge-clock-reset it records the
// statement with the last signing time and the clock
// (clock.reset.acknowledged), and revocation, restore and CRL signing
// work again.
func TestAcknowledgeClockResetFlag(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	held := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "cr-held", "person-sign")))
	compromised := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "cr-compromised", "person-sign")))
	want(t, "hold", d.call(t, "POST", "/v1/certificates/"+held.Serial+"/hold", ""), http.StatusOK, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}

	ahead := time.Now().UTC().Truncate(time.Second).AddDate(0, 0, 100)
	serial, _ := hex.DecodeString(held.Serial)
	d.editStore(t, func(tx *store.Tx) error {
		c, err := tx.Certificate(serial)
		if err != nil {
			return err
		}
		c.RevokedAt = ahead // the hold as the clock that ran ahead stamped it
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		return tx.NoteSigningTime(ahead)
	})

	d.start(t)
	revoke := func() reply {
		return d.call(t, "POST", "/v1/certificates/"+compromised.Serial+"/revoke", `{"reason":"keyCompromise"}`)
	}
	want(t, "keyCompromise with the clock behind, no acknowledgement", revoke(), http.StatusServiceUnavailable, "clock_backwards")
	d.stop(t)
	if !strings.Contains(d.log.String(), `--acknowledge-clock-reset \"who, why\"`) {
		t.Errorf("the log does not name --acknowledge-clock-reset:\n%s", d.log)
	}

	const statement = "Li Wei, operator: NTP served a date 100 days ahead, corrected, ticket 4711"
	d.args = []string{"--acknowledge-clock-reset", statement}
	d.start(t)
	want(t, "keyCompromise after the acknowledged reset", revoke(), http.StatusOK, "")
	want(t, "restore after the acknowledged reset", d.call(t, "POST", "/v1/certificates/"+held.Serial+"/restore", ""), http.StatusOK, "")
	want(t, "CRL after the acknowledged reset", d.callAs(t, operatorUID, "POST", "/v1/crl"), http.StatusCreated, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	resets := d.storeEvents(t, "clock.reset.acknowledged")
	if len(resets) != 1 || resets[0].Detail != statement || !strings.Contains(resets[0].Reason, "last signing time "+ahead.Format(time.RFC3339)) ||
		!strings.Contains(resets[0].Reason, "clock reads ") {
		t.Fatalf("clock.reset.acknowledged events %+v: want one with the statement, the last signing time and the clock", resets)
	}
}
