package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"signerd/api"
	"signerd/audit"
	"signerd/store"
	"signerd/store/pgtest"
)

// crashKills is how many times TestSIGKILLUnderLoad kills signerd on one
// store: SIGNERD_CRASH_KILLS (make soak sets 120), or def.
func crashKills(t *testing.T, def int) int {
	t.Helper()
	if v := os.Getenv("SIGNERD_CRASH_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("SIGNERD_CRASH_KILLS=%q", v)
		}
		return n
	}
	return def
}

// raLedger is what the RA clients were told: the certificate each request
// got, and each revocation signerd acknowledged.
type raLedger struct {
	mu       sync.Mutex
	bodies   map[string]string // request id → body, for retries
	issued   map[string]string // request id → serial answered
	revoked  map[string]bool   // serial → revocation acknowledged
	unknown  []string          // requests sent without an answer
	received []string          // serials, in the order answered
}

func newRALedger() *raLedger {
	return &raLedger{bodies: map[string]string{}, issued: map[string]string{}, revoked: map[string]bool{}}
}

// issue sends request id (the same body on every retry) to d and notes
// the serial if it is answered.
func (l *raLedger) issue(t *testing.T, d *daemonProc, id string) reply {
	t.Helper()
	if l.bodies[id] == "" {
		l.bodies[id] = issueBody(t, id, "person-sign")
	}
	r := d.call(t, "POST", "/v1/certificates", l.bodies[id])
	if r.status == 201 {
		l.answered(id, certView(t, r).Serial)
	}
	return r
}

// TestSIGKILLUnderLoad kills signerd at random moments while RA clients
// issue and revoke, restarts it, and holds the store to what the clients
// were told (SPEC §3.6, §5.4), on a store file (20 kills) and on
// PostgreSQL (10: a round there costs twice as long, and make soak kills
// 120 times on each).
func TestSIGKILLUnderLoad(t *testing.T) {
	const extra = "queue: {batch: 8}\naudit: {seal_every: 25}\n"
	t.Run("bbolt", func(t *testing.T) {
		killUnderLoad(t, newDaemonProc(t, extra), crashKills(t, 20))
	})
	t.Run("postgres", func(t *testing.T) {
		killUnderLoad(t, newPostgresDaemonProc(t, pgtest.Shared(t), extra), crashKills(t, 10))
	})
}

// killUnderLoad is TestSIGKILLUnderLoad on d's store.
func killUnderLoad(t *testing.T, d *daemonProc, kills int) {
	l := newRALedger()
	for round := range kills {
		d.start(t)
		l.retryUnanswered(t, d, round)
		l.checkReplays(t, d, round)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() { l.work(t, d, stop, fmt.Sprintf("crash-%03d-%d", round, w)) })
		}
		time.Sleep(time.Duration(30+rand.IntN(150)) * time.Millisecond)
		d.cmd.Process.Kill()
		<-d.exited
		d.exited <- nil
		close(stop)
		wg.Wait()
		l.checkStore(t, d, round, false)
		if t.Failed() {
			t.FailNow()
		}
	}
	// A clean run at the end: every retry is answered, no serial is left
	// reserved, and the audit bundle verifies against the root.
	d.start(t)
	l.retryUnanswered(t, d, kills)
	bundle := d.callAsWith(t, auditorUID, "POST", "/v1/audit/export", "{}")
	if bundle.status != http.StatusOK {
		t.Fatalf("export: %d %s", bundle.status, bundle.body)
	}
	if rep := audit.Verify(bundle.body, audit.Options{Root: d.ca.Root}); !rep.OK() || !rep.Anchored {
		t.Errorf("audit bundle after %d kills: %v", kills, rep.Problems)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	l.checkStore(t, d, kills, true)
	t.Logf("%d kills: %d certificates answered, %d revocations acknowledged", kills, len(l.received), len(l.revoked))
}

// work issues new certificates and revokes answered ones until stop or
// until signerd stops answering.
func (l *raLedger) work(t *testing.T, d *daemonProc, stop chan struct{}, prefix string) {
	l.workWithin(t, d, stop, prefix, 5*time.Second)
}

// workWithin is work with each request given up after timeout.
func (l *raLedger) workWithin(t *testing.T, d *daemonProc, stop chan struct{}, prefix string, timeout time.Duration) {
	c := d.client()
	c.Timeout = timeout
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		l.mu.Lock()
		var serial string
		if len(l.received) > 0 && rand.IntN(4) == 0 {
			serial = l.received[rand.IntN(len(l.received))]
		}
		l.mu.Unlock()
		if serial != "" {
			resp, err := c.Post("http://signerd/v1/certificates/"+serial+"/revoke", "application/json",
				strings.NewReader(`{"reason": "keyCompromise"}`))
			if err != nil {
				return
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				l.mu.Lock()
				l.revoked[serial] = true
				l.mu.Unlock()
			}
			continue
		}
		id := fmt.Sprintf("%s-%d", prefix, i)
		body := issueBody(t, id, "person-sign")
		l.mu.Lock()
		l.bodies[id] = body
		l.unknown = append(l.unknown, id)
		l.mu.Unlock()
		resp, err := c.Post("http://signerd/v1/certificates", "application/json", strings.NewReader(body))
		if err != nil {
			return // killed: the RA does not know; it retries later
		}
		var v api.Certificate
		ok := resp.StatusCode == http.StatusCreated && decodeJSON(resp, &v) == nil
		resp.Body.Close()
		if ok {
			l.answered(id, v.Serial)
		}
	}
}

