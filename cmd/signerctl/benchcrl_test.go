package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"signerd/hsm/hsmtest"
)

// TestParseCRLSigned: the schedule's CRL counts summed by kind over
// issuers, other metrics passed over, a malformed line refused.
func TestParseCRLSigned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		metrics string
		want    map[string]float64
		wantErr string
	}{
		{"none yet", "# HELP signerd_crl_signed_total CRLs\nsignerd_queue_depth 0\n", map[string]float64{}, ""},
		{"two issuers", `signerd_crl_signed_total{issuer="ab",kind="complete"} 16
signerd_crl_signed_total{issuer="cd",kind="complete"} 2
signerd_crl_signed_total{issuer="ab",kind="delta"} 3
signerd_crl_failures_total{issuer="ab",kind="complete"} 9
`, map[string]float64{"complete": 18, "delta": 3}, ""},
		{"no kind", `signerd_crl_signed_total{issuer="ab"} 1` + "\n", nil, "no kind"},
		{"no value", `signerd_crl_signed_total{issuer="ab",kind="complete"}` + "\n", nil, "signerd metrics"},
		{"bad value", `signerd_crl_signed_total{issuer="ab",kind="complete"} x` + "\n", nil, "invalid syntax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCRLSigned(strings.NewReader(tc.metrics))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s: %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// TestBenchCRLTargets: the CRL, memory and delta targets judged at their
// limits and past them, printed and in JSON; the delta's is left out
// when no delta was measured.
func TestBenchCRLTargets(t *testing.T) {
	for _, tc := range []struct {
		name             string
		crlMS, anon, dMS float64
		revoked          int
		want             []string
	}{
		{"at the limits", 5000, 64, 50, 1000, []string{
			"every shard's complete CRL ≤ 5000 ms in all: 5000, met",
			"signerd's anonymous RSS ≤ 64 MiB at peak: 64.0, met",
			"every shard's delta ≤ 50 ms in all: 50.0, met"}},
		{"past them", 5001, 64.1, 50.1, 1000, []string{
			"every shard's complete CRL ≤ 5000 ms in all: 5001, NOT met",
			"signerd's anonymous RSS ≤ 64 MiB at peak: 64.1, NOT met",
			"every shard's delta ≤ 50 ms in all: 50.1, NOT met"}},
		{"no deltas", 10, 20, 0, 0, []string{
			"every shard's complete CRL ≤ 5000 ms in all: 10, met",
			"signerd's anonymous RSS ≤ 64 MiB at peak: 20.0, met"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := newStoreReport()
			sr.CRLShards, sr.CRLMS, sr.RSSAnonMiB, sr.DeltaRevoked, sr.DeltaMS = 16, tc.crlMS, tc.anon, tc.revoked, tc.dMS
			sr.checkCRLTargets()
			var out bytes.Buffer
			sr.printCRLs(&out)
			var lines []string
			for line := range strings.Lines(out.String()) {
				if rest, ok := strings.CutPrefix(line, "target       "); ok {
					lines = append(lines, strings.TrimSpace(rest))
				}
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("printed:\n%s\nwant the target lines:\n%s", out.String(), strings.Join(tc.want, "\n"))
			}
			raw, err := json.Marshal(sr)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				Targets []targetCheck `json:"crl_targets"`
			}
			if err := json.Unmarshal(raw, &back); err != nil || len(back.Targets) != len(tc.want) {
				t.Fatalf("JSON crl_targets %s (%v): want %d", raw, err, len(tc.want))
			}
			for i, tg := range back.Targets {
				if tg.Met != strings.HasSuffix(tc.want[i], ", met") {
					t.Errorf("JSON %+v, want as %q", tg, tc.want[i])
				}
			}
		})
	}
}

// TestBenchCRLShards runs signerctl bench on a prefilled store in 200 CRL
// shards with deltas, for real: the prefilled revocations must spread
// over every shard (at 200 shards each is less than one value of a
// serial's first octet wide, so serials drawn from part of those values
// leave shards empty) and add up on their CRLs, and the deltas must list
// the revocations made after those CRLs and nothing else. The
// schedule's first deltas follow its first complete CRLs a poll (30 s)
// later, which the bench waits for.
func TestBenchCRLShards(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the schedule's first deltas")
	}
	module := hsmtest.SM2Module(t)
	cmd := exec.Command(bins.signerctl, "bench", "-store", "bolt", "-prefill", "3000", "-revoked", "3000", "-shards", "200",
		"-delta-revocations", "12", "-clients", "2", "-duration", "300ms", "-json", "-module", module, "-signerd", bins.signerd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("signerctl bench -shards 4: %v\n%s", err, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	sr := r.Stores[storeBolt]
	if sr == nil || sr.CRLShards != 200 || sr.CRLEntries != 3000 || len(sr.CRLShardEntries) != 200 {
		t.Fatalf("report %s: want 3000 entries on the CRLs of 200 shards", out)
	}
	for k, n := range sr.CRLShardEntries {
		// 15 expected a shard: one of 200 is left empty with odds of
		// 200·e^-15, about 6 in 100,000.
		if n == 0 {
			t.Errorf("shard %d lists nothing (entries per shard %v): the prefill's serials do not spread", k, sr.CRLShardEntries)
		}
	}
	if sr.DeltaRevoked != 12 || sr.DeltaEntries != 12 || sr.DeltaMS <= 0 {
		t.Errorf("deltas: %d revoked, %d entries in %.1f ms; want 12 entries", sr.DeltaRevoked, sr.DeltaEntries, sr.DeltaMS)
	}
	if sr.ScheduleCRLMS <= 0 || sr.ScheduleDeltaMS < sr.ScheduleCRLMS {
		t.Errorf("the schedule's start-up CRLs at %.0f ms, deltas at %.0f ms after READY", sr.ScheduleCRLMS, sr.ScheduleDeltaMS)
	}
	for _, p := range anonPhaseOrder {
		if sr.AnonPhasesMiB[p] <= 0 {
			t.Errorf("no anonymous peak for %s: %v", p, sr.AnonPhasesMiB)
		}
	}
	if len(sr.CRLTargets) != 3 {
		t.Errorf("CRL targets %+v: want 3 judged", sr.CRLTargets)
	}
}
