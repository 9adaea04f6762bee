package main

import (
	"container/heap"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"signerd/api"
	"signerd/engine"
)

// replayCacheSize is the default of ra_signatures.replay_memory, the
// signed requests signerd remembers for each RA certificate: about 55 a
// second, sustained over a 5-minute skew window, at some 150 bytes each.
// An RA that sends more still gets every request dated after the oldest
// it is remembered for (its floor); only its own late-dated ones are
// refused.
const replayCacheSize = 1 << 14

// replayRAs bounds the RA certificates remembered in full at once: the
// most recently accepted ones. Past it the least recently accepted one is
// kept as an idle RA, its memory cut to its replayIdleNonces latest
// requests (its floor raised to the date of the newest one dropped).
const replayRAs = 32

// replayIdleRAs bounds the idle RAs. Past it the least recently accepted
// one is forgotten, and when met again its store mark, which is past
// every date accepted from it, refuses its requests until they are dated
// past the mark (at most replayLease after its last accepted date).
const replayIdleRAs = 1024

// replayIdleNonces is how many of its latest requests an idle RA keeps:
// an RA whose requests arrive out of their dates' order by fewer than this
// loses none of them to being idled.
const replayIdleNonces = 32

// replayLease is how far past a request's date an RA's stored replay mark
// is raised: the mark is written at most once per lease per RA, and after a
// restart an RA's requests dated up to its mark are refused.
const replayLease = time.Second

// replayGuard refuses a signed RA request it has accepted before.
//
// Each RA certificate has its own memory, so that what one RA sends (a
// flood, requests dated up to the skew ahead) changes no answer to
// another. In memory an RA has every nonce accepted from it whose date
// still passes the skew check, and a floor: any date of that RA at or
// before it is refused. An entry leaves only by raising its RA's floor to
// its date, when it goes stale (its date more than the skew behind the
// clock) or when the RA's memory is full (its oldest goes), so whatever
// the memory forgets the floor still refuses, even if the clock is later
// stepped back.
//
// An RA enters the memory only with a request that passes every check (its
// signature and certificate, checked by the caller, its date and nonce
// here), so requests that are refused, whoever sends them, move no other
// RA out. Of the RAs met, the replayRAs most recently accepted are kept in
// full; older ones are idle, cut to their replayIdleNonces latest requests
// (their floor raised accordingly), so that being pushed out by other RAs
// costs an RA nothing but requests dated before its latest
// replayIdleNonces; past replayIdleRAs idle RAs, the least recently
// accepted is forgotten.
//
// Across restarts each RA certificate has a replay mark in the store, kept
// ahead of every date accepted from it (raised by replayLease at most once
// per lease). An RA met for the first time in a run (or again after it was
// forgotten for room) has its requests dated at or before the mark it
// finds refused, so a restart, however quick, reopens no replay: a request
// the last run accepted, even one dated up to the skew ahead of the clock,
// is at or before the mark. The cost is that right after a restart an RA's
// requests are refused (replayed_request) until they are dated past its
// mark, at most replayLease after its last accepted date.
type replayGuard struct {
	mu      sync.Mutex
	perRA   int                  // nonces remembered per RA in full
	maxRAs  int                  // RAs remembered in full
	maxIdle int                  // idle RAs remembered, replayIdleNonces each
	ras     map[string]*raReplay // in full
	idle    map[string]*raReplay
	clock   uint64 // counts acceptances, for the least recently accepted RA
}

// raReplay is one RA certificate's replay memory.
type raReplay struct {
	floor  time.Time
	seen   map[string]bool // nonces
	byDate replayHeap
	// prior is the store's mark when the RA was met this run, stored the
	// mark as stored now.
	prior, stored time.Time
	used          uint64 // the guard's clock at its last accepted request
}

type replayEntry struct {
	nonce string
	date  time.Time
}

type replayHeap []replayEntry

