package ocsp_test

import (
	"testing"
	"time"

	"signerd/hsm"
	"signerd/ocsp"
)

func TestResponseTimes(t *testing.T) {
	p := newPKI(t, hsm.SM2)
	this := time.Now().Add(-time.Minute).Truncate(time.Second).UTC()
	next := this.Add(36 * time.Hour)
	for _, signer := range []string{"issuer", "delegated"} {
		iss := p.ca
		if signer == "delegated" {
			iss = p.responder
		}
		der := p.sign(t, iss, ocsp.Single{Status: ocsp.Good, ThisUpdate: this, NextUpdate: next}, ocsp.SHA256)
		got, err := ocsp.ResponseTimes(der)
		if err != nil {
			t.Fatalf("%s: %v", signer, err)
		}
		if !got.ThisUpdate.Equal(this) || !got.NextUpdate.Equal(next) || got.ProducedAt.IsZero() || time.Since(got.ProducedAt) > time.Hour {
			t.Errorf("%s: %+v; want thisUpdate %v, nextUpdate %v", signer, got, this, next)
		}
		// Every truncation is refused, not misread.
		for n := range len(der) {
			if _, err := ocsp.ResponseTimes(der[:n]); err == nil {
				t.Fatalf("%s: truncated to %d octets: read", signer, n)
			}
		}
	}
	for _, status := range []ocsp.ResponseStatus{ocsp.MalformedRequest, ocsp.Unauthorized} {
		if _, err := ocsp.ResponseTimes(ocsp.ErrorResponse(status)); err == nil {
			t.Errorf("error response %d read as successful", status)
		}
	}
}
