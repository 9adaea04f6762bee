package main

import (
	"net/http"
	"testing"
	"time"

	"signerd/api"
	"signerd/store"
)

// TestClockBackwardsIsNotRetried: with the clock behind the last signing
// time signerd refuses to sign with 503 clock_backwards, and the answer
// does not invite a retry: no Retry-After (a clock that is behind does not
// catch up in a second; an operator must set it), and the code is not
// retryable.
func TestClockBackwardsIsNotRetried(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "before", "device-sign")), http.StatusCreated, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	// The store remembers a signing time an hour ahead: to signerd, its
	// clock now reads an hour behind.
	d.editStore(t, func(tx *store.Tx) error { return tx.NoteSigningTime(time.Now().Add(time.Hour)) })
	d.start(t)
	r, h := d.callHeaders(t, "POST", "/v1/certificates", issueBody(t, "behind", "device-sign"))
	want(t, "issue with the clock behind", r, http.StatusServiceUnavailable, string(api.CodeClockBackwards))
	if ra := h.Get("Retry-After"); ra != "" {
		t.Errorf("clock_backwards answered with Retry-After %q: an RA would retry at once, again and again", ra)
	}
	if api.CodeClockBackwards.Retryable() {
		t.Errorf("clock_backwards is marked retryable")
	}
}
