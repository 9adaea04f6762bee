package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"signerd/hsm/hsmtest"
)

// TestBenchRefusesBadFlags: each bad combination is a usage error before
// anything is started.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-store", "sqlite"}, `-store "sqlite": bolt, postgres or both`},
		{[]string{"-store", "bolt", "-pg-statements"}, "-pg-statements needs the postgres store"},
		{[]string{"-clients", "1,0"}, "not a positive number"},
		{[]string{"-prefill", "10", "-revoked", "11"}, "-revoked cannot exceed -prefill"},
		{[]string{"-module", ""}, "must name the SoftHSM2 SM2 build"},
		{[]string{"-nodes", "0"}, "-nodes 0: 1 (no node runs) to 8"},
		{[]string{"-nodes", "9"}, "-nodes 9: 1 (no node runs) to 8"},
		{[]string{"-nodes", "2", "-store", "bolt"}, "nodes share a PostgreSQL store"},
		{[]string{"-nodes", "2", "-pg-statements"}, "-pg-statements and -cpu-profile measure one signerd"},
		{[]string{"-nodes", "2", "-cpu-profile", "cpu.out"}, "-pg-statements and -cpu-profile measure one signerd"},
		{[]string{"-shards", "0"}, "-shards 0: 1 to 1024"},
		{[]string{"-shards", "1025"}, "-shards 1025: 1 to 1024"},
		{[]string{"-delta-revocations", "-1"}, "-delta-revocations must not be negative"},
		{[]string{"-signerd-env", "GOGC"}, `-signerd-env: "GOGC" is not VAR=value`},
		{[]string{"-signerd-env", "=100"}, `-signerd-env: "=100" is not VAR=value`},
		{[]string{"-rounds", "0"}, "-rounds 0: at least 1"},
		{[]string{"-nodes", "2", "-rounds", "2"}, "-rounds takes turns between stores"},
		{[]string{"-duration", "1s", "-rounds", "11"}, "slices (-duration / -rounds) of at least 100ms"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"-module", "/nonexistent/libsofthsm2.so"}, tc.args...)
			err := bench(args, io.Discard)
			var usage usageError
			if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("bench %q: %v, want a usage error containing %q", args, err, tc.want)
			}
		})
	}
}

// benchReportOf is a report of both stores at 1 and 64 clients with the
// given certs/s (bbolt, PostgreSQL) at 64 clients, its comparison made as
// runBench makes it.
func benchReportOf(bolt64, pg64 float64, clients []int) *benchReport {
	r := &benchReport{Machine: "test", CPUs: 2, CeilingPerS: 1000, Stores: map[string]*storeReport{
		storeBolt: newStoreReport(), storePostgres: newStoreReport()}}
	r.Stores[storePostgres].Postgres = &pgReport{Version: "15.0", Settings: map[string]string{"fsync": "on"}}
	r.Stores[storeBolt].E2EPerS["1"], r.Stores[storePostgres].E2EPerS["1"] = 100, 50
	r.Stores[storeBolt].E2EPerS["64"], r.Stores[storePostgres].E2EPerS["64"] = bolt64, pg64
	r.compare(clients)
	return r
}

