package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRANonceClaimRacesAcrossNodes: nodes a and b on one database claim
// the same signed requests at once, several times each: every request is
// fresh exactly once. A claim completes while the other node holds the
// writer lock in a transaction that waits: claims never queue behind
// batches.
func TestRANonceClaimRacesAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn := newPostgresDatabase(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	serial := []byte{0x5b, 0x1c}
	date := time.Now()
	const requests, tries = 40, 3
	var (
		mu    sync.Mutex
		fresh = map[string]int{}
		wg    sync.WaitGroup
	)
	start := make(chan struct{})
	for _, s := range []*Store{a, b} {
		for range tries {
			wg.Go(func() {
				<-start
				for i := range requests {
					nonce := fmt.Sprintf("nonce-%03d-0123456789", i)
					ok, err := s.ClaimRANonce(serial, nonce, date)
					if err != nil {
						t.Errorf("node %s claims %s: %v", s.Node(), nonce, err)
						return
					}
					if ok {
						mu.Lock()
						fresh[nonce]++
						mu.Unlock()
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for i := range requests {
		if nonce := fmt.Sprintf("nonce-%03d-0123456789", i); fresh[nonce] != 1 {
			t.Errorf("%s claimed fresh %d times by %d claims at two nodes, want once", nonce, fresh[nonce], 2*tries)
		}
	}

	// Node a in a write transaction that holds the writer lock until b's
	// claim has returned: were the claim to wait for the lock, it would
	// fail at the store's timeout.
	claimed := make(chan error, 1)
	err := a.Update(func(tx *Tx) error {
		go func() {
			ok, err := b.ClaimRANonce(serial, "claimed-while-a-writes", date)
			if err == nil && !ok {
				err = fmt.Errorf("a new request's claim is not fresh")
			}
			claimed <- err
		}()
		return <-claimed
	})
	if err != nil {
		t.Fatalf("a claim at node b while node a holds the writer lock: %v", err)
	}
}

// TestRANonceClaims: a claim is per RA certificate and nonce; claims and
// replay marks share the ra-replay table without either reading as the
// other (a clock reset lowers marks only, verify accepts both); expired
// claims are deleted in bounded steps, the live ones kept, and what was
// deleted may be claimed again.
func TestRANonceClaims(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		claim := func(serial []byte, nonce string, date time.Time) bool {
			t.Helper()
			ok, err := s.ClaimRANonce(serial, nonce, date)
			if err != nil {
				t.Fatalf("claim %x %s: %v", serial, nonce, err)
			}
			return ok
		}
		for _, c := range []struct {
			what   string
			serial []byte
			nonce  string
			fresh  bool
		}{
			{"first", []byte{0x01}, "nonce-0123456789ab", true},
			{"again", []byte{0x01}, "nonce-0123456789ab", false},
			{"the same nonce from another RA", []byte{0x02}, "nonce-0123456789ab", true},
			// The serial's length is in the key: 01 00 + "x…" is not
			// 01 + 00 "x…".
			{"a serial one byte longer", []byte{0x01, 0x00}, "nonce-0123456789ab", true},
			{"another nonce", []byte{0x01}, "nonce-0123456789ac", true},
		} {
			if got := claim(c.serial, c.nonce, t0); got != c.fresh {
				t.Errorf("%s: fresh %v, want %v", c.what, got, c.fresh)
			}
		}
		for _, bad := range []struct {
			serial []byte
			nonce  string
		}{{nil, "nonce-0123456789ab"}, {[]byte{1}, ""}, {make([]byte, 256), "nonce-0123456789ab"}} {
			if _, err := s.ClaimRANonce(bad.serial, bad.nonce, t0); err == nil {
				t.Errorf("claim of serial %x nonce %q: no error", bad.serial, bad.nonce)
			}
		}

		// Marks beside the claims: a clock reset lowers the marks only,
		// and a mark is never written where a claim's key could be.
		update(t, s, func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{0x01}, t0.Add(time.Hour)) })
		update(t, s, func(tx *Tx) error {
			lowered, err := tx.LowerRAReplayMarks(t0)
			if err != nil || len(lowered) != 1 || lowered[0][0] != 0x01 {
				t.Errorf("lowered %x, %v; want the mark of 01 alone", lowered, err)
			}
			return err
		})
		if err := s.Update(func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{0x00, 0x01}, t0) }); err == nil {
			t.Error("a mark under a serial with a leading zero byte, where it would read as a claim: no error")
		}
		if claim([]byte{0x01}, "nonce-0123456789ab", t0) {
			t.Error("a claim after the clock reset lowered the marks: fresh again")
		}

		// Claims dated over ten minutes, one a minute, for RA 03.
		for i := range 10 {
			claim([]byte{0x03}, fmt.Sprintf("aged-%02d-0123456789", i), t0.Add(time.Duration(i-10)*time.Minute))
		}
		// Before t0-5m: those dated t0-10m to t0-6m, five.
		cut := t0.Add(-5 * time.Minute)
		var steps []int
		for {
			n, err := s.ExpireRANonceClaims(cut, 2)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			steps = append(steps, n)
			if len(steps) > 10 {
				t.Fatalf("expiry does not end: %v", steps)
			}
		}
		if fmt.Sprint(steps) != "[2 2 1]" {
			t.Errorf("expired in steps of %v, want [2 2 1] (at most the limit, five in all)", steps)
		}
		for i := range 10 {
			nonce := fmt.Sprintf("aged-%02d-0123456789", i)
			if expired := i < 5; claim([]byte{0x03}, nonce, t0.Add(time.Duration(i-10)*time.Minute)) != expired {
				t.Errorf("%s dated %v after expiring before %v: fresh %v, want %v", nonce, time.Duration(i-10)*time.Minute, -5*time.Minute, !expired, expired)
			}
		}
		// The marks are not claims: expiry leaves them.
		if _, err := s.ExpireRANonceClaims(t0.Add(24*time.Hour), 1000); err != nil {
			t.Fatal(err)
		}
		view(t, s, func(tx *Tx) error {
			if m, err := tx.RAReplayMark([]byte{0x01}); err != nil || !m.Equal(t0) {
				t.Errorf("mark of 01 after the claims expired: %v, %v; want %v", m, err, t0)
			}
			return nil
		})
		claim([]byte{0x04}, "kept-for-verify-0123", t0)

		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := verifyAt(e, where)
		if err != nil || !r.OK() {
			t.Fatalf("verify a store with marks and claims: %v %+v", err, r)
		}
		e.edit(t, where, func(r records) error {
			if err := r.put(tableRAReplay, []byte{0x00, 0x09, 0x01}, make([]byte, 16)); err != nil {
				return err
			}
			key, _ := raNonceClaimKey([]byte{0x05}, "short-value-0123456")
			return r.put(tableRAReplay, key, []byte{1, 2, 3})
		})
		if r, err = verifyAt(e, where); err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, f := range r.Findings {
			found = append(found, f.String())
		}
		if got := strings.Join(found, "\n"); len(found) != 2 || !strings.Contains(got, "malformed request claim key") || !strings.Contains(got, "holds 3 bytes") {
			t.Errorf("verify, a claim's key and another's value damaged: %s", got)
		}
	})
}

func verifyAt(e engine, where string) (*Report, error) {
	if e.name == "bolt" {
		return Verify(where)
	}
	return VerifyPostgres(context.Background(), where)
}
