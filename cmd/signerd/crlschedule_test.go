package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/engine/enginetest"
)

// TestScheduledShardCRLsPublished: signerd, a real process with 2 CRL
// shards and a publication directory, signs and publishes every shard's
// CRL with no operator action, lists a revocation on the certificate's
// own shard within after_revocation, serves the published bytes on
// GET /v1/crl, refuses malformed CRL queries with 400, and refuses to
// start with another shard count once certificates name their shard.
func TestScheduledShardCRLsPublished(t *testing.T) {
	pub := filepath.Join(t.TempDir(), "publish")
	if err := os.Mkdir(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	d := newDaemonProc(t, fmt.Sprintf("crl: {interval: 4s, validity: 10s, after_revocation: 1s}\npublish: {dir: %s, keep: 2}\n", pub))
	const url = "http://crl.example.gov.cn/ca/{shard}.crl"
	certLine := "    certificate: " + filepath.Join(d.dir, "issuing.pem") + "\n"
	d.editConfig(t, certLine, certLine+"    crl: {shards: 2, url: \""+url+"\"}\n")
	d.start(t)
	ski := hex.EncodeToString(d.ca.Cert.SubjectKeyId)
	published := func(k int) []byte {
		der, _ := os.ReadFile(filepath.Join(pub, ski, fmt.Sprintf("%d.crl", k)))
		return der
	}
	waitUntil(t, 30*time.Second, "both shards published", func() bool { return published(0) != nil && published(1) != nil })

	view := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "sched-1", "person-sign")))
	serial, _ := hex.DecodeString(view.Serial)
	k := crl.Shard(serial, 2)
	want(t, "revoke", d.call(t, "POST", "/v1/certificates/"+view.Serial+"/revoke", `{"reason":"keyCompromise"}`), http.StatusOK, "")
	var listing *smx509.RevocationList
	waitUntil(t, 30*time.Second, "the revocation published on its shard", func() bool {
		l, err := smx509.ParseRevocationList(published(k))
		if err != nil {
			return false
		}
		for _, e := range l.RevokedCertificateEntries {
			if bytes.Equal(e.SerialNumber.Bytes(), serial) {
				listing = l
				return true
			}
		}
		return false
	})
	enginetest.OpenSSLVerifySigned(t, d.ca.Cert, listing.Raw)
	if other, err := smx509.ParseRevocationList(published(1 - k)); err != nil || len(other.RevokedCertificateEntries) != 0 {
		t.Errorf("the other shard lists %d entries (%v), want none", len(other.RevokedCertificateEntries), err)
	}
	r := d.call(t, "GET", fmt.Sprintf("/v1/crl?shard=%d", k), "")
	want(t, "GET /v1/crl?shard", r, http.StatusOK, "")
	if !bytes.Equal(r.body, published(k)) {
		// The schedule may have signed the next between the two reads.
		if l, err := smx509.ParseRevocationList(r.body); err != nil || l.Number.Cmp(listing.Number) < 0 {
			t.Errorf("GET /v1/crl?shard=%d answers other bytes than the published CRL (%v)", k, err)
		}
	}
	for _, q := range []struct {
		query, code string
		status      int
	}{
		{"shard=x", "bad_request", http.StatusBadRequest},
		{"shard=-1", "bad_request", http.StatusBadRequest},
		{"shard=2", "not_found", http.StatusNotFound},
		{"delta=maybe", "bad_request", http.StatusBadRequest},
		{"delta=true", "not_found", http.StatusNotFound}, // no crl.delta_interval
	} {
		want(t, "GET /v1/crl?"+q.query, d.call(t, "GET", "/v1/crl?"+q.query, ""), q.status, q.code)
	}
	want(t, "health", d.callAs(t, operatorUID, "GET", "/v1/health"), http.StatusOK, "")

	// Numbered copies: at most keep (2) of each series stay, however
	// many were signed: wait for a fourth number (the interval is 4 s),
	// then count.
	numbers := map[string]bool{}
	waitUntil(t, 30*time.Second, "four CRLs of the shard", func() bool {
		if l, err := smx509.ParseRevocationList(published(k)); err == nil {
			numbers[l.Number.String()] = true
		}
		return len(numbers) >= 4
	})
	if m, _ := filepath.Glob(filepath.Join(pub, ski, fmt.Sprintf("%d-*.crl", k))); len(m) != 2 {
		t.Errorf("%d numbered copies of shard %d after %d CRLs, want keep = 2: %v", len(m), k, len(numbers), m)
	}

	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	d.editConfig(t, "crl: {shards: 2,", "crl: {shards: 4,")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, signerdBin, "--config", d.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "fixed once certificates exist") {
		t.Fatalf("start with 4 shards after certificates named 2: %v\n%s", err, out)
	}
}
