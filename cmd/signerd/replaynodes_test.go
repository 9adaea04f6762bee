package main

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
	"signerd/store/pgtest"
)

// isReplayed reports whether err refuses a request as a replay.
func isReplayed(err error) bool {
	var se *sigError
	return errors.As(err, &se) && se.code == api.CodeReplayed
}

// nodeEngines are engines of nodes a and b over one new database.
func nodeEngines(t *testing.T) (a, b *engine.Engine) {
	t.Helper()
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStore(t)
	node := func(name string) *engine.Engine {
		st, err := store.OpenPostgres(at.DSN, store.PostgresOptions{Node: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return ca.Engine(t, st, engine.Config{})
	}
	return node("a"), node("b")
}

// TestReplayGuardAcrossNodes: a signed RA request accepted at node a is
// refused at node b, within the skew window, though b met that RA earlier
// in its run (the usual case with an RA that spreads its requests over
// both nodes, where b's memory and the mark it read know nothing of a's
// acceptance). Requests the RA dates close together at both nodes are all
// taken; two copies of one request sent to both nodes at once are taken
// once.
func TestReplayGuardAcrossNodes(t *testing.T) {
	a, b := nodeEngines(t)
	guardA, guardB := newReplayGuard(replayCacheSize, replayRAs), newReplayGuard(replayCacheSize, replayRAs)
	const skew = 5 * time.Minute
	serial := []byte{0x5b, 0x1c}
	t0 := time.Now().Truncate(time.Second)
	// The RA's requests reach both nodes, dated close together and out
	// of order between them.
	steps := []struct {
		what   string
		g      *replayGuard
		st     *engine.Engine
		nonce  string
		date   time.Time
		now    time.Time
		replay bool
	}{
		{"request 1 at b", guardB, b, "nonce-1-0123456789", t0, t0, false},
		{"request 2 at a", guardA, a, "nonce-2-0123456789", t0.Add(10 * time.Second), t0.Add(10 * time.Second), false},
		{"request 2 replayed at b", guardB, b, "nonce-2-0123456789", t0.Add(10 * time.Second), t0.Add(11 * time.Second), true},
		{"request 1 replayed at a", guardA, a, "nonce-1-0123456789", t0, t0.Add(11 * time.Second), true},
		{"request 2 replayed at a", guardA, a, "nonce-2-0123456789", t0.Add(10 * time.Second), t0.Add(11 * time.Second), true},
		{"request 3 at b, dated before request 2", guardB, b, "nonce-3-0123456789", t0.Add(9 * time.Second), t0.Add(12 * time.Second), false},
		{"request 4 at a, dated as request 2", guardA, a, "nonce-4-0123456789", t0.Add(10*time.Second + time.Millisecond), t0.Add(12 * time.Second), false},
		{"request 3 replayed at a", guardA, a, "nonce-3-0123456789", t0.Add(9 * time.Second), t0.Add(13 * time.Second), true},
	}
	for _, s := range steps {
		err := s.g.admit(s.st, serial, s.nonce, s.date, s.now, skew)
		if s.replay != isReplayed(err) || (!s.replay && err != nil) {
			t.Errorf("%s: %v; want replay %v", s.what, err, s.replay)
		}
	}

	// Copies of each request sent to both nodes at once, several each.
	const requests, copies = 20, 3
	var (
		mu       sync.Mutex
		accepted = map[string]int{}
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for _, n := range []struct {
		g  *replayGuard
		st *engine.Engine
	}{{guardA, a}, {guardB, b}} {
		for range copies {
			wg.Go(func() {
				<-start
				for i := range requests {
					nonce := fmt.Sprintf("raced-%02d-0123456789", i)
					date := t0.Add(20*time.Second + time.Duration(i)*time.Millisecond)
					switch err := n.g.admit(n.st, serial, nonce, date, date, skew); {
					case err == nil:
						mu.Lock()
						accepted[nonce]++
						mu.Unlock()
					case !isReplayed(err):
						t.Errorf("%s: %v", nonce, err)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for i := range requests {
		if nonce := fmt.Sprintf("raced-%02d-0123456789", i); accepted[nonce] != 1 {
			t.Errorf("%s sent %d times to two nodes at once: accepted %d times, want once", nonce, 2*copies, accepted[nonce])
		}
	}
}

// TestReplayAcrossNodes: two signerd nodes on one database, an RA that
// has met both. A hold it signed, accepted at node a, then the restore it
// signed at node b: the hold captured and replayed at b is refused, and so
// is the restore replayed at a; the certificate stays good, as the RA
// left it. The database verifies with the claims in it.
func TestReplayAcrossNodes(t *testing.T) {
	srv := pgtest.Shared(t)
	a := newNodeProc(t, srv, "a", "2s", "ra_signatures: {max_skew: 2m}\n")
	b := a.nodeSibling(t, "b", true)
	a.start(t)
	b.start(t)
	ra := a.issueFor(t, "ra-cert", "ra-sign")
	target := a.issueFor(t, "subject", "person-sign").serials[0]
	status := func(d *daemonProc) string {
		t.Helper()
		return certView(t, d.call(t, "GET", "/v1/certificates/"+target, "")).Status
	}
	// The RA meets both nodes (the first request at a node waits out the
	// replay mark the other left, at most replayLease).
	for _, d := range []*daemonProc{a, b} {
		want(t, "the RA's first request at "+nodeOf(t, d), d.sendFresh(t, ra, "GET", "/v1/certificates/"+target), http.StatusOK, "")
	}
	hold := signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+target+"/hold", "")
	want(t, "hold at a", a.send(t, hold), http.StatusOK, "")
	restore := signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+target+"/restore", "")
	want(t, "restore at b", b.send(t, restore), http.StatusOK, "")
	want(t, "the hold replayed at b", b.send(t, hold), http.StatusUnauthorized, string(api.CodeReplayed))
	want(t, "the restore replayed at a", a.send(t, restore), http.StatusUnauthorized, string(api.CodeReplayed))
	want(t, "the hold replayed at a", a.send(t, hold), http.StatusUnauthorized, string(api.CodeReplayed))
	for _, d := range []*daemonProc{a, b} {
		if got := status(d); got != "good" {
			t.Errorf("%s after the replays: %s is %s, want good", nodeOf(t, d), target, got)
		}
	}
	verifyChains(t, a.dsn, "with the RA's claims", "a", "b")
	for _, d := range []*daemonProc{a, b} {
		if err := d.stop(t); err != nil {
			t.Fatalf("stop %s: %v\n%s", nodeOf(t, d), err, d.log)
		}
	}
}

// TestReplayGuardClaimNeedsTheStore: on a shared store, a request whose
// claim cannot be written is refused store_unavailable, not taken.
func TestReplayGuardClaimNeedsTheStore(t *testing.T) {
	srv := pgtest.Start(t)
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStoreOn(t, srv)
	st, err := store.OpenPostgres(at.DSN, store.PostgresOptions{Node: "a", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng := ca.Engine(t, st, engine.Config{})
	g := newReplayGuard(replayCacheSize, replayRAs)
	serial := []byte{0x5b, 0x1c}
	now := time.Now()
	// Met once, so that its mark is not read again.
	if err := g.admit(eng, serial, "before-the-outage-0123", now, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	err = g.admit(eng, serial, "during-the-outage-0123", now.Add(time.Millisecond), now, time.Minute)
	var se *sigError
	if !errors.As(err, &se) || se.code != api.CodeStoreUnavailable || se.code.Status() != http.StatusServiceUnavailable {
		t.Errorf("a request while the database is down: %v; want 503 %s", err, api.CodeStoreUnavailable)
	}
}

// TestNonceClaimsExpire: the sweep deletes the claims no node would need
// (dated more than max_skew and the clock margin before now), keeps the
// others, and a request whose claim it kept stays refused.
func TestNonceClaimsExpire(t *testing.T) {
	a, b := nodeEngines(t)
	const skew = 2 * time.Minute
	serial := []byte{0x5b, 0x1c}
	now := time.Now()
	keep := nonceClaimRetention(skew)
	dates := map[string]time.Time{
		"long-gone-0123456789": now.Add(-time.Hour),
		"just-past-0123456789": now.Add(-keep - time.Second),
		"within-it-0123456789": now.Add(-keep + time.Second),
		"fresh-one-0123456789": now,
	}
	for nonce, date := range dates {
		if fresh, err := a.ClaimRANonce(serial, nonce, date); err != nil || !fresh {
			t.Fatalf("claim %s: %v %v", nonce, fresh, err)
		}
	}
	n, err := expireNonceClaims(b, now, skew)
	if err != nil || n != 2 {
		t.Fatalf("expired %d claims, %v; want 2", n, err)
	}
	for nonce, date := range dates {
		fresh, err := a.ClaimRANonce(serial, nonce, date)
		if err != nil {
			t.Fatal(err)
		}
		if want := now.Sub(date) > keep; fresh != want {
			t.Errorf("%s, dated %v ago, claimed again after the sweep: fresh %v, want %v", nonce, now.Sub(date).Round(time.Second), fresh, want)
		}
	}
}
