package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
)

// TestOtherRAsCertificatesCannotThrottleAnRA: an RA that had replayRAs
// ra-sign certificates issued to itself signs with each of them between
// any two requests of an honest RA, which sends ten a second. Whether the
// flood's requests are accepted (each a new nonce) or refused (each a
// replay of its own), the honest RA loses none of its requests, and
// nothing any RA sent is accepted twice.
func TestOtherRAsCertificatesCannotThrottleAnRA(t *testing.T) {
	for _, flood := range []string{"accepted", "refused"} {
		t.Run(flood, func(t *testing.T) {
			ca := enginetest.NewCA(t)
			eng := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
			const skew = 5 * time.Minute
			g := newReplayGuard(replayCacheSize, replayRAs)
			t0 := time.Now().UTC()
			honest := []byte{0xb0}
			rogue := func(k int) []byte { return []byte{0xa0, byte(k)} }
			type sent struct {
				serial []byte
				nonce  string
				date   time.Time
			}
			var accepted []sent
			for k := 0; k < replayRAs; k++ {
				nonce := fmt.Sprintf("rogue-nonce-%02d-first", k)
				if err := g.admit(eng, rogue(k), nonce, t0, t0, skew); err != nil {
					t.Fatalf("rogue certificate %d: %v", k, err)
				}
				accepted = append(accepted, sent{rogue(k), nonce, t0})
			}
			refused := 0
			for i := 0; i < 50; i++ { // 5 seconds at 10 a second
				now := t0.Add(time.Duration(i+1) * 100 * time.Millisecond)
				for k := 0; k < replayRAs; k++ {
					nonce := fmt.Sprintf("rogue-nonce-%02d-%04d", k, i)
					date := now
					if flood == "refused" {
						nonce, date = fmt.Sprintf("rogue-nonce-%02d-first", k), t0
					}
					err := g.admit(eng, rogue(k), nonce, date, now, skew)
					if (err == nil) != (flood == "accepted") {
						t.Fatalf("rogue certificate %d, request %d: %v, want %s", k, i, err, flood)
					}
					if err == nil {
						accepted = append(accepted, sent{rogue(k), nonce, date})
					}
				}
				nonce := fmt.Sprintf("honest-nonce-%04d", i)
				if err := g.admit(eng, honest, nonce, now, now, skew); err != nil {
					refused++
					if refused == 1 {
						t.Logf("first refusal of the honest RA: %v", err)
					}
					continue
				}
				accepted = append(accepted, sent{honest, nonce, now})
			}
			t.Logf("honest RA, 50 requests over 5 s between %d other certificates' requests (%s): %d refused",
				replayRAs, flood, refused)
			if refused > 0 {
				t.Errorf("another RA's certificates refused %d of the honest RA's 50 fresh requests", refused)
			}
			if len(g.ras) > replayRAs {
				t.Errorf("%d RAs in full, want at most %d", len(g.ras), replayRAs)
			}
			now := t0.Add(6 * time.Second)
			for _, s := range accepted {
				var se *sigError
				if err := g.admit(eng, s.serial, s.nonce, s.date, now, skew); !errors.As(err, &se) || se.code != api.CodeReplayed {
					t.Fatalf("request %x %s accepted before, sent again: %v", s.serial, s.nonce, err)
				}
			}
		})
	}
}

// TestIdleRAKeepsItsLatestRequests: an RA pushed out of the full memory by
// others keeps its latest replayIdleNonces requests, so a request of it
// still in flight, dated before its latest accepted one, is accepted; one
// dated before those kept is refused, as is everything it sent before. An RA
// forgotten past the idle RAs falls back to its store mark, which refuses
// all it sent.
func TestIdleRAKeepsItsLatestRequests(t *testing.T) {
	ca := enginetest.NewCA(t)
	eng := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
	const skew = 5 * time.Minute
	isReplay := func(err error) bool {
		var se *sigError
		return errors.As(err, &se) && se.code == api.CodeReplayed
	}
	g := newReplayGuard(replayCacheSize, 2)
	g.maxIdle = 2
	t0 := time.Now().UTC()
	ra := []byte{0x0a}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	// Requests 0..N+3 signed at once; 1..N+2 but N+1 (in flight) accepted...
	const n = replayIdleNonces
	for i := 1; i <= n+2; i++ {
		if i == n+1 {
			continue
		}
		if err := g.admit(eng, ra, fmt.Sprintf("ra-nonce-%06d", i), at(i), t0, skew); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	// ...then two other RAs' accepted requests idle it.
	for k := 0; k < 2; k++ {
		if err := g.admit(eng, []byte{0x0b, byte(k)}, "other-nonce-000000", t0, t0, skew); err != nil {
			t.Fatal(err)
		}
	}
	if g.idle["0a"] == nil {
		t.Fatalf("the RA is not idle: %d in full, %d idle", len(g.ras), len(g.idle))
	}
	for _, c := range []struct {
		what   string
		i      int
		replay bool
	}{
		{"a request in flight, dated before its latest", n + 1, false},
		{"a request dated after its latest", n + 3, false},
		{"its latest kept, again", n + 2, true},
		{"its oldest, dropped when it went idle, again", 1, true},
		{"a request dated before its kept ones", 0, true},
	} {
		if err := g.admit(eng, ra, fmt.Sprintf("ra-nonce-%06d", c.i), at(c.i), t0, skew); isReplay(err) != c.replay || (!c.replay && err != nil) {
			t.Fatalf("%s: %v, want replay %v", c.what, err, c.replay)
		}
	}
	// Four more RAs: it leaves the idle RAs too, and its mark answers.
	for k := 0; k < 4; k++ {
		if err := g.admit(eng, []byte{0x0c, byte(k)}, "other-nonce-000000", t0, t0, skew); err != nil {
			t.Fatal(err)
		}
	}
	if g.ras["0a"] != nil || g.idle["0a"] != nil || len(g.idle) > 2 {
		t.Fatalf("%d in full, %d idle, want the RA forgotten", len(g.ras), len(g.idle))
	}
	for i := 1; i <= n+3; i++ {
		if err := g.admit(eng, ra, fmt.Sprintf("ra-nonce-%06d", i), at(i), t0, skew); !isReplay(err) {
			t.Fatalf("request %d again after the RA was forgotten: %v", i, err)
		}
	}
}
