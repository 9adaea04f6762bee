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

// replayCacheSize bounds the (serial, nonce) pairs signerd remembers: about
// 440 signed requests a second, sustained over a 5-minute skew window, at
// some 150 bytes each.
const replayCacheSize = 1 << 17

// replayLease is how far past a request's date an RA's stored replay mark
// is raised: the mark is written at most once per lease per RA, and after a
// restart an RA's requests dated up to its mark are refused.
const replayLease = time.Second

// replayGuard refuses a signed RA request it has accepted before.
//
// In memory it holds every (serial, nonce) accepted whose date still passes
// the skew check, and a floor: any date at or before it is refused. An
// entry leaves only by raising the floor to its date, when it goes stale
// (its date more than the skew behind the clock) or when the cache is
// full (the oldest goes), so whatever the cache forgets the floor still
// refuses, even if the clock is later stepped back.
//
// Across restarts each RA certificate has a replay mark in the store, kept
// ahead of every date accepted from it (raised by replayLease at most once
// per lease). A new run refuses that RA's requests dated at or before the
// mark it finds, so a restart, however quick, reopens no replay: a request
// the last run accepted, even one dated up to the skew ahead of the clock,
// is at or before the mark. The cost is that right after a restart an RA's
// requests are refused (replayed_request) until they are dated past its
// mark, at most replayLease after its last accepted date.
type replayGuard struct {
	mu     sync.Mutex
	max    int
	floor  time.Time
	seen   map[replayKey]bool
	byDate replayHeap
	// marks are each RA serial's mark found at its first request this run
	// (prior) and as stored now (stored).
	marks map[string]*replayMark
}

type replayKey struct{ serial, nonce string }

type replayMark struct{ prior, stored time.Time }

type replayEntry struct {
	key  replayKey
	date time.Time
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

func newReplayGuard(max int) *replayGuard {
	return &replayGuard{max: max, seen: map[replayKey]bool{}, marks: map[string]*replayMark{}}
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
	for len(g.byDate) > 0 && now.Sub(g.byDate[0].date) > skew {
		g.forgetOldest()
	}
	key := replayKey{hex.EncodeToString(serial), nonce}
	replayed := func(why string) error {
		return &sigError{code: codeReplayed, msg: fmt.Sprintf("request signed by %s with nonce %s at %s: %s; sign it again with a new nonce and date",
			key.serial, nonce, date.Format(time.RFC3339Nano), why)}
	}
	if g.seen[key] {
		return replayed("accepted before")
	}
	if !date.After(g.floor) {
		return replayed("dated at or before " + g.floor.Format(time.RFC3339Nano) + ", which signerd no longer tells from a replay")
	}
	m := g.marks[key.serial]
	if m == nil {
		t, err := st.RAReplayMark(serial)
		if err != nil {
			return &sigError{code: string(engine.CodeStoreUnavailable), status: http.StatusServiceUnavailable, msg: err.Error()}
		}
		m = &replayMark{prior: t, stored: t}
		g.marks[key.serial] = m
	}
	if !date.After(m.prior) {
		return replayed("dated at or before " + m.prior.Format(time.RFC3339Nano) + ", up to which an earlier run of signerd may have accepted it")
	}
	if date.After(m.stored) {
		mark := date.Add(replayLease)
		if err := st.RaiseRAReplayMark(serial, mark); err != nil {
			return &sigError{code: string(engine.CodeStoreUnavailable), status: http.StatusServiceUnavailable,
				msg: fmt.Sprintf("recording the RA replay mark: %v", err)}
		}
		m.stored = mark
	}
	g.seen[key] = true
	heap.Push(&g.byDate, replayEntry{key, date})
	for len(g.byDate) > g.max {
		g.forgetOldest()
	}
	return nil
}

// forgetOldest drops the entry with the earliest date, raising the floor
// to it so that its request stays refused.
func (g *replayGuard) forgetOldest() {
	e := heap.Pop(&g.byDate).(replayEntry)
	delete(g.seen, e.key)
	if e.date.After(g.floor) {
		g.floor = e.date
	}
}
