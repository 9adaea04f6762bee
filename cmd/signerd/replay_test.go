package main

import (
	"errors"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
)

// TestReplayGuardForgetsNothing drives the replay guard with the clock
// given explicitly (stepped back and forth as a host's clock may be) over a
// real engine and store: whatever the guard drops from memory, by age, by
// capacity or by a restart, stays refused.
func TestReplayGuardForgetsNothing(t *testing.T) {
	ca := enginetest.NewCA(t)
	eng := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
	const skew = time.Minute
	t0 := time.Now().Truncate(time.Second)
	serial := []byte{0x5b, 0x1c}
	isReplay := func(err error) bool {
		var se *sigError
		return errors.As(err, &se) && se.code == api.CodeReplayed
	}
	type step struct {
		what   string
		nonce  string
		date   time.Time
		now    time.Time
		replay bool
	}
	g := newReplayGuard(2, replayRAs)
	run := func(g *replayGuard, steps []step) {
		t.Helper()
		for _, s := range steps {
			err := g.admit(eng, serial, s.nonce, s.date, s.now, skew)
			if s.replay != isReplay(err) || (!s.replay && err != nil) {
				t.Fatalf("%s: %v, want replay %v", s.what, err, s.replay)
			}
		}
	}
	run(g, []step{
		{"first", "nonce-a-0123456789", t0, t0, false},
		{"again", "nonce-a-0123456789", t0, t0, true},
		{"second", "nonce-b-0123456789", t0.Add(time.Second), t0.Add(time.Second), false},
		// Full: the oldest (a) leaves, and its date becomes the floor.
		{"third", "nonce-c-0123456789", t0.Add(2 * time.Second), t0.Add(2 * time.Second), false},
		{"the first, dropped for room", "nonce-a-0123456789", t0, t0.Add(2 * time.Second), true},
		{"another dated as the first", "nonce-z-0123456789", t0, t0.Add(2 * time.Second), true},
		// The clock jumps ahead: b and c go stale and leave.
		{"after a jump", "nonce-d-0123456789", t0.Add(time.Hour), t0.Add(time.Hour), false},
		// The clock is stepped back: b and c are in their window again.
		{"b after the clock was stepped back", "nonce-b-0123456789", t0.Add(time.Second), t0.Add(3 * time.Second), true},
		{"c after the clock was stepped back", "nonce-c-0123456789", t0.Add(2 * time.Second), t0.Add(3 * time.Second), true},
	})
	// A new run (a restart) knows none of it but the store's mark.
	run(newReplayGuard(replayCacheSize, replayRAs), []step{
		{"d after a restart", "nonce-d-0123456789", t0.Add(time.Hour), t0.Add(time.Hour), true},
		{"a new request within the lease", "nonce-e-0123456789", t0.Add(time.Hour + replayLease/2), t0.Add(time.Hour), true},
		{"a new request past the mark", "nonce-f-0123456789", t0.Add(time.Hour + 2*replayLease), t0.Add(time.Hour + 2*replayLease), false},
	})
	// Another RA's mark is its own.
	if err := newReplayGuard(replayCacheSize, replayRAs).admit(eng, []byte{0x77}, "nonce-d-0123456789", t0.Add(time.Hour), t0.Add(time.Hour), skew); err != nil {
		t.Fatalf("another RA after a restart: %v", err)
	}
}
