package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
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

func ptr[T any](v T) *T { return &v }