// answeredSerials are the serials answered so far.
func (l *raLedger) answeredSerials() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.received...)
}

func (l *raLedger) answered(id, serial string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.issued[id]; !seen {
		l.received = append(l.received, serial)
	}
	l.issued[id] = serial
	for i, u := range l.unknown {
		if u == id {
			l.unknown = append(l.unknown[:i], l.unknown[i+1:]...)
			break
		}
	}
}

// retryUnanswered sends again every request that got no answer; each
// gets a certificate (the one recorded before the kill, if any).
func (l *raLedger) retryUnanswered(t *testing.T, d *daemonProc, round int) {
	t.Helper()
	l.mu.Lock()
	ids := append([]string(nil), l.unknown...)
	l.mu.Unlock()
	for _, id := range ids {
		r := d.call(t, "POST", "/v1/certificates", l.bodies[id])
		if r.status != http.StatusCreated {
			t.Fatalf("round %d: retry of %s: %d %s", round, id, r.status, r.body)
		}
		l.answered(id, certView(t, r).Serial)
	}
}

// checkReplays has a few answered requests sent again: each returns the
// certificate it got the first time.
func (l *raLedger) checkReplays(t *testing.T, d *daemonProc, round int) {
	t.Helper()
	l.mu.Lock()
	var ids []string
	for id := range l.issued {
		if len(ids) == 3 {
			break
		}
		ids = append(ids, id)
	}
	l.mu.Unlock()
	for _, id := range ids {
		if got := certView(t, d.call(t, "POST", "/v1/certificates", l.bodies[id])).Serial; got != l.issued[id] {
			t.Errorf("round %d: replay of %s returned %s, first answered %s", round, id, got, l.issued[id])
		}
	}
}

// checkStore opens the store while signerd is down. Every certificate a
// client received is recorded, with the status it was told; every
// certificate recorded is one of its request's and its serial's record
// says issued; a serial still reserved belongs to a request in flight
// (and none is left after a clean stop); the audit chain verifies.
func (l *raLedger) checkStore(t *testing.T, d *daemonProc, round int, clean bool) {
	t.Helper()
	st := d.openStopped(t)
	defer st.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := st.View(func(tx *store.Tx) error {
		certs := map[string]*store.Certificate{}
		if err := tx.Certificates(func(c *store.Certificate) error {
			certs[store.HexSerial(c.Serial)] = c
			return nil
		}); err != nil {
			return fmt.Errorf("read certificates: %w", err)
		}
		for id, serial := range l.issued {
			c, ok := certs[serial]
			switch {
			case !ok:
				t.Errorf("round %d: %s was answered with %s, which the store does not hold", round, id, serial)
				continue
			case c.RequestID != id:
				t.Errorf("round %d: %s belongs to request %s, answered to %s", round, serial, c.RequestID, id)
			case l.revoked[serial] && c.Status != store.StatusRevoked:
				t.Errorf("round %d: revocation of %s was acknowledged; the store says %s", round, serial, c.Status)
			}
		}
		perRequest := map[string]string{}
		for hex, c := range certs {
			if other, dup := perRequest[c.RequestID]; dup && c.Replaces == nil {
				t.Errorf("round %d: request %s has two certificates, %s and %s", round, c.RequestID, other, hex)
			}
			perRequest[c.RequestID] = hex
			if s, err := tx.Serial(c.Serial); err != nil || s.State != store.SerialIssued {
				t.Errorf("round %d: certificate %s's serial record: %+v, %v", round, hex, s, err)
			}
		}
		inFlight, err := tx.InFlight()
		if err != nil {
			t.Error(err)
		}
		flying := map[string]bool{}
		for _, r := range inFlight {
			flying[store.HexSerial(r.Serial)] = true
		}
		if err := tx.Serials(func(serial []byte, s store.Serial) error {
			hex := store.HexSerial(serial)
			switch s.State {
			case store.SerialIssued:
				if certs[hex] == nil {
					t.Errorf("round %d: serial %s is issued but no certificate is recorded", round, hex)
				}
			case store.SerialBurned:
				if certs[hex] != nil {
					t.Errorf("round %d: serial %s is burned but has a certificate", round, hex)
				}
			case store.SerialReserved:
				if clean || !flying[hex] {
					t.Errorf("round %d: serial %s reserved with no request in flight (clean stop: %v)", round, hex, clean)
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("read serials: %w", err)
		}
		if err := tx.VerifyAuditChain(); err != nil {
			t.Errorf("round %d: audit chain: %v", round, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
}
