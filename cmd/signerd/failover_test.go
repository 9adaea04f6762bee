package main

import (
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"signerd/api"
	"signerd/store"
	"signerd/store/pgtest"
)

// failoverLoad is what the RA clients of TestNodesCarryOnAcrossFailover
// were told, on top of the raLedger: which node answered what, and when
// relative to the primary's kill and the standby's promotion.
type failoverLoad struct {
	ra *raLedger
	mu sync.Mutex
	// unrevoked are answered certificates not yet acknowledged revoked,
	// which the clients pick from to revoke.
	unrevoked []string
	// killed and promoted are set by the test as they happen; zero until
	// then.
	killed, promoted time.Time
	// firstAfter is when the first certificate answered after the
	// promotion was received.
	firstAfter time.Time
	// perNode counts certificates answered, per node and phase.
	perNode map[string]map[phase]int
	// afterPromotion counts, per node, certificates answered to requests
	// sent after the promotion: the node's own proof that it carries on.
	afterPromotion map[string]int
	// refused counts the answers that were not success, by node, call
	// and status or error, for the log.
	refused map[string]int
}

type phase string

const (
	phaseBefore phase = "before the kill"
	phaseDuring phase = "between kill and promotion"
	phaseAfter  phase = "after the promotion"
)

func newFailoverLoad() *failoverLoad {
	return &failoverLoad{ra: newRALedger(), perNode: map[string]map[phase]int{}, afterPromotion: map[string]int{},
		refused: map[string]int{}}
}

func (f *failoverLoad) phaseAt(at time.Time) phase {
	switch {
	case f.killed.IsZero() || at.Before(f.killed):
		return phaseBefore
	case f.promoted.IsZero() || at.Before(f.promoted):
		return phaseDuring
	default:
		return phaseAfter
	}
}

func (f *failoverLoad) noteIssued(node string, sent time.Time, serial string) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unrevoked = append(f.unrevoked, serial)
	if f.perNode[node] == nil {
		f.perNode[node] = map[phase]int{}
	}
	p := f.phaseAt(now)
	f.perNode[node][p]++
	if p == phaseAfter && f.firstAfter.IsZero() {
		f.firstAfter = now
	}
	if f.phaseAt(sent) == phaseAfter {
		f.afterPromotion[node]++
	}
}

func (f *failoverLoad) refusal(what string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused[what]++
}

// carriedOn reports whether each of nodes has answered n certificates to
// requests sent after the promotion.
func (f *failoverLoad) carriedOn(n int, nodes ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, node := range nodes {
		if f.afterPromotion[node] < n {
			return false
		}
	}
	return true
}

func (f *failoverLoad) answeredCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, phases := range f.perNode {
		for _, c := range phases {
			n += c
		}
	}
	return n
}

// work issues new certificates and revokes answered ones at d until stop
// is closed. Unlike raLedger.work it carries on through failures: a
// request refused or cut off is noted unanswered (retried at the end) and
// the next one is sent after a pause, as an RA keeps trying while the
// database fails over.
func (f *failoverLoad) work(t *testing.T, d *daemonProc, stop <-chan struct{}, prefix string) {
	node := nodeOf(t, d)
	c := d.client()
	// Longer than a store transaction may take (10 s), so that every
	// request gets signerd's answer.
	c.Timeout = 30 * time.Second
	pause := func() { time.Sleep(20 * time.Millisecond) }
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		var serial string
		f.mu.Lock()
		if len(f.unrevoked) > 0 && rand.IntN(4) == 0 {
			k := rand.IntN(len(f.unrevoked))
			serial = f.unrevoked[k]
			f.unrevoked = append(f.unrevoked[:k], f.unrevoked[k+1:]...)
		}
		f.mu.Unlock()
		if serial != "" {
			resp, err := c.Post("http://signerd/v1/certificates/"+serial+"/revoke", "application/json",
				strings.NewReader(`{"reason": "keyCompromise"}`))
			if err == nil && resp.StatusCode == http.StatusOK {
				resp.Body.Close()
				f.ra.mu.Lock()
				f.ra.revoked[serial] = true
				f.ra.mu.Unlock()
				continue
			}
			// Not known to be revoked: it may be picked again.
			f.mu.Lock()
			f.unrevoked = append(f.unrevoked, serial)
			f.mu.Unlock()
			f.refusal(fmt.Sprintf("revoke at %s: %s", node, outcome(resp, err)))
			pause()
			continue
		}
		id := fmt.Sprintf("%s-%d", prefix, i)
		body := issueBody(t, id, "person-sign")
		f.ra.mu.Lock()
		f.ra.bodies[id] = body
		f.ra.unknown = append(f.ra.unknown, id)
		f.ra.mu.Unlock()
		sent := time.Now()
		resp, err := c.Post("http://signerd/v1/certificates", "application/json", strings.NewReader(body))
		var v api.Certificate
		if err == nil && resp.StatusCode == http.StatusCreated {
			err = decodeJSON(resp, &v)
			resp.Body.Close()
			if err == nil {
				f.ra.answered(id, v.Serial)
				f.noteIssued(node, sent, v.Serial)
				continue
			}
			err = fmt.Errorf("certificate answer: %w", err)
		}
		f.refusal(fmt.Sprintf("issue at %s: %s", node, outcome(resp, err)))
		pause()
	}
}