// TestBenchComparison: the ratio per client count and the target line, as
// printed and in JSON.
func TestBenchComparison(t *testing.T) {
	for _, tc := range []struct {
		name          string
		bolt, pg      float64
		clients       []int
		wantLine      string
		wantTargetMet *bool
	}{
		{"met", 500, 450, []int{1, 64}, "≥ 0.9 × bbolt: 0.90, met", ptr(true)},
		{"not met", 500, 440, []int{1, 64}, "≥ 0.9 × bbolt: 0.88, NOT met", ptr(false)},
		{"no 64-client run", 500, 450, []int{1}, "≥ 0.9 × bbolt: not measured (no 64-client run)", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := benchReportOf(tc.bolt, tc.pg, tc.clients)
			var out bytes.Buffer
			r.print(&out, tc.clients)
			if !strings.Contains(out.String(), "target       PostgreSQL at 64 clients "+tc.wantLine) {
				t.Errorf("printed:\n%s\nwant the target line ending %q", out.String(), tc.wantLine)
			}
			if !strings.Contains(out.String(), "== PostgreSQL against bbolt") || !strings.Contains(out.String(), "fsync=on") {
				t.Errorf("printed:\n%s\nwant the comparison table and the server's settings", out.String())
			}
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				Stores         map[string]map[string]any `json:"stores"`
				PostgresVsBolt map[string]float64        `json:"postgres_vs_bolt"`
				TargetMet      *bool                     `json:"target_met"`
			}
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if back.PostgresVsBolt["1"] != 0.5 {
				t.Errorf("JSON postgres_vs_bolt %v, want 0.5 at 1 client", back.PostgresVsBolt)
			}
			if (back.TargetMet == nil) != (tc.wantTargetMet == nil) || back.TargetMet != nil && *back.TargetMet != *tc.wantTargetMet {
				t.Errorf("JSON target_met %v, want %v", back.TargetMet, tc.wantTargetMet)
			}
			for _, name := range []string{storeBolt, storePostgres} {
				if _, ok := back.Stores[name]["e2e_per_s"]; !ok {
					t.Errorf("JSON stores.%s lacks e2e_per_s: %s", name, raw)
				}
			}
			if _, ok := back.Stores[storePostgres]["postgres"]; !ok {
				t.Errorf("JSON stores.postgres lacks the server's settings: %s", raw)
			}
		})
	}
}

// TestBenchNodesComparison: the two-nodes-against-one ratio per client
// count and the target line, as printed and in JSON.
func TestBenchNodesComparison(t *testing.T) {
	for _, tc := range []struct {
		name          string
		one, two      float64
		clients       []int
		wantLine      string
		wantTargetMet *bool
	}{
		{"met", 500, 450, []int{8, 64}, "≥ 0.9 × one node: 0.90, met", ptr(true)},
		{"not met", 500, 440, []int{8, 64}, "≥ 0.9 × one node: 0.88, NOT met", ptr(false)},
		{"no 64-client run", 500, 450, []int{8}, "≥ 0.9 × one node: not measured (no 64-client run)", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &benchReport{Machine: "test", CPUs: 2, CeilingPerS: 1000, Stores: map[string]*storeReport{}, Nodes: newNodesReport(2)}
			r.Nodes.Postgres = &pgReport{Version: "15.0", Settings: map[string]string{"fsync": "on"}}
			r.Nodes.One.E2EPerS["8"], r.Nodes.All.E2EPerS["8"] = 200, 100
			r.Nodes.One.E2EPerS["64"], r.Nodes.All.E2EPerS["64"] = tc.one, tc.two
			r.Nodes.All.Issued["8"] = []int{321, 123}
			r.Nodes.compare(tc.clients)
			var out bytes.Buffer
			r.print(&out, tc.clients)
			for _, want := range []string{"target       2 nodes at 64 clients " + tc.wantLine, "== 2 nodes against one", "fsync=on", "321 / 123"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("printed:\n%s\nwant %q", out.String(), want)
				}
			}
			if strings.Contains(out.String(), "PostgreSQL against bbolt") {
				t.Errorf("printed:\n%s\nwant no store comparison in a nodes run", out.String())
			}
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				Stores map[string]any `json:"stores"`
				Nodes  struct {
					AllVsOne  map[string]float64 `json:"all_vs_one"`
					TargetMet *bool              `json:"target_met"`
				} `json:"nodes"`
			}
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if back.Stores != nil || back.Nodes.AllVsOne["8"] != 0.5 {
				t.Errorf("JSON %s: want no stores and all_vs_one 0.5 at 8 clients", raw)
			}
			if (back.Nodes.TargetMet == nil) != (tc.wantTargetMet == nil) || back.Nodes.TargetMet != nil && *back.Nodes.TargetMet != *tc.wantTargetMet {
				t.Errorf("JSON nodes.target_met %v, want %v", back.Nodes.TargetMet, tc.wantTargetMet)
			}
		})
	}
}

