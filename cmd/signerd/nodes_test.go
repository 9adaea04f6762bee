package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/store"
	"signerd/store/pgtest"
)

// newNodeProc is signerd as node name on a new database on srv, with
// extra appended to its config and its claim's lease set to lease.
func newNodeProc(t *testing.T, srv *pgtest.Server, name, lease, extra string) *daemonProc {
	t.Helper()
	d := newPostgresDaemonProc(t, srv, "node: "+name+"\n"+extra)
	d.editConfig(t, "dsn: "+strconv.Quote(d.dsn)+"}", "dsn: "+strconv.Quote(d.dsn)+", node_lease: "+lease+"}")
	return d
}

// nodeSibling is a signerd on d's database and CA, as node name, in a
// folder of its own with its own socket. With ownToken its HSM is a copy
// of d's token folder as it is now (what restoring a backup of the
// issuing key to another HSM gives); otherwise it shares d's token.
func (d *daemonProc) nodeSibling(t *testing.T, name string, ownToken bool) *daemonProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "signerd-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	s := &daemonProc{ca: d.ca, dir: dir, socket: filepath.Join(dir, "signerd.sock"), config: filepath.Join(dir, "signerd.yaml"),
		dsn: d.dsn, pg: d.pg}
	raw, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), d.socket, s.socket, 1)
	cfg = strings.Replace(cfg, filepath.Join(d.dir, pinRefusedMarkerName), filepath.Join(dir, pinRefusedMarkerName), 1)
	cfg = strings.Replace(cfg, "\nnode: "+nodeOf(t, d)+"\n", "\nnode: "+name+"\n", 1)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if ownToken {
		s.env = append(append([]string(nil), d.env...), "SOFTHSM2_CONF="+copyTokenDir(t, d.tokenDir()))
	} else {
		s.env = d.env
	}
	return s
}

// nodeOf is the node name d's config gives.
func nodeOf(t *testing.T, d *daemonProc) string {
	t.Helper()
	raw, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "node: "); ok {
			return name
		}
	}
	t.Fatalf("no node in %s", d.config)
	return ""
}

// tokenDir is the SoftHSM2 token folder d's signerd uses.
func (d *daemonProc) tokenDir() string {
	for _, e := range d.env {
		if conf, ok := strings.CutPrefix(e, "SOFTHSM2_CONF="); ok {
			return filepath.Join(filepath.Dir(conf), "tokens")
		}
	}
	return d.ca.Token.Dir
}