// outcome names a failed call's answer for the log, status and code, or
// its error, and closes the answer's body.
func outcome(resp *http.Response, err error) string {
	if err != nil {
		return "no answer (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	var e api.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return strconv.Itoa(resp.StatusCode) + " " + string(e.Code)
}

// useFailoverDSN points d's config at the same database through a DSN
// naming its server and then standby, with target_session_attrs=read-write.
func (d *daemonProc) useFailoverDSN(t *testing.T, standby *pgtest.Server) {
	t.Helper()
	dsn := pgtest.FailoverDSN(t, d.dsn, d.pg, standby)
	d.editConfig(t, "dsn: "+strconv.Quote(d.dsn), "dsn: "+strconv.Quote(dsn))
	d.dsn = dsn
}

// stillRunning fails the test if d's process has exited.
func (d *daemonProc) stillRunning(t *testing.T, pid int, what string) {
	t.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err
		t.Fatalf("%s: signerd as node %s exited: %v\n%s", what, nodeOf(t, d), err, d.log)
	default:
	}
	if d.cmd.Process.Pid != pid {
		t.Fatalf("%s: node %s runs as pid %d, started as %d", what, nodeOf(t, d), d.cmd.Process.Pid, pid)
	}
}

// TestNodesCarryOnAcrossFailover is SPEC §9.2 and §9.3 together, issue 18's first failure:
// two signerd nodes, each with its own HSM holding the same issuing key,
// on a PostgreSQL primary with a synchronous standby, through a DSN naming
// both with target_session_attrs=read-write. RA clients issue and revoke
// at both; the primary is killed mid-load and the standby promoted. The
// same two processes, never restarted, find the new primary by themselves
// (health 200 with no request of the test's making), and serve on. Then
// every certificate and revocation acknowledged before, during or after
// the failover is on the new primary once, no serial is answered twice,
// retries of unanswered requests at the other node return the
// certificates recorded for them, the database verifies with both nodes'
// chains, and a CRL signed after the failover lists every acknowledged
// revocation.
func TestNodesCarryOnAcrossFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a primary and a standby")
	}
	const (
		// before is how many certificates are answered before the kill;
		// after, how many each node must answer to requests sent after
		// the promotion before the load stops.
		before, after = 40, 20
		// bound only stops a test whose nodes never carry on; the times
		// taken are logged, not asserted.
		bound = 45 * time.Second
	)
	primary := pgtest.Start(t)
	standby := primary.StartStandby(t, "signerd_standby")
	a := newNodeProc(t, primary, "a", "2s", "queue: {batch: 8}\naudit: {seal_every: 25}\n")
	a.useFailoverDSN(t, standby)
	b := a.nodeSibling(t, "b", true)
	a.start(t)
	b.start(t)
	nodes := []*daemonProc{a, b}
	pids := []int{a.cmd.Process.Pid, b.cmd.Process.Pid}
	defer func() {
		if t.Failed() {
			for _, d := range nodes {
				t.Logf("node %s's log:\n%s", nodeOf(t, d), d.log)
			}
		}
	}()

	f := newFailoverLoad()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		d := nodes[w%2]
		wg.Go(func() { f.work(t, d, stop, fmt.Sprintf("failover-%s-%d", nodeOf(t, d), w)) })
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	waitUntil(t, bound, "certificates answered before the kill", func() bool { return f.answeredCount() >= before })
	// Anywhere in a batch's course: being signed, being written, or
	// waiting for the standby's confirmation.
	time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)

	killed := time.Now()
	f.mu.Lock()
	f.killed = killed
	f.mu.Unlock()
	primary.Kill(t)
	// Both nodes find the database gone (their clients' writes fail)
	// before the standby takes over: the recovery below is theirs.
	for _, d := range nodes {
		health := d.awaitHealth(t, http.StatusServiceUnavailable, bound)
		if !strings.Contains(string(health.body), `"code": "store_unavailable"`) {
			t.Errorf("node %s's health with the primary down does not blame the store: %s", nodeOf(t, d), health.body)
		}
	}
	outage := time.Now()
	standby.Promote(t)
	promoted := time.Now()
	f.mu.Lock()
	f.promoted = promoted
	f.mu.Unlock()

	healthy := map[string]time.Duration{}
	for _, d := range nodes {
		d.awaitHealth(t, http.StatusOK, bound)
		healthy[nodeOf(t, d)] = time.Since(promoted).Round(time.Millisecond)
	}
	waitUntil(t, bound, "both nodes answering requests sent after the promotion", func() bool { return f.carriedOn(after, "a", "b") })
	stopLoad()
	for i, d := range nodes {
		d.stillRunning(t, pids[i], "after the failover")
	}

	f.mu.Lock()
	ms := func(from, to time.Time) time.Duration { return to.Sub(from).Round(time.Millisecond) }
	t.Logf("kill to both nodes' health 503: %v; promotion took %v; health 200 after the promotion: %v (bound %v); "+
		"kill to the first certificate answered after the promotion: %v",
		ms(killed, outage), ms(outage, promoted), healthy, bound, ms(killed, f.firstAfter))
	t.Logf("certificates answered: %v; refused or cut off: %v", f.perNode, f.refused)
	f.mu.Unlock()

	// Requests that got no answer, retried at the other node than the one
	// they were sent to: each is answered with a certificate, the one
	// recorded for it if any (checkStore: one certificate per request).
	l := f.ra
	unanswered := append([]string(nil), l.unknown...)
	for _, id := range unanswered {
		d := b
		if strings.HasPrefix(id, "failover-b-") {
			d = a
		}
		r := d.call(t, "POST", "/v1/certificates", l.bodies[id])
		for tries := 0; r.status == http.StatusConflict && r.code == "request_in_progress"; tries++ {
			// Left signing by a batch whose write failed; the node that
			// signed it burns its serial at its next write.
			if tries == 300 {
				t.Fatalf("retry of %s at %s: still request_in_progress after %d tries: %s", id, nodeOf(t, d), tries, r.body)
			}
			time.Sleep(100 * time.Millisecond)
			r = d.call(t, "POST", "/v1/certificates", l.bodies[id])
		}
		want(t, "retry of unanswered "+id+" at "+nodeOf(t, d), r, http.StatusCreated, "")
		l.answered(id, certView(t, r).Serial)
	}
	// Every answered request sent again, to the other node: the same
	// certificate.
	answered := make(map[string]string, len(l.issued))
	for id, serial := range l.issued {
		answered[id] = serial
	}
	serials := map[string]string{}
	for id, serial := range answered {
		if other, dup := serials[serial]; dup {
			t.Errorf("serial %s answered to %s and %s", serial, other, id)
		}
		serials[serial] = id
		d := a
		if strings.HasPrefix(id, "failover-a-") {
			d = b
		}
		if got := certView(t, d.call(t, "POST", "/v1/certificates", l.bodies[id])).Serial; got != serial {
			t.Errorf("replay of %s at %s returned %s, first answered %s", id, nodeOf(t, d), got, serial)
		}
	}

	// CRLs signed after the failover, one at each node: each lists every
	// acknowledged revocation, and the second's number is above the first's.
	var numbers []*big.Int
	for i, d := range nodes {
		crl := d.signCRLChecked(t, "CRL after the failover at "+nodeOf(t, d))
		listed := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			listed[e.SerialNumber.String()] = true
		}
		for serial := range l.revoked {
			if !listed[serialNumber(t, serial).String()] {
				t.Errorf("CRL signed at %s after the failover does not list %s, whose revocation was acknowledged", nodeOf(t, d), serial)
			}
		}
		if i > 0 && crl.Number.Cmp(numbers[i-1]) <= 0 {
			t.Errorf("CRL number %v at %s after %v", crl.Number, nodeOf(t, d), numbers[i-1])
		}
		numbers = append(numbers, crl.Number)
	}
	verifyChains(t, a.dsn, "after the failover, nodes serving", "a", "b")

	for _, d := range nodes {
		if err := d.stop(t); err != nil {
			t.Fatalf("stop %s: %v", nodeOf(t, d), err)
		}
	}
	// Everything below reads the promoted standby, through the same DSN:
	// the primary is down.
	l.checkStore(t, a, 0, true)
	checkIssueEvents(t, a, l, "a", "b")
	verifyChains(t, a.dsn, "after the failover, nodes stopped", "a", "b")
	t.Logf("%d certificates answered (%d of them on retry), %d revocations acknowledged, %d CRLs",
		len(answered), len(unanswered), len(l.revoked), len(numbers))
}