// TestBenchTwoNodes runs signerctl bench -nodes 2 briefly, for real: a
// throwaway CA, a local PostgreSQL, two signerd nodes each on its own copy
// of the token. Both nodes must issue when the clients are spread over
// them, and only node a when it runs alone.
func TestBenchTwoNodes(t *testing.T) {
	module := hsmtest.SM2Module(t)
	cmd := exec.Command(bins.signerctl, "bench", "-nodes", "2", "-clients", "4", "-duration", "300ms", "-json",
		"-module", module, "-signerd", bins.signerd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("signerctl bench -nodes 2: %v\n%s", err, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if r.Stores != nil || r.Nodes == nil || r.Nodes.Nodes != 2 || r.Nodes.Postgres == nil || len(r.Nodes.ReadyMS) != 2 {
		t.Fatalf("report %s: want a nodes report of 2 nodes on PostgreSQL and no store runs", out)
	}
	for _, tc := range []struct {
		name     string
		fig      *nodesFigures
		issuedBy []bool
	}{
		{"one node", r.Nodes.One, []bool{true, false}},
		{"two nodes", r.Nodes.All, []bool{true, true}},
	} {
		issued := tc.fig.Issued["4"]
		if tc.fig.E2EPerS["4"] <= 0 || tc.fig.Errors["4"] != 0 || len(issued) != 2 {
			t.Errorf("%s: %.0f certs/s, %d errors, issued per node %v", tc.name, tc.fig.E2EPerS["4"], tc.fig.Errors["4"], issued)
			continue
		}
		for i, want := range tc.issuedBy {
			if (issued[i] > 0) != want {
				t.Errorf("%s: node %s issued %d (issued per node %v)", tc.name, nodeName(i), issued[i], issued)
			}
		}
	}
	if r.Nodes.AllVsOne["4"] <= 0 {
		t.Errorf("all_vs_one %v", r.Nodes.AllVsOne)
	}
}

func ptr[T any](v T) *T { return &v }

// TestBenchTargets: the overhead, ratio and p99 targets judged from a
// store's figures, at their limits and past them, as printed and in JSON;
// a target whose run was not made is left out, not judged.
func TestBenchTargets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		overhead  float64 // µs per certificate at 64 clients
		ratio     float64 // at 64 clients
		p99       float64 // ms at 8 clients
		clients   []int
		wantLines []string
		wantMet   map[string]bool
	}{
		{"all met at the limits", 200, 0.65, 10, []int{8, 64},
			[]string{"overhead at 64 clients ≤ 200 µs/cert: 200, met", "end to end at 64 clients ≥ 0.65 × ceiling: 0.65, met",
				"p99 at 8 clients ≤ 10 ms: 10.0, met"},
			map[string]bool{"overhead_us_per_cert_64": true, "ratio_64": true, "p99_ms_8": true}},
		{"none met", 480, 0.45, 14.3, []int{8, 64},
			[]string{"overhead at 64 clients ≤ 200 µs/cert: 480, NOT met", "end to end at 64 clients ≥ 0.65 × ceiling: 0.45, NOT met",
				"p99 at 8 clients ≤ 10 ms: 14.3, NOT met"},
			map[string]bool{"overhead_us_per_cert_64": false, "ratio_64": false, "p99_ms_8": false}},
		{"no 64-client run", 0, 0, 9.5, []int{8},
			[]string{"p99 at 8 clients ≤ 10 ms: 9.5, met"},
			map[string]bool{"p99_ms_8": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &benchReport{Machine: "test", CPUs: 2, CeilingPerS: 2000, CeilingCPUMS: 0.6,
				Stores: map[string]*storeReport{storeBolt: newStoreReport()}}
			sr := r.Stores[storeBolt]
			for _, c := range tc.clients {
				k := strconv.Itoa(c)
				sr.E2EPerS[k], sr.SignerdCPUMS[k], sr.P99MS[k] = 1000, 0.6, 5
			}
			if slices.Contains(tc.clients, 64) {
				sr.Ratio["64"], sr.OverheadUS["64"], sr.SignerdCPUMS["64"] = tc.ratio, tc.overhead, 0.6+tc.overhead/1000
			}
			if slices.Contains(tc.clients, 8) {
				sr.P99MS["8"] = tc.p99
			}
			sr.checkTargets()
			var out bytes.Buffer
			r.print(&out, tc.clients)
			for _, want := range append(tc.wantLines, "0.600 ms CPU per signature", "overhead µs/cert") {
				if !strings.Contains(out.String(), want) {
					t.Errorf("printed:\n%s\nwant %q", out.String(), want)
				}
			}
			if got := strings.Count(out.String(), "\ntarget "); got != len(tc.wantLines) {
				t.Errorf("printed:\n%s\n%d target lines, want %d", out.String(), got, len(tc.wantLines))
			}
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				CeilingCPUMS float64 `json:"hsm_cpu_ms_per_sign"`
				Stores       map[string]struct {
					OverheadUS map[string]float64 `json:"overhead_us_per_cert"`
					Targets    []targetCheck      `json:"targets"`
				} `json:"stores"`
			}
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, c := range back.Stores[storeBolt].Targets {
				got[c.Name] = c.Met
			}
			if back.CeilingCPUMS != 0.6 || !maps.Equal(got, tc.wantMet) {
				t.Errorf("JSON %s: want hsm_cpu_ms_per_sign 0.6 and targets met %v", raw, tc.wantMet)
			}
		})
	}
}