func (h replayHeap) Len() int           { return len(h) }
func (h replayHeap) Less(i, j int) bool { return h[i].date.Before(h[j].date) }
func (h replayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *replayHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *replayHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// newReplayGuard remembers perRA requests of each of up to maxRAs RAs, and
// the latest replayIdleNonces of up to replayIdleRAs others.
func newReplayGuard(perRA, maxRAs int) *replayGuard {
	return &replayGuard{perRA: max(perRA, 1), maxRAs: max(maxRAs, 1), maxIdle: replayIdleRAs,
		ras: map[string]*raReplay{}, idle: map[string]*raReplay{}}
}

// replayStore is what the guard needs of the store.
type replayStore interface {
	RAReplayMark(serial []byte) (time.Time, error)
	RaiseRAReplayMark(serial []byte, t time.Time) error
	SharedStore() bool
	ClaimRANonce(serial []byte, nonce string, date time.Time) (bool, error)
}

var _ replayStore = (*engine.Engine)(nil)

// admit records the request (serial, nonce) dated date, or refuses it as a
// replay. The caller has checked its signature and that date is within
// skew of now.
//
// On a store several nodes may share, each node's memory knows only the
// requests it accepted itself, and the mark is read only when an RA is
// first met: a request accepted at another node would pass both. There
// every request the memory passes is also claimed in the store
// (ClaimRANonce), once across all nodes, before it is recorded. The
// memory is asked first, so that a replay to the same node costs the
// store nothing, and the claim is made outside the guard's lock, so that
// the node's signed requests do not queue behind one another's round
// trips: two copies of a request racing at one node both pass the first
// look, and the store lets one of them through.
func (g *replayGuard) admit(st replayStore, serial []byte, nonce string, date, now time.Time, skew time.Duration) error {
	if g == nil {
		return &sigError{code: api.CodeInternal, msg: "RA replay guard not set up"}
	}
	if !st.SharedStore() {
		return g.pass(st, serial, nonce, date, now, skew, true)
	}
	if err := g.pass(st, serial, nonce, date, now, skew, false); err != nil {
		return err
	}
	fresh, err := st.ClaimRANonce(serial, nonce, date)
	if err != nil {
		return &sigError{code: api.CodeStoreUnavailable,
			msg: fmt.Sprintf("claiming the signed request in the store: %v; sign it again with a new nonce and date", err)}
	}
	if !fresh {
		return replayedError(serial, nonce, date, "accepted before, at this node or another on the store")
	}
	// Checked again: the memory may have moved on during the claim (its
	// floor raised past date by other requests); a request refused now
	// keeps its claim, and stays refused everywhere.
	return g.pass(st, serial, nonce, date, now, skew, true)
}

// replayedError refuses a replay, saying why.
func replayedError(serial []byte, nonce string, date time.Time, why string) error {
	return &sigError{code: api.CodeReplayed, msg: fmt.Sprintf("request signed by %s with nonce %s at %s: %s; sign it again with a new nonce and date",
		hex.EncodeToString(serial), nonce, date.Format(time.RFC3339Nano), why)}
}

// pass checks the request against the memory and the RA's mark and, if
// record, records it (raising the mark when due); without record it only
// lets go what has gone stale, as every pass does.
func (g *replayGuard) pass(st replayStore, serial []byte, nonce string, date, now time.Time, skew time.Duration, record bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := hex.EncodeToString(serial)
	replayed := func(why string) error { return replayedError(serial, nonce, date, why) }
	ra, full := g.ras[id]
	if !full {
		ra = g.idle[id]
	}
	if ra == nil {
		// Not remembered until a request of it is accepted.
		t, err := st.RAReplayMark(serial)
		if err != nil {
			return &sigError{code: api.CodeStoreUnavailable, msg: err.Error()}
		}
		ra = &raReplay{seen: map[string]bool{}, prior: t, stored: t}
	}
	for len(ra.byDate) > 0 && now.Sub(ra.byDate[0].date) > skew {
		ra.forgetOldest()
	}
	if ra.seen[nonce] {
		return replayed("accepted before")
	}
	if !date.After(ra.floor) {
		return replayed("dated at or before " + ra.floor.Format(time.RFC3339Nano) + ", which signerd no longer tells from a replay of this RA's")
	}
	if !date.After(ra.prior) {
		return replayed("dated at or before " + ra.prior.Format(time.RFC3339Nano) + ", up to which signerd may have accepted it before it last met this RA")
	}
	if !record {
		return nil
	}
	if date.After(ra.stored) {
		mark := date.Add(replayLease)
		if err := st.RaiseRAReplayMark(serial, mark); err != nil {
			return &sigError{code: api.CodeStoreUnavailable,
				msg: fmt.Sprintf("recording the RA replay mark: %v", err)}
		}
		ra.stored = mark
	}
	ra.seen[nonce] = true
	heap.Push(&ra.byDate, replayEntry{nonce, date})
	for len(ra.byDate) > g.perRA {
		ra.forgetOldest()
	}
	g.clock++
	ra.used = g.clock
	if !full {
		delete(g.idle, id)
		if len(g.ras) >= g.maxRAs {
			g.idleLeastActive()
		}
		g.ras[id] = ra
	}
	return nil
}

// idleLeastActive moves the RA remembered in full whose last accepted
// request came first to the idle RAs, keeping its replayIdleNonces latest
// requests: what it drops its floor refuses. Past maxIdle the least
// recently accepted idle RA is forgotten: its store mark is past every
// date accepted from it, so when it is met again nothing it sent is
// accepted twice.
func (g *replayGuard) idleLeastActive() {
	id := leastActive(g.ras)
	ra := g.ras[id]
	delete(g.ras, id)
	for len(ra.byDate) > replayIdleNonces {
		ra.forgetOldest()
	}
	if len(g.idle) >= g.maxIdle {
		delete(g.idle, leastActive(g.idle))
	}
	g.idle[id] = ra
}

// leastActive is the RA in ras whose last accepted request came first.
func leastActive(ras map[string]*raReplay) string {
	var oldest string
	for id, ra := range ras {
		if oldest == "" || ra.used < ras[oldest].used {
			oldest = id
		}
	}
	return oldest
}

// forgetOldest drops the entry with the earliest date, raising the floor
// to it so that its request stays refused.
func (ra *raReplay) forgetOldest() {
	e := heap.Pop(&ra.byDate).(replayEntry)
	delete(ra.seen, e.nonce)
	if e.date.After(ra.floor) {
		ra.floor = e.date
	}
}

// On a shared store the claims (admit) are deleted once no node would
// take their dates any more: every nonceClaimSweep, at most
// nonceClaimBatch per statement (a short one, however many piled up
// while no node swept) and nonceClaimSweepBatches statements per sweep.
const (
	nonceClaimSweep        = time.Minute
	nonceClaimBatch        = 1000
	nonceClaimSweepBatches = 100
)

// nonceClaimRetention is how long past its date a claim is kept: max_skew,
// after which a node whose clock agrees with this one's refuses the date,
// and as much again, at least a minute, for a node whose clock is behind.
func nonceClaimRetention(skew time.Duration) time.Duration { return skew + max(skew, time.Minute) }

// nonceClaimExpirer is what the sweep needs of the store.
type nonceClaimExpirer interface {
	ExpireRANonceClaims(before time.Time, limit int) (int, error)
}

var _ nonceClaimExpirer = (*engine.Engine)(nil)

// expireNonceClaims deletes the claims kept past their retention at now,
// and returns how many.
func expireNonceClaims(st nonceClaimExpirer, now time.Time, skew time.Duration) (int, error) {
	before := now.Add(-nonceClaimRetention(skew))
	total := 0
	for range nonceClaimSweepBatches {
		n, err := st.ExpireRANonceClaims(before, nonceClaimBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("expire RA nonce claims dated before %s: %w", before.UTC().Format(time.RFC3339), err)
		}
		if n < nonceClaimBatch {
			break
		}
	}
	return total, nil
}

// sweepNonceClaims runs expireNonceClaims every nonceClaimSweep until
// the returned stop is called. A sweep that fails is logged and tried
// again at the next: claims left a while longer refuse nothing new.
func sweepNonceClaims(st nonceClaimExpirer, skew time.Duration, log *slog.Logger) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(nonceClaimSweep)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				if n, err := expireNonceClaims(st, now, skew); err != nil {
					log.Warn("RA nonce claims not expired", "err", err, "expired", n)
				} else if n > 0 {
					log.Debug("RA nonce claims expired", "expired", n)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}