// copyTokenDir copies a SoftHSM2 token folder beside a softhsm2.conf of
// its own and returns that conf's path.
func copyTokenDir(t *testing.T, tokens string) string {
	t.Helper()
	base, err := os.MkdirTemp("", "signerd-softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	to := filepath.Join(base, "tokens")
	if out, err := exec.Command("cp", "-a", tokens, to).CombinedOutput(); err != nil {
		t.Fatalf("copy the token folder: %v\n%s", err, out)
	}
	conf := filepath.Join(base, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+to+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// verifyChains checks the database while nodes may serve from it: no
// finding, and an audit chain for each of nodes holding events.
func verifyChains(t *testing.T, dsn string, what string, nodes ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := store.VerifyPostgres(ctx, dsn)
	if err != nil {
		t.Fatalf("%s: verify: %v", what, err)
	}
	if !r.OK() {
		t.Errorf("%s: verify: %+v", what, r.Findings)
	}
	chains := map[string]store.ChainReport{}
	for _, c := range r.Chains {
		chains[c.Node] = c
	}
	for _, n := range nodes {
		if c, ok := chains[n]; !ok || c.Events == 0 || c.AuditHead != c.Events {
			t.Errorf("%s: node %s's chain: %+v (chains %+v)", what, n, c, r.Chains)
		}
	}
}

// issueBoth sends one request to a and b at once, and again to whichever
// answered request_in_progress until it gets the certificate; both must
// then hold the same one.
func issueBoth(t *testing.T, a, b *daemonProc, body string) (api.Certificate, api.Certificate) {
	t.Helper()
	var got [2]reply
	var errs [2]error
	var wg sync.WaitGroup
	for i, d := range []*daemonProc{a, b} {
		wg.Go(func() { got[i], errs[i] = d.callWithin(30*time.Second, "POST", "/v1/certificates", body) })
	}
	wg.Wait()
	var views [2]api.Certificate
	for i, d := range []*daemonProc{a, b} {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for tries := 0; got[i].status == http.StatusConflict && got[i].code == "request_in_progress"; tries++ {
			if tries == 300 {
				t.Fatalf("still request_in_progress after %d tries: %s", tries, got[i].body)
			}
			time.Sleep(100 * time.Millisecond)
			got[i] = d.call(t, "POST", "/v1/certificates", body)
		}
		want(t, "issue at both at once", got[i], http.StatusCreated, "")
		views[i] = certView(t, got[i])
	}
	return views[0], views[1]
}

// serialNumber is a serial as the API gives it (hex), as a number.
func serialNumber(t *testing.T, hexSerial string) *big.Int {
	t.Helper()
	raw, err := hex.DecodeString(hexSerial)
	if err != nil {
		t.Fatalf("serial %q: %v", hexSerial, err)
	}
	return new(big.Int).SetBytes(raw)
}

// TestTwoNodesShareOneStore: nodes a and b, each with its own HSM holding
// the same issuing key, on one database. A request id issues once across
// them, whichever node it reaches and however it races; a serial is never
// drawn twice; a revocation at one node is in the other's status answers
// and CRLs; CRL numbers rise whichever node signs; statistics count both
// nodes' work; a second process as a live node is refused; each node's
// audit chain verifies.
func TestTwoNodesShareOneStore(t *testing.T) {
	srv := pgtest.Shared(t)
	a := newNodeProc(t, srv, "a", "2s", "queue: {batch: 8}\n")
	b := a.nodeSibling(t, "b", true)
	a.start(t)
	b.start(t)
	l := newRALedger()

	body := issueBody(t, "two-1", "person-sign")
	first := a.call(t, "POST", "/v1/certificates", body)
	want(t, "issue at a", first, http.StatusCreated, "")
	retried := b.call(t, "POST", "/v1/certificates", body)
	want(t, "retry at b", retried, http.StatusCreated, "")
	if x, y := certView(t, first), certView(t, retried); x.Serial != y.Serial || x.Certificate != y.Certificate {
		t.Fatalf("request two-1 answered %s at a and %s at b", x.Serial, y.Serial)
	}
	l.bodies["two-1"] = body
	l.answered("two-1", certView(t, first).Serial)

	for i := range 8 {
		id := fmt.Sprintf("both-%d", i)
		l.bodies[id] = issueBody(t, id, "person-sign")
		x, y := issueBoth(t, a, b, l.bodies[id])
		if x.Serial != y.Serial || x.Certificate != y.Certificate {
			t.Fatalf("request %s sent to both at once: %s from a, %s from b", id, x.Serial, y.Serial)
		}
		l.answered(id, x.Serial)
	}

	// Many issues at both at once: no serial twice.
	var wg sync.WaitGroup
	for _, d := range []*daemonProc{a, b} {
		for w := range 3 {
			wg.Go(func() {
				for i := range 12 {
					id := fmt.Sprintf("load-%s-%d-%d", nodeOf(t, d), w, i)
					body := issueBody(t, id, "person-sign")
					l.mu.Lock()
					l.bodies[id] = body
					l.mu.Unlock()
					r, err := d.callWithin(30*time.Second, "POST", "/v1/certificates", body)
					if err != nil || r.status != http.StatusCreated {
						t.Errorf("%s: %d %s %v", id, r.status, r.body, err)
						return
					}
					var v api.Certificate
					if err := json.Unmarshal(r.body, &v); err != nil {
						t.Errorf("%s: %v", id, err)
						return
					}
					l.answered(id, v.Serial)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	serials := map[string]string{}
	for id, s := range l.issued {
		if other, dup := serials[s]; dup {
			t.Errorf("serial %s answered to %s and %s", s, other, id)
		}
		serials[s] = id
	}

	// A revocation at a, seen at b; CRLs from either node, numbers rising.
	revoked := l.issued["load-a-0-0"]
	want(t, "revoke at a", a.call(t, "POST", "/v1/certificates/"+revoked+"/revoke", `{"reason":"keyCompromise"}`), http.StatusOK, "")
	l.revoked[revoked] = true
	if v := certView(t, b.call(t, "GET", "/v1/certificates/"+revoked, "")); v.Status != "revoked" {
		t.Errorf("b answers %s is %s after its revocation at a", revoked, v.Status)
	}
	var last *smx509.RevocationList
	for i, d := range []*daemonProc{b, a, b, a} {
		crl := d.signCRLChecked(t, fmt.Sprintf("CRL %d at %s", i, nodeOf(t, d)))
		if last != nil && crl.Number.Cmp(last.Number) <= 0 {
			t.Errorf("CRL %d at %s: number %v after %v", i, nodeOf(t, d), crl.Number, last.Number)
		}
		listed := false
		for _, e := range crl.RevokedCertificateEntries {
			listed = listed || e.SerialNumber.Cmp(serialNumber(t, revoked)) == 0
		}
		if !listed {
			t.Errorf("CRL %d signed at %s does not list %s, revoked at a", i, nodeOf(t, d), revoked)
		}
		last = crl
	}

	month := store.Month(time.Now())
	for _, d := range []*daemonProc{a, b} {
		var stats api.Statistics
		r := d.callAs(t, auditorUID, "GET", "/v1/statistics/"+month)
		if err := json.Unmarshal(r.body, &stats); err != nil {
			t.Fatalf("statistics at %s: %d %s", nodeOf(t, d), r.status, r.body)
		}
		if got := stats.Profiles["person-sign"]; got["issued"] != uint64(len(l.issued)) || got["revoked"] != 1 {
			t.Errorf("statistics at %s: %v; want %d issued and 1 revoked", nodeOf(t, d), got, len(l.issued))
		}
	}

	// A second process as node a, while a serves: refused, naming the
	// node and its holder.
	again := a.nodeSibling(t, "a", false)
	out, code := refusedStart(t, again)
	if code != exitFailure || !strings.Contains(out, "node a") || !strings.Contains(out, "in use") {
		t.Errorf("a second process as node a: exit %d, want %d and node a named in use\n%s", code, exitFailure, out)
	}
	want(t, "a serves on", a.call(t, "GET", "/v1/certificates/"+revoked, ""), http.StatusOK, "")

	for _, d := range []*daemonProc{a, b} {
		if err := d.stop(t); err != nil {
			t.Fatalf("stop %s: %v\n%s", nodeOf(t, d), err, d.log)
		}
	}
	l.checkStore(t, a, 0, true)
	verifyChains(t, a.dsn, "after both stopped", "a", "b")
}

// awaitAnswers waits until the RA clients have n certificates.
func (l *raLedger) awaitAnswers(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		got := len(l.received)
		l.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d certificates answered after a minute, want %d", got, n)
		}
	}
}

// chainEvents are node's audit events in the stopped nodes' database.
func chainEvents(t *testing.T, d *daemonProc, node string) []store.Event {
	t.Helper()
	st := d.openStopped(t)
	defer st.Close()
	var evs []store.Event
	if err := st.View(func(tx *store.Tx) error {
		return tx.Chain(node).Events(1, func(ev store.Event, _ []byte) error { evs = append(evs, ev); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestNodeFrozenWhileItsNameIsTakenOver: node a is frozen (SIGSTOP) under
// RA load, perhaps mid-batch, and a second process takes its name over
// and serves. Resumed, the first acknowledges nothing it had not recorded
// before the takeover: its clients waiting and new requests alike are
// refused store_unavailable, its health says so for good, and what it
// signs is never recorded. No serial is reused, every certificate either
// process answered is recorded once, and node a's chain verifies.
func TestNodeFrozenWhileItsNameIsTakenOver(t *testing.T) {
	srv := pgtest.Shared(t)
	first := newNodeProc(t, srv, "a", "1s", "queue: {batch: 8}\naudit: {seal_every: 25}\n")
	first.start(t)
	l := newRALedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		// Clients that wait longer than the freeze lasts: what the first
		// process answers them once resumed is checked too.
		wg.Go(func() { l.workWithin(t, first, stop, fmt.Sprintf("frozen-%d", w), time.Minute) })
	}
	l.awaitAnswers(t, 20)
	time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
	if err := first.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	close(stop)
	frozenAt := len(l.answeredSerials())

	// The same HSM: a process restarted on the machine while the old one
	// hangs.
	second := first.nodeSibling(t, "a", false)
	second.start(t)
	for i := range 4 {
		want(t, "issue at the second process", l.issue(t, second, fmt.Sprintf("second-%d", i)), http.StatusCreated, "")
	}

	var late []reply
	var lateMu sync.Mutex
	var waiting sync.WaitGroup
	for i := range 3 {
		// Sent while the first is frozen, read by it once resumed.
		id := fmt.Sprintf("sent-frozen-%d", i)
		body := issueBody(t, id, "person-sign")
		waiting.Go(func() {
			r, err := first.callWithin(time.Minute, "POST", "/v1/certificates", body)
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
			lateMu.Lock()
			late = append(late, r)
			lateMu.Unlock()
		})
	}
	if err := first.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	waiting.Wait()
	t.Logf("%d certificates answered before the freeze, %d by the first process after it", frozenAt, len(l.answeredSerials())-frozenAt-4)
	for _, r := range late {
		want(t, "a request sent to the frozen process", r, http.StatusServiceUnavailable, "store_unavailable")
	}
	health := first.awaitHealth(t, http.StatusServiceUnavailable, 20*time.Second)
	if !strings.Contains(string(health.body), "took over") {
		t.Errorf("the resumed process's health does not say its name was taken over: %s", health.body)
	}
	// Certificates the second process issued, and nobody revoked: a
	// refusal of a change to them is the store's, not their state's.
	answered, other := l.issued["second-0"], l.issued["second-1"]
	refused := []struct{ what, method, path, body string }{
		{"issue", "POST", "/v1/certificates", issueBody(t, "after-resume", "person-sign")},
		{"revoke", "POST", "/v1/certificates/" + answered + "/revoke", `{"reason":"keyCompromise"}`},
		{"hold", "POST", "/v1/certificates/" + answered + "/hold", ""},
	}
	for _, r := range refused {
		want(t, r.what+" at the resumed process", first.call(t, r.method, r.path, r.body), http.StatusServiceUnavailable, "store_unavailable")
	}
	want(t, "CRL at the resumed process", first.callAs(t, operatorUID, "POST", "/v1/crl"), http.StatusServiceUnavailable, "store_unavailable")
	want(t, "health after all that", first.callAs(t, operatorUID, "GET", "/v1/health"), http.StatusServiceUnavailable, "store_unavailable")
	// Reads are still answered, from the store as the second process
	// leaves it: nothing the first process says is its own.
	want(t, "revoke at the second process", second.call(t, "POST", "/v1/certificates/"+other+"/revoke", `{"reason":"superseded"}`), http.StatusOK, "")
	l.revoked[other] = true
	if v := certView(t, first.call(t, "GET", "/v1/certificates/"+other, "")); v.Status != "revoked" {
		t.Errorf("the resumed process answers %s is %s after its revocation by the second", other, v.Status)
	}

	l.retryUnanswered(t, second, 0)
	l.checkReplays(t, second, 0)
	want(t, "the second serves on", l.issue(t, second, "second-last"), http.StatusCreated, "")
	first.stop(t)
	if err := second.stop(t); err != nil {
		t.Fatalf("stop the second process: %v\n%s", err, second.log)
	}

	l.checkStore(t, second, 0, true)
	verifyChains(t, second.dsn, "after the takeover", "a")
	st := second.openStopped(t)
	st.View(func(tx *store.Tx) error {
		for i := range 3 {
			if _, err := tx.Request(fmt.Sprintf("sent-frozen-%d", i)); err == nil {
				t.Errorf("sent-frozen-%d is recorded", i)
			}
		}
		if _, err := tx.Request("after-resume"); err == nil {
			t.Error("after-resume is recorded")
		}
		return nil
	})
	st.Close()
	takenOver := 0
	for _, ev := range chainEvents(t, second, "a") {
		if ev.Action == "signerd.start" && strings.Contains(ev.Detail, "taken over from") {
			takenOver++
		}
	}
	if takenOver != 1 {
		t.Errorf("%d start events say node a was taken over, want 1", takenOver)
	}
}

// TestNodeKilledUnderLoadBesideAnother is TestSIGKILLUnderLoad on two
// nodes sharing a database: node a is killed (SIGKILL) again and again
// while RA clients load both, and restarted as a, taking its claim over
// after one lease. The RA retries a's unanswered requests at b: each gets
// the certificate recorded for it, or request_in_progress while a's
// restart has not yet burned what it left being signed. Every answered
// certificate is recorded once, no serial is reused, and both nodes'
// chains verify. 4 kills here; make soak sets SIGNERD_CRASH_KILLS.
func TestNodeKilledUnderLoadBesideAnother(t *testing.T) {
	const extra = "queue: {batch: 8}\naudit: {seal_every: 25}\n"
	a := newNodeProc(t, pgtest.Shared(t), "a", "1s", extra)
	b := a.nodeSibling(t, "b", true)
	b.start(t)
	l := newRALedger()
	kills := crashKills(t, 4)
	inProgress := 0
	for round := range kills {
		a.start(t)
		l.retryUnanswered(t, b, round)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 6 {
			d := []*daemonProc{a, b}[w%2]
			wg.Go(func() { l.work(t, d, stop, fmt.Sprintf("nodes-%03d-%d", round, w)) })
		}
		time.Sleep(time.Duration(30+rand.IntN(150)) * time.Millisecond)
		a.cmd.Process.Kill()
		<-a.exited
		a.exited <- nil
		close(stop)
		wg.Wait()
		// While a is down: what it recorded is b's answer too; what it
		// left being signed stays in progress until a burns it.
		inProgress += l.retryAt(t, b, round)
		l.checkReplays(t, b, round)
		verifyChains(t, b.dsn, fmt.Sprintf("round %d", round), "a", "b")
		if t.Failed() {
			t.FailNow()
		}
	}
	a.start(t)
	l.retryUnanswered(t, b, kills)
	for _, d := range []*daemonProc{a, b} {
		if err := d.stop(t); err != nil {
			t.Fatalf("stop %s: %v\n%s", nodeOf(t, d), err, d.log)
		}
	}
	l.checkStore(t, a, kills, true)
	verifyChains(t, a.dsn, "at the end", "a", "b")
	t.Logf("%d kills: %d certificates answered, %d revocations acknowledged, %d retries at b found a's request in progress",
		kills, len(l.received), len(l.revoked), inProgress)
}

// retryAt sends every unanswered request to d: each is answered with its
// certificate, or request_in_progress (being signed by a node that is
// down), which it counts; those stay unanswered.
func (l *raLedger) retryAt(t *testing.T, d *daemonProc, round int) int {
	t.Helper()
	l.mu.Lock()
	ids := append([]string(nil), l.unknown...)
	l.mu.Unlock()
	inProgress := 0
	for _, id := range ids {
		r := d.call(t, "POST", "/v1/certificates", l.bodies[id])
		switch {
		case r.status == http.StatusCreated:
			l.answered(id, certView(t, r).Serial)
		case r.status == http.StatusConflict && r.code == "request_in_progress":
			if !strings.Contains(string(r.body), "being signed by node a") {
				t.Errorf("round %d: retry of %s at %s: %s; want node a named", round, id, nodeOf(t, d), r.body)
			}
			inProgress++
		default:
			t.Fatalf("round %d: retry of %s at %s: %d %s", round, id, nodeOf(t, d), r.status, r.body)
		}
	}
	return inProgress
}