// TestBenchReportsOverhead runs signerctl bench on a bbolt store briefly,
// for real, and checks the CPU figures it reports hang together: the
// HSM's CPU per signature from the ceiling run, signerd's per certificate
// at each client count, and the overhead as their difference, with the
// targets judged from them.
func TestBenchReportsOverhead(t *testing.T) {
	module := hsmtest.SM2Module(t)
	// In two rounds, so that the slices' sums are what is judged.
	cmd := exec.Command(bins.signerctl, "bench", "-store", "bolt", "-clients", "8,64", "-duration", "500ms", "-rounds", "2", "-json",
		"-module", module, "-signerd", bins.signerd)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("signerctl bench -store bolt: %v\n%s", err, stderr.String())
	}
	var r benchReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	sr := r.Stores[storeBolt]
	// A signature costs the ceiling run far more than nothing and far less
	// than the second it would take to make the run's rate a few a second.
	if sr == nil || r.CeilingCPUMS <= 0.01 || r.CeilingCPUMS >= 1000/r.CeilingPerS*float64(r.CPUs) {
		t.Fatalf("report %s: want a bbolt store and the HSM's CPU per signature within (0.01 ms, CPUs/ceiling)", out)
	}
	// The ceiling judged by is the mean of the runs before and after the
	// store runs, and every ratio is against it.
	runs := r.CeilingRunsPerS
	if runs[0] <= 0 || runs[1] <= 0 || math.Abs(r.CeilingPerS-(runs[0]+runs[1])/2) > 1e-9 ||
		math.Abs(r.CeilingCPUMS-(r.CeilingRunsCPUMS[0]+r.CeilingRunsCPUMS[1])/2) > 1e-9 {
		t.Errorf("ceiling %v/s (%v ms) from runs %v (%v): want the mean of both", r.CeilingPerS, r.CeilingCPUMS, runs, r.CeilingRunsCPUMS)
	}
	for _, k := range []string{"8", "64"} {
		if math.Abs(sr.Ratio[k]-sr.E2EPerS[k]/r.CeilingPerS) > 1e-9 || math.Abs(sr.BatchOffRatio[k]-sr.BatchOffPerS[k]/r.CeilingPerS) > 1e-9 {
			t.Errorf("%s clients: ratios %v and %v (batch off), want against the mean ceiling %v", k, sr.Ratio[k], sr.BatchOffRatio[k], r.CeilingPerS)
		}
		want := 1000 * (sr.SignerdCPUMS[k] - r.CeilingCPUMS)
		if sr.E2EPerS[k] <= 0 || sr.SignerdCPUMS[k] <= 0 || math.Abs(sr.OverheadUS[k]-want) > 1e-6 {
			t.Errorf("%s clients: %.0f certs/s, signerd %.3f ms/cert, overhead %.1f µs, want %.1f (signerd less the HSM's %.3f ms)",
				k, sr.E2EPerS[k], sr.SignerdCPUMS[k], sr.OverheadUS[k], want, r.CeilingCPUMS)
		}
	}
	if len(sr.Targets) != len(cpuTargets) {
		t.Errorf("targets %+v: want each of %d judged", sr.Targets, len(cpuTargets))
	}
}