// checkIssueEvents holds the stopped nodes' chains to the ledger: every
// answered certificate has exactly one successful issue event across
// them, every serial with one is answered or recorded, and every
// acknowledged revocation has its event.
func checkIssueEvents(t *testing.T, d *daemonProc, l *raLedger, nodes ...string) {
	t.Helper()
	issues := map[string]int{}
	revocations := map[string]bool{}
	for _, node := range nodes {
		for _, ev := range chainEvents(t, d, node) {
			if ev.Outcome != store.OutcomeOK {
				continue
			}
			switch ev.Action {
			case "certificate.issue":
				issues[ev.Object]++
			case "certificate.revoke":
				revocations[ev.Object] = true
			}
		}
	}
	for id, serial := range l.issued {
		if issues[serial] != 1 {
			t.Errorf("%s's certificate %s has %d issue events", id, serial, issues[serial])
		}
	}
	var twice []string
	for serial, n := range issues {
		if n > 1 {
			twice = append(twice, serial)
		}
	}
	sort.Strings(twice)
	if len(twice) > 0 {
		t.Errorf("serials issued more than once: %v", twice)
	}
	for serial := range l.revoked {
		if !revocations[serial] {
			t.Errorf("the acknowledged revocation of %s has no event", serial)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after bound.
func waitUntil(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(bound); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, bound)
		}
	}
}
