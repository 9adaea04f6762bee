package main

import (
	"fmt"
	"testing"
	"time"
)

// TestOCSPMetricsCountResponses: every certificate issued gets a
// pre-signed response, and the metrics say so: the signed counter reaches
// the certificates issued, nothing fails, and nothing is left due.
func TestOCSPMetricsCountResponses(t *testing.T) {
	d := newDaemonProc(t, "ocsp: {validity: 1h}\n")
	d.start(t)
	const issued = 3
	for i := range issued {
		want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, fmt.Sprintf("m%d", i), "person-sign")), 201, "")
	}
	var m map[string]float64
	deadline := time.Now().Add(time.Minute)
	for {
		m = d.metrics(t)
		if m["signerd_ocsp_responses_signed_total"] >= issued && m["signerd_ocsp_due"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: signed %v, due %v (want %d signed, none due)",
				m["signerd_ocsp_responses_signed_total"], m["signerd_ocsp_due"], issued)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, ok := m["signerd_ocsp_response_failures_total"]; !ok || got != 0 {
		t.Errorf("signerd_ocsp_response_failures_total = %v (exposed %v), want 0", got, ok)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
}
