package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
	"signerd/store/pgtest"
)

// wantStoreUnavailable fails t unless err is an *engine.Error with code
// store_unavailable, which the RA may retry, and nothing else came back.
func wantStoreUnavailable(t *testing.T, what string, got any, err error) {
	t.Helper()
	var ee *engine.Error
	if !errors.As(err, &ee) || ee.Code != api.CodeStoreUnavailable || !ee.Code.Retryable() {
		t.Fatalf("%s while the database takes no writes: %v; want a retryable %s", what, err, api.CodeStoreUnavailable)
	}
	switch v := got.(type) {
	case *store.Certificate:
		if v != nil {
			t.Fatalf("%s returned certificate %x with %v", what, v.Serial, err)
		}
	case []byte:
		if v != nil {
			t.Fatalf("%s returned %d bytes with %v", what, len(v), err)
		}
	}
}

// waitWritable waits, sending nothing to the engine, until it reports the
// store writable again: its watcher found the database back.
func waitWritable(t *testing.T, e *engine.Engine) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !e.Store().Writable; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("store still not writable a minute after the database came back: %+v", e.Store())
		}
	}
}

// storeLedger is what a store holds about requests, serials and
// certificates.
type storeLedger struct {
	certs    map[string]*store.Certificate // by serial
	requests map[string]*store.Request     // by id
	burned   map[string]string             // burned serial: its request
}

