package main

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"signerd/api"
	"signerd/store"
)

// Refusals signerd makes before its engine sees a request (a peer without
// a role or outside it, an unknown route, a request it cannot read, a
// connection over the peer's cap) are audited as api.refused. Anyone who
// can open the socket can cause them, so neither what one event holds nor
// how many are written may grow with what a peer sends:
//
//   - an event holds METHOD PATH (the path as escaped on the wire) cut to
//     maxRefusalObject bytes and, when cut, the whole's length and SHA-256;
//     the reason is cut to maxRefusalReason bytes, control and
//     bidirectional characters replaced;
//   - refusals are tallied per peer (uid, role, and gid unless a role
//     names the uid) and code: the first is
//     written at once, later ones are counted in memory, and every
//     audit.refusal_window the count is written as one event
//     ("CODE: count=N"), and at shutdown. A peer with nothing counted in
//     a window is forgotten, so its next refusal is written at once again.
//
// A flood therefore writes at most two events per peer, action, code and window,
// whatever its rate, and every refusal is counted in an event (and in
// signerd_refusals_total). A crash loses the counts of the window under way.
//
// Identified principals are tallied the same way: a role holder's
// refusals say who it was, but a compromised RA could flood as well as a
// stranger, and the first refusal of each window is kept in full but for a
// signed request's evidence, which a refusal keeps bounded (its signature
// headers and the SM3 digests of what was signed, not the signed text):
// only an accepted request's events keep the whole text.
//
// The engine's refusals (certificate.issue refused for unknown_profile, a
// bad CSR, a conflict…) come here too (Record, the engine's
// RefusalSink), tallied per peer, action and code under their own action
// and outcome. A burned serial is not a refusal: the engine records it
// with its request, one event each.
type refusalLog struct {
	audit   func(store.Event) error
	roles   roles
	window  time.Duration
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	tallies map[refusalKey]*refusalTally
	closed  bool
	writing sync.WaitGroup // first refusals being written
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

const (
	actionRefused = "api.refused"
	// defaultRefusalWindow is audit.refusal_window's default.
	defaultRefusalWindow = 10 * time.Second
	// maxRefusalObject and maxRefusalReason bound what a refusal's event
	// holds of the request: a route's path with a serial fits whole.
	maxRefusalObject = 128
	maxRefusalReason = 256
)

// refusalKey is what refusals are tallied by: uid, role, action and code,
// and the gid unless a role names the uid (a stranger's, or a peer's whose
// roles come from its gid).
type refusalKey struct {
	uid, gid           int
	role, action, code string
}

// refusalTally is a peer's refusals with one action and code since its
// last event.
type refusalTally struct {
	count       int
	first, last time.Time
	actor       store.Actor // the last refused peer's (its pid, its evidence)
	object      string      // the last refused request
	outcome     string
	busy        bool // an event of this tally is being written
}

func (t *refusalTally) add(actor store.Actor, object string, at time.Time) {
	if t.count == 0 || at.Before(t.first) {
		t.first = at
	}
	if at.After(t.last) || t.count == 0 {
		t.last, t.actor, t.object = at, actor, object
	}
	t.count++
}

// newRefusalLog starts a refusal log tallying per window (audit.refusal_window,
// defaulted with the config).
func newRefusalLog(audit func(store.Event) error, roles roles, window time.Duration, log *slog.Logger, m *metrics) *refusalLog {
	l := &refusalLog{audit: audit, roles: roles, window: window, log: log, metrics: m,
		tallies: map[refusalKey]*refusalTally{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	go l.run()
	return l
}

// refuse records one refusal: at once if it is the peer's first with this
// code in the window, else in the tally. The code is the stable API code;
// reason is what the event says (the code, or "code: message").
func (l *refusalLog) refuse(actor store.Actor, object, code, reason string) {
	l.Record(store.Event{Actor: actor, Action: actionRefused, Object: object, Outcome: store.OutcomeRefused,
		Reason: store.BoundedText(reason, maxRefusalReason)}, code)
}

// Record records the refusal ev (bounded by its maker) with the stable
// code: at once if it is the peer's first with this action and code in
// the window, else in the tally. It is the engine's RefusalSink.
func (l *refusalLog) Record(ev store.Event, code string) {
	l.metrics.refusals.WithLabelValues(strconv.Itoa(ev.Actor.UID), code).Inc()
	ev.Actor.Evidence = boundedEvidence(ev.Actor.Evidence)
	now := time.Now()
	k := refusalKey{uid: ev.Actor.UID, gid: ev.Actor.GID, role: ev.Actor.Role, action: ev.Action, code: code}
	if l.roles.namesUID(k.uid) {
		// Its roles come from its uid: one principal whatever its gid, so
		// switching its egid starts no new tally.
		k.gid = -1
	}
	l.mu.Lock()
	if l.closed { // after the last tally was written: nothing would write this one
		l.mu.Unlock()
		l.write(ev, 1)
		return
	}
	if t, ok := l.tallies[k]; ok {
		t.add(ev.Actor, ev.Object, now)
		l.mu.Unlock()
		return
	}
	t := &refusalTally{busy: true, outcome: ev.Outcome}
	l.tallies[k] = t
	l.writing.Add(1)
	l.mu.Unlock()
	defer l.writing.Done()
	err := l.write(ev, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	t.busy = false
	if err != nil { // counted instead, so the next tally's event holds it
		t.add(ev.Actor, ev.Object, now)
	}
}

// refuseConnection records a connection refused over the peer's cap.
func (l *refusalLog) refuseConnection(p peer) {
	p.Roles = l.roles.rolesOf(p)
	l.refuse(p.actor(), "connection", string(api.CodeTooManyConnections), string(api.CodeTooManyConnections))
}

func (l *refusalLog) write(ev store.Event, count int) error {
	l.log.Warn("refused", "action", ev.Action, "uid", ev.Actor.UID, "gid", ev.Actor.GID, "pid", ev.Actor.PID, "role", ev.Actor.Role,
		"request", ev.Object, "reason", ev.Reason)
	err := l.audit(ev)
	if err != nil {
		l.log.Error("audit refusals", "uid", ev.Actor.UID, "reason", ev.Reason, "refusals", count, "err", err)
	}
	return err
}

func (l *refusalLog) run() {
	defer close(l.stopped)
	tick := time.NewTicker(l.window)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
			l.flush()
		}
	}
}

// flush writes one event per tally with refusals counted, and forgets
// tallies with none.
func (l *refusalLog) flush() {
	type due struct {
		key refusalKey
		refusalTally
	}
	var dues []due
	l.mu.Lock()
	for k, t := range l.tallies {
		switch {
		case t.busy:
		case t.count == 0:
			delete(l.tallies, k)
		default:
			dues = append(dues, due{k, *t})
			*t = refusalTally{busy: true, outcome: t.outcome}
		}
	}
	l.mu.Unlock()
	for _, d := range dues {
		err := l.write(store.Event{Actor: d.actor, Action: d.key.action, Object: d.object, Outcome: d.outcome,
			Reason: fmt.Sprintf("%s: count=%d", d.key.code, d.count),
			Detail: fmt.Sprintf("%d refusals (%s) of this peer from %s to %s, counted and recorded as one; actor and object are the last one's",
				d.count, d.key.code, d.first.UTC().Format(time.RFC3339Nano), d.last.UTC().Format(time.RFC3339Nano))}, d.count)
		l.mu.Lock()
		t := l.tallies[d.key]
		t.busy = false
		if err != nil { // kept for the next window
			if t.count == 0 {
				t.last, t.actor, t.object = d.last, d.actor, d.object
			}
			t.first, t.count = d.first, t.count+d.count
		}
		l.mu.Unlock()
	}
}

// Close writes what is counted; refusals after it are written one by one.
// Call it once the server has stopped taking requests.
func (l *refusalLog) Close() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		<-l.stopped
		l.writing.Wait()
		l.flush()
	})
}

// requestObject is a refused request's audit object: METHOD PATH, the
// path as escaped on the wire, bounded.
func requestObject(r *http.Request) string {
	s := r.Method + " " + r.URL.EscapedPath()
	if len(s) <= maxRefusalObject {
		return s
	}
	// Method and escaped path are ASCII, so any cut is a whole character.
	return fmt.Sprintf("%s… (cut from %d bytes, sha256 %x)", s[:maxRefusalObject], len(s), sha256.Sum256([]byte(s)))
}
