package main

import (
	"math"
	"testing"
)

// TestGCSettings: signerd runs with its own GOGC and memory limit, as its
// metrics report them, unless the environment sets either, which then
// decides alone.
func TestGCSettings(t *testing.T) {
	for _, tc := range []struct {
		name        string
		env         []string
		wantPercent float64
		wantLimit   float64
	}{
		{"signerd's own", []string{"GOGC=", "GOMEMLIMIT="}, gcPercent, memoryLimit},
		{"GOGC set", []string{"GOGC=150", "GOMEMLIMIT="}, 150, math.MaxInt64},
		{"GOMEMLIMIT set", []string{"GOGC=", "GOMEMLIMIT=256MiB"}, 100, 256 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemonProc(t, "")
			d.env = append(d.env, tc.env...)
			d.start(t)
			m := d.metrics(t)
			percent, ok1 := m["go_gc_gogc_percent"]
			limit, ok2 := m["go_gc_gomemlimit_bytes"]
			if !ok1 || !ok2 || percent != tc.wantPercent || limit != tc.wantLimit {
				t.Fatalf("go_gc_gogc_percent %v (%v), go_gc_gomemlimit_bytes %v (%v); want %v and %v",
					percent, ok1, limit, ok2, tc.wantPercent, tc.wantLimit)
			}
		})
	}
}