// checkLedger reads st and fails t if anything is half recorded: a
// request still signing, a certificate without its issued serial and
// request, a serial used twice (burned and issued, or by two requests),
// a certificate without its audit event, or an audit chain that does not
// verify.
func checkLedger(t *testing.T, st *store.Store) *storeLedger {
	t.Helper()
	l := &storeLedger{certs: map[string]*store.Certificate{}, requests: map[string]*store.Request{}, burned: map[string]string{}}
	issuedEvents := map[string]int{}
	err := st.View(func(tx *store.Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			return err
		}
		inFlight, err := tx.InFlight()
		if err != nil {
			return err
		}
		for _, r := range inFlight {
			t.Errorf("request %s still signing with serial %x", r.ID, r.Serial)
		}
		if err := tx.Certificates(func(c *store.Certificate) error {
			if c.Profile != "signerd-audit-key" {
				l.certs[string(c.Serial)] = c
			}
			return nil
		}); err != nil {
			return err
		}
		for serial, c := range l.certs {
			r, err := tx.Request(c.RequestID)
			if err != nil {
				return fmt.Errorf("request %s of certificate %x: %w", c.RequestID, c.Serial, err)
			}
			l.requests[r.ID] = r
			if r.State != store.RequestIssued || !bytes.Equal(r.Serial, c.Serial) {
				t.Errorf("certificate %x: its request %s is %s with serial %x", c.Serial, r.ID, r.State, r.Serial)
			}
			s, err := tx.Serial([]byte(serial))
			if err != nil {
				return err
			}
			if s.State != store.SerialIssued || s.RequestID != c.RequestID {
				t.Errorf("certificate %x: serial record %+v", c.Serial, s)
			}
		}
		return tx.Serials(func(serial []byte, s store.Serial) error {
			if s.State != store.SerialBurned {
				return nil
			}
			if c := l.certs[string(serial)]; c != nil {
				t.Errorf("serial %x is burned and certificate %x has it", serial, c.Serial)
			}
			l.burned[string(serial)] = s.RequestID
			r, err := tx.Request(s.RequestID)
			if err != nil {
				return fmt.Errorf("request %s of burned serial %x: %w", s.RequestID, serial, err)
			}
			if !containsSerial(r.Burned, serial) {
				t.Errorf("serial %x is burned, but its request %s does not list it (%x)", serial, r.ID, r.Burned)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events(t, st) {
		if ev.Action == "certificate.issue" && ev.Outcome == store.OutcomeOK {
			issuedEvents[ev.Object]++
		}
	}
	for _, c := range l.certs {
		if n := issuedEvents[store.HexSerial(c.Serial)]; n != 1 {
			t.Errorf("certificate %x has %d certificate.issue events, want 1", c.Serial, n)
		}
	}
	if len(issuedEvents) != len(l.certs) {
		t.Errorf("%d certificate.issue events for %d certificates", len(issuedEvents), len(l.certs))
	}
	return l
}

func containsSerial(serials [][]byte, serial []byte) bool {
	for _, s := range serials {
		if bytes.Equal(s, serial) {
			return true
		}
	}
	return false
}

// TestDatabaseOutage stops and kills a PostgreSQL server of its own under
// an engine (one server for both, started once: a start costs seconds).
func TestDatabaseOutage(t *testing.T) {
	ca := enginetest.NewCA(t)
	srv := pgtest.Start(t)
	t.Run("stopped and restarted", func(t *testing.T) { testDatabaseStoppedAndRestarted(t, ca, srv) })
	t.Run("killed mid-batch under load", func(t *testing.T) { testDatabaseKilledMidBatchUnderLoad(t, ca, srv) })
}

// testDatabaseStoppedAndRestarted: with the database server down, requests
// fail store_unavailable (retryable) with no certificate, and nothing is
// changed; health says the store is not writable. Once the server is
// back, the engine finds out by itself, with no request sent, and the
// same request id issues, once.
func testDatabaseStoppedAndRestarted(t *testing.T, ca *enginetest.CA, srv *pgtest.Server) {
	st := enginetest.NewPostgresStoreOn(t, srv).Open(t)
	e := ca.Engine(t, st, engine.Config{})
	before := issue(t, e, request(t, "before"))

	srv.Stop(t)
	req := request(t, "during")
	c, err := e.Issue(context.Background(), ra, req)
	wantStoreUnavailable(t, "issue", c, err)
	if s := e.Store(); s.Writable || s.Error == "" {
		t.Fatalf("store status with the database down: %+v", s)
	}
	rec, err := e.Revoke(ra, before.Serial, keyCompromise)
	wantStoreUnavailable(t, "revoke", rec, err)
	crl, err := e.SignCRL(context.Background(), ra, engine.CRLName{})
	wantStoreUnavailable(t, "CRL", crl, err)
	rec, err = e.Status(before.Serial)
	wantStoreUnavailable(t, "status", rec, err)

	srv.Restart(t)
	waitWritable(t, e)
	got := issue(t, e, req)
	if again := issue(t, e, req); !bytes.Equal(again.DER, got.DER) {
		t.Fatalf("retry of %s got another certificate", req.ID)
	}
	verifyChainGMSM(t, ca, got.DER)
	if rec, err := e.Status(before.Serial); err != nil || rec.Status != store.StatusGood {
		t.Fatalf("certificate whose revocation failed with the database down: %+v, %v; want good", rec, err)
	}
	l := checkLedger(t, st)
	if len(l.certs) != 2 || len(l.burned) != 0 {
		t.Fatalf("store holds %d certificates and %d burned serials; want 2 and none", len(l.certs), len(l.burned))
	}
}

// testDatabaseKilledMidBatchUnderLoad: clients issue concurrently, and the
// database server is killed (SIGKILL) while a batch the HSM has signed
// waits to be recorded, then started again. Each client retries what
// fails retryably, as an RA does. Every certificate a client got is in
// the store, read by a new engine on the same database; no serial is used
// twice; the batch that could not be recorded was answered
// store_unavailable, its serials burned once the database was back, and
// its requests issued on retry with new serials.
func testDatabaseKilledMidBatchUnderLoad(t *testing.T, ca *enginetest.CA, srv *pgtest.Server) {
	at := enginetest.NewPostgresStoreOn(t, srv)
	// A commit cut off by the kill is asked about once the server is back
	// (store.PostgresOptions.Timeout): long enough for its crash recovery
	// on a busy machine.
	at.PostgresOptions.Timeout = time.Minute
	// The second batch the HSM signs has the server killed under it. Set
	// before the engine starts, and cleared after it is closed.
	killNow, killed := make(chan struct{}), make(chan struct{})
	var signed atomic.Int32
	engine.SetCrashHooks(nil, func() {
		if signed.Add(1) == 2 {
			close(killNow)
			<-killed
		}
	})
	t.Cleanup(func() { engine.SetCrashHooks(nil, nil) })
	st := at.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	// The hook is let go however the test ends, before the engine closes.
	var letGo sync.Once
	releaseHook := func() { letGo.Do(func() { close(killed) }) }
	t.Cleanup(releaseHook)

	const clients, perClient = 4, 8
	type outcome struct {
		cert  *store.Certificate
		codes []api.Code // of the failed attempts, in order
		err   error      // the last attempt's, if none succeeded
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]*outcome{}
		failures atomic.Int32
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(2 * time.Minute)
	for cl := range clients {
		reqs := make([]engine.Request, perClient)
		for i := range reqs {
			reqs[i] = request(t, fmt.Sprintf("load-%d-%d", cl, i))
		}
		wg.Go(func() {
			for _, req := range reqs {
				o := &outcome{}
				for {
					o.cert, o.err = e.Issue(context.Background(), ra, req)
					if o.err == nil {
						break
					}
					failures.Add(1)
					code := engine.CodeOf(o.err)
					o.codes = append(o.codes, code)
					if !code.Retryable() || time.Now().After(deadline) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				outcomes[req.ID] = o
				mu.Unlock()
			}
		})
	}
	select {
	case <-killNow:
	case <-time.After(time.Minute):
		t.Fatal("no second batch signed")
	}
	srv.Kill(t)
	releaseHook()
	// Back once the batch signed across the kill has been answered.
	for limit := time.Now().Add(time.Minute); failures.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("no request failed with the database killed")
		}
	}
	srv.Restart(t)
	wg.Wait()

	acked := map[string]*store.Certificate{} // by request id
	failedFirst := 0
	for id, o := range outcomes {
		if o.err != nil {
			t.Errorf("request %s never issued: codes %v, last %v", id, o.codes, o.err)
			continue
		}
		acked[id] = o.cert
		if len(o.codes) > 0 {
			failedFirst++
		}
		for _, code := range o.codes {
			// request_in_progress: retried while its serial, stranded
			// by the failed batch, was being burned.
			if code != api.CodeStoreUnavailable && code != api.CodeInProgress {
				t.Errorf("request %s failed with %s (codes %v); want %s", id, code, o.codes, api.CodeStoreUnavailable)
			}
		}
	}
	if len(outcomes) != clients*perClient || failedFirst == 0 {
		t.Fatalf("%d requests answered, %d of them failed at first; want %d, some failed", len(outcomes), failedFirst, clients*perClient)
	}
	e.Close()
	st.Close()

	// A new engine on the same database.
	st = at.Open(t)
	e = ca.Engine(t, st, engine.Config{})
	l := checkLedger(t, st)
	if len(l.burned) == 0 {
		t.Error("no serial burned: the batch killed between its transactions left none")
	}
	if len(l.certs) != len(acked) {
		t.Errorf("store holds %d certificates; clients got %d", len(l.certs), len(acked))
	}
	for id, c := range acked {
		rec, err := e.Status(c.Serial)
		if err != nil || !bytes.Equal(rec.DER, c.DER) || rec.RequestID != id {
			t.Errorf("certificate %x a client got for %s: in the store %+v, %v", c.Serial, id, rec, err)
		}
		if l.burned[string(c.Serial)] != "" {
			t.Errorf("certificate %x for %s has a burned serial", c.Serial, id)
		}
		verifyChainGMSM(t, ca, c.DER)
	}
}