// TestBenchOCSPPresignRefusesBadFlags: each bad flag is a usage error
// before anything is started.
func TestBenchOCSPPresignRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-certificates", "0"}, "-certificates, -sessions and -duration must be positive"},
		{[]string{"-sessions", "0"}, "-certificates, -sessions and -duration must be positive"},
		{[]string{"-revoked", "-1"}, "-revoked not negative"},
		{[]string{"-certificates", "10", "-revoked", "11"}, "-revoked cannot exceed -certificates"},
		{[]string{"-module", ""}, "must name the SoftHSM2 SM2 build"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"-ocsp-presign", "-module", "/nonexistent/libsofthsm2.so"}, tc.args...)
			err := bench(args, io.Discard)
			var usage usageError
			if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("bench %q: %v, want a usage error containing %q", args, err, tc.want)
			}
		})
	}
}

// TestBenchOCSPPresign runs signerctl bench -ocsp-presign small, for
// real, both ways the responses come to be due: every prefilled
// certificate's response must be signed and published (the bench checks
// each file), none may fail, and the figures must be there.
func TestBenchOCSPPresign(t *testing.T) {
	module := hsmtest.SM2Module(t)
	for _, backfill := range []bool{false, true} {
		t.Run("backfill="+strconv.FormatBool(backfill), func(t *testing.T) {
			cmd := exec.Command(bins.signerctl, "bench", "-ocsp-presign", "-certificates", "300", "-revoked", "30",
				"-duration", "300ms", "-backfill="+strconv.FormatBool(backfill), "-json", "-module", module, "-signerd", bins.signerd)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("signerctl bench -ocsp-presign: %v\n%s", err, stderr.String())
			}
			var r presignReport
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if r.Backfill != backfill || r.Signed < 300 || r.Failed != 0 || r.Published < 300 {
				t.Errorf("backfill %v, %d signed, %d failed, %d published; want %v and all 300 signed and published, none failed",
					r.Backfill, r.Signed, r.Failed, r.Published, backfill)
			}
			if r.PerS <= 0 || r.CeilingPerS <= 0 || r.Ratio <= 0 || r.SignerdCPUMS <= 0 || r.RSSAnonMiB <= 0 {
				t.Errorf("figures missing: %s", out)
			}
			// The ceiling judged by is the mean of the runs before and after
			// the refresh, and the ratio is against it.
			runs := r.CeilingRunsPerS
			if runs[0] <= 0 || runs[1] <= 0 || math.Abs(r.CeilingPerS-(runs[0]+runs[1])/2) > 1e-9 ||
				math.Abs(r.Ratio-r.PerS/r.CeilingPerS) > 1e-9 {
				t.Errorf("ceiling %v from runs %v, ratio %v for %v/s: want the mean of both runs and the ratio against it", r.CeilingPerS, runs, r.Ratio, r.PerS)
			}
		})
	}
}

// TestLoadResultAdd: slices of one run add up to the run: counts, time,
// the first error, and percentiles over every latency.
func TestLoadResultAdd(t *testing.T) {
	first := errors.New("first")
	r := &loadResult{}
	r.add(&loadResult{n: 3, errors: 1, firstErr: first, elapsed: time.Second,
		latencies: []time.Duration{1 * time.Millisecond, 5 * time.Millisecond, 9 * time.Millisecond}})
	r.add(&loadResult{n: 2, errors: 2, firstErr: errors.New("second"), elapsed: time.Second,
		latencies: []time.Duration{2 * time.Millisecond, 3 * time.Millisecond}})
	if r.n != 5 || r.errors != 3 || r.firstErr != first || r.rate() != 2.5 {
		t.Fatalf("added: n %d, errors %d, first %v, rate %v; want 5, 3, first, 2.5", r.n, r.errors, r.firstErr, r.rate())
	}
	for _, tc := range []struct {
		q    float64
		want float64
	}{{0, 1}, {0.5, 3}, {0.99, 9}, {1, 9}} {
		if got := r.percentile(tc.q); got != tc.want {
			t.Errorf("percentile(%v) = %v ms, want %v", tc.q, got, tc.want)
		}
	}
}
