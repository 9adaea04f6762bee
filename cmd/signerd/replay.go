package main

import (
	"container/heap"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

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

// replayMarks is what the guard needs of the store.
type replayMarks interface {
	RAReplayMark(serial []byte) (time.Time, error)
	RaiseRAReplayMark(serial []byte, t time.Time) error
}

var _ replayMarks = (*engine.Engine)(nil)

// admit records the request (serial, nonce) dated date, or refuses it as a
// replay. The caller has checked its signature and that date is within
// skew of now.
func (g *replayGuard) admit(st replayMarks, serial []byte, nonce string, date, now time.Time, skew time.Duration) error {
	if g == nil {
		return &sigError{code: string(engine.CodeInternal), status: http.StatusInternalServerError, msg: "RA replay guard not set up"}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	id := hex.EncodeToString(serial)
	replayed := func(why string) error {
		return &sigError{code: codeReplayed, msg: fmt.Sprintf("request signed by %s with nonce %s at %s: %s; sign it again with a new nonce and date",
			id, nonce, date.Format(time.RFC3339Nano), why)}
	}
	ra, full := g.ras[id]
	if !full {
		ra = g.idle[id]
	}
	if ra == nil {
		// Not remembered until a request of it is accepted.
		t, err := st.RAReplayMark(serial)
		if err != nil {
			return &sigError{code: string(engine.CodeStoreUnavailable), status: http.StatusServiceUnavailable, msg: err.Error()}
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
	if date.After(ra.stored) {
		mark := date.Add(replayLease)
		if err := st.RaiseRAReplayMark(serial, mark); err != nil {
			return &sigError{code: string(engine.CodeStoreUnavailable), status: http.StatusServiceUnavailable,
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
