package main

import (
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestRefusalTallyIgnoresARoleHoldersGID: refusals are written to a real
// store, the first of each tally at once. A peer whose role comes from its
// uid is one tally whatever egid it switches to; a stranger's gid, and the
// gid of a peer whose role comes from it, still tell tallies apart (a
// stranger gets at most one tally per group it can switch to).
func TestRefusalTallyIgnoresARoleHoldersGID(t *testing.T) {
	const raUID, strangerUID, groupUID, operatorGID = 4242, 4343, 4444, 5555
	tests := []struct {
		name   string
		uid    int
		gids   []int
		role   string
		writes int64
	}{
		{"role from uid, five egids", raUID, []int{100, 101, 102, 103, 104}, roleRA, 1},
		{"stranger, two gids", strangerUID, []int{100, 101}, "", 2},
		{"role from gid, and another gid", groupUID, []int{operatorGID, 101}, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := enginetest.NewCA(t)
			eng := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
			var writes atomic.Int64
			audit := func(ev store.Event) error {
				writes.Add(1)
				return eng.Audit(ev)
			}
			r := roles{roleRA: {UIDs: []int{raUID}}, roleOperator: {GIDs: []int{operatorGID}}}
			l := newRefusalLog(audit, r, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)),
				newMetrics(func() int { return 0 }, func() bool { return true }, func() bool { return true },
					func(int) (int, error) { return 0, nil }))
			defer l.Close()
			for _, gid := range tt.gids {
				for range 3 {
					p := peer{UID: tt.uid, GID: gid, PID: 1}
					p.Roles = r.rolesOf(p)
					l.refuse(p.actor(), "GET /v9/nothing", "not_found", "not_found")
				}
			}
			if got := writes.Load(); got != tt.writes {
				t.Errorf("uid %d refused 3 times from each of gids %v: %d events written at once, want %d", tt.uid, tt.gids, got, tt.writes)
			}
		})
	}
}
