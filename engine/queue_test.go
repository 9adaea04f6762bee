package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/store"
)

func TestThousandConcurrentRequests(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{})
	const n = 1000
	reqs := make([]engine.Request, n)
	for i := range reqs {
		_, csr := enginetest.NewCSR(t)
		reqs[i] = engine.Request{ID: fmt.Sprintf("req-%04d", i), Profile: "person-sign",
			Subject: engine.Subject{CommonName: fmt.Sprintf("holder %d", i)}, CSR: csr}
	}
	certs := make([]*store.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range reqs {
		wg.Go(func() { certs[i], errs[i] = e.Issue(context.Background(), ra, reqs[i]) })
	}
	wg.Wait()
	serials := map[string]bool{}
	for i, c := range certs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		parsed, err := smx509.ParseCertificate(c.DER)
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Subject.CommonName != fmt.Sprintf("holder %d", i) || c.RequestID != reqs[i].ID {
			t.Fatalf("caller %d got someone else's certificate (%s)", i, parsed.Subject.CommonName)
		}
		if err := parsed.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("certificate %d: %v", i, err)
		}
		serials[string(c.Serial)] = true
	}
	if len(serials) != n {
		t.Fatalf("%d distinct serials for %d certificates", len(serials), n)
	}
	st.View(func(tx *store.Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			t.Error(err)
		}
		var certsN, issued, events int
		tx.Certificates(func(*store.Certificate) error { certsN++; return nil })
		tx.Serials(func(_ []byte, s store.Serial) error {
			if s.State == store.SerialIssued {
				issued++
			}
			return nil
		})
		tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action == "certificate.issue" && ev.Outcome == store.OutcomeOK {
				events++
			}
			return nil
		})
		if certsN != n || issued != n || events != n {
			t.Errorf("store holds %d certificates, %d issued serials, %d issue events; want %d each", certsN, issued, events, n)
		}
		return nil
	})
	ca.OpenSSLVerify(t, certs[n-1].DER)
}

// gatedSigner holds every signature until released, so a test can fill the
// queue behind it; failNth makes one signature fail as an HSM fault would.
type gatedSigner struct {
	issuance.Signer
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
	failNth int32
}

func (g *gatedSigner) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	if g.calls.Add(1) == g.failNth {
		return nil, fmt.Errorf("C_Sign: %w", hsm.ErrTransient)
	}
	return g.Signer.SignDigest(ctx, e)
}

func gatedEngine(t *testing.T, queue, batch int, failNth int32) (*engine.Engine, *gatedSigner, *store.Store) {
	t.Helper()
	ca := enginetest.NewCA(t)
	g := &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{}), failNth: failNth}
	iss, err := issuance.NewIssuer(ca.Cert, g)
	if err != nil {
		t.Fatal(err)
	}
	st := enginetest.OpenStore(t)
	return ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}, QueueSize: queue, BatchSize: batch}), g, st
}

func request(t *testing.T, id string) engine.Request {
	t.Helper()
	_, csr := enginetest.NewCSR(t)
	return engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id}, CSR: csr}
}

func waitDepth(t *testing.T, e *engine.Engine, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); e.Queue().Depth() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want %d", e.Queue().Depth(), n)
		}
	}
}

// waitPrepared waits until the prepare stage has recorded request id as
// signing: with the HSM stage held, the order then sits between the two.
func waitPrepared(t *testing.T, st *store.Store, id string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		var state store.RequestState
		st.View(func(tx *store.Tx) error {
			if r, err := tx.Request(id); err == nil {
				state = r.State
			}
			return nil
		})
		if state == store.RequestSigning {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s not prepared (state %q)", id, state)
		}
	}
}

func TestFullQueueAnswersBusyAtOnce(t *testing.T) {
	e, g, st := gatedEngine(t, 1, 1, 0)
	results := make(chan error, 3)
	submit := func(id string) {
		go func() { _, err := e.Issue(context.Background(), ra, request(t, id)); results <- err }()
	}
	submit("signing")
	<-g.entered // the HSM stage holds the first request
	submit("prepared")
	waitPrepared(t, st, "prepared") // the prepare stage holds the second
	submit("queued")
	waitDepth(t, e, 1)
	if _, err := e.Issue(context.Background(), ra, request(t, "refused")); engine.CodeOf(err) != api.CodeBusy {
		t.Fatalf("full queue: %v, want %s", err, api.CodeBusy)
	}
	close(g.release)
	for range 3 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Issue(context.Background(), ra, request(t, "refused")); err != nil {
		t.Fatalf("after the queue drained: %v", err)
	}
}

func TestBatchMatesGetTheirOwnResults(t *testing.T) {
	// The first request holds the HSM stage and the second the prepare
	// stage; the next five form one batch in which one request reuses an
	// id with other content and one signature fails in the HSM (the third
	// signature overall).
	e, g, st := gatedEngine(t, 16, 16, 3)
	type result struct {
		id   string
		cert *store.Certificate
		err  error
	}
	results := make(chan result, 7)
	submit := func(req engine.Request) {
		go func() {
			c, err := e.Issue(context.Background(), ra, req)
			results <- result{req.ID, c, err}
		}()
	}
	submit(request(t, "first"))
	<-g.entered
	submit(request(t, "second"))
	waitPrepared(t, st, "second")
	dup := request(t, "dup")
	for _, req := range []engine.Request{request(t, "m1"), request(t, "m2"), request(t, "m3"), dup} {
		submit(req)
	}
	waitDepth(t, e, 4)
	conflicting := request(t, "dup")
	submit(conflicting)
	waitDepth(t, e, 5)
	close(g.release)

	var ok, hsmFailed, conflicts int
	var failedID string
	for range 7 {
		r := <-results
		switch code := engine.CodeOf(r.err); {
		case r.err == nil:
			ok++
			if c, _ := smx509.ParseCertificate(r.cert.DER); c.Subject.CommonName != r.id {
				t.Errorf("%s got %s's certificate", r.id, c.Subject.CommonName)
			}
		case code == api.CodeHSMUnavailable:
			hsmFailed++
			failedID = r.id
		case code == api.CodeRequestConflict:
			conflicts++
		default:
			t.Errorf("%s: unexpected %v", r.id, r.err)
		}
	}
	if ok != 5 || hsmFailed != 1 || conflicts != 1 {
		t.Fatalf("%d issued, %d HSM failures, %d conflicts; want 5, 1, 1", ok, hsmFailed, conflicts)
	}
	if failedID == "first" || failedID == "second" {
		t.Fatal("the failed signature was not in the batch")
	}
	st.View(func(tx *store.Tx) error {
		r, err := tx.Request(failedID)
		if err != nil || r.State != store.RequestFailed || len(r.Burned) != 1 {
			t.Fatalf("failed request record %+v, %v", r, err)
		}
		s, _ := tx.Serial(r.Burned[0])
		if s.State != store.SerialBurned {
			t.Errorf("serial of failed signature is %s", s.State)
		}
		return nil
	})
}

func TestRetryAfterHSMFailureGetsNewSerial(t *testing.T) {
	e, g, st := gatedEngine(t, 4, 4, 1)
	close(g.release)
	req := request(t, "flaky")
	if _, err := e.Issue(context.Background(), ra, req); engine.CodeOf(err) != api.CodeHSMUnavailable || !engine.CodeOf(err).Retryable() {
		t.Fatalf("first attempt: %v, want retryable %s", err, api.CodeHSMUnavailable)
	}
	c, err := e.Issue(context.Background(), ra, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.View(func(tx *store.Tx) error {
		r, err := tx.Request("flaky")
		if err != nil {
			return err
		}
		if len(r.Burned) != 1 || string(r.Burned[0]) == string(c.Serial) || r.State != store.RequestIssued {
			t.Errorf("request record after retry: %+v", r)
		}
		return tx.VerifyAuditChain()
	}); err != nil {
		t.Fatal(err)
	}
}

func TestClockStepBackRefusesToSign(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	var clk settableClock
	clk.set(time.Now())
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	issue(t, e, request(t, "before"))
	clk.set(time.Now().Add(-time.Hour))
	if _, err := e.Issue(context.Background(), ra, request(t, "backdated")); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("issue with clock stepped back: %v", err)
	}
	if _, err := e.SignCRL(context.Background(), ra, engine.CRLName{}); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("CRL with clock stepped back: %v", err)
	}
	e.Close()
	// The last signing time is durable: a restart does not forget it.
	e2 := ca.Engine(t, st, engine.Config{Now: clk.read})
	if _, err := e2.Issue(context.Background(), ra, request(t, "after-restart")); engine.CodeOf(err) != api.CodeClockBackwards {
		t.Fatalf("issue after restart with clock behind: %v", err)
	}
	// One clock.alarm per episode, not per refusal: the issue and the CRL
	// refused by the first engine are one episode, the issue refused after
	// the restart opens another (each refusal is audited as itself).
	if alarms := len(eventsOf(t, st, "clock.alarm")); alarms != 2 {
		t.Errorf("%d clock alarms audited, want 2", alarms)
	}
	clk.set(time.Now())
	issue(t, e2, request(t, "clock-fixed"))
}

func TestCloseDrainsQueue(t *testing.T) {
	e, g, st := gatedEngine(t, 8, 1, 0)
	results := make(chan error, 4)
	submit := func(id string) {
		go func() { _, err := e.Issue(context.Background(), ra, request(t, id)); results <- err }()
	}
	submit("drain-0")
	<-g.entered
	submit("drain-1")
	waitPrepared(t, st, "drain-1")
	submit("drain-2")
	submit("drain-3")
	waitDepth(t, e, 2)
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned with requests still queued")
	default:
	}
	close(g.release)
	<-closed
	for range 4 {
		if err := <-results; err != nil {
			t.Errorf("queued request lost at shutdown: %v", err)
		}
	}
	if _, err := e.Issue(context.Background(), ra, request(t, "late")); engine.CodeOf(err) != api.CodeShuttingDown {
		t.Fatalf("issue after Close: %v, want %s", err, api.CodeShuttingDown)
	}
}

// TestRecordAndReservationShareACommit holds the HSM on a first request
// while a second is reserved behind it and a third waits in the queue.
// Once the HSM signs, the first's certificate and the third's reservation
// are written in one transaction; and a reservation refused in such a
// transaction (a refusal of its own, not the store's) fails only its own
// batch: the certificate recorded with it stands.
func TestRecordAndReservationShareACommit(t *testing.T) {
	for _, refuseThird := range []bool{false, true} {
		t.Run(fmt.Sprintf("refuse_third=%v", refuseThird), func(t *testing.T) {
			var shared atomic.Int32
			engine.SetCommitHooks(func(ids []string) error {
				if refuseThird && len(ids) == 1 && ids[0] == "third" {
					return errors.New("reservation refused for the test")
				}
				return nil
			}, func(batches int) {
				if batches > 1 {
					shared.Add(1)
				}
			})
			t.Cleanup(func() { engine.SetCommitHooks(nil, nil) })
			e, g, st := gatedEngine(t, 4, 1, 0)
			release := releaseOnce(t, g)
			type result struct {
				id   string
				cert *store.Certificate
				err  error
			}
			results := make(chan result, 3)
			submit := func(id string) {
				go func() {
					c, err := e.Issue(context.Background(), ra, request(t, id))
					results <- result{id, c, err}
				}()
			}
			submit("first")
			<-g.entered
			submit("second")
			waitPrepared(t, st, "second")
			submit("third")
			waitDepth(t, e, 1)
			release()
			got := map[string]result{}
			for range 3 {
				r := <-results
				got[r.id] = r
			}
			for _, id := range []string{"first", "second"} {
				if got[id].err != nil || got[id].cert == nil {
					t.Fatalf("%s: %v", id, got[id].err)
				}
			}
			if refuseThird {
				if engine.CodeOf(got["third"].err) != api.CodeInternal {
					t.Fatalf("third: %v, want %s", got["third"].err, api.CodeInternal)
				}
			} else if got["third"].err != nil {
				t.Fatalf("third: %v", got["third"].err)
			}
			if shared.Load() == 0 && !refuseThird {
				t.Fatal("no transaction recorded one batch and reserved another")
			}
			st.View(func(tx *store.Tx) error {
				for _, id := range []string{"first", "second"} {
					r, err := tx.Request(id)
					if err != nil || r.State != store.RequestIssued {
						t.Errorf("request %s: %+v, %v; want issued", id, r, err)
					}
				}
				if r, err := tx.Request("third"); refuseThird && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("third's refused reservation was written: %+v, %v", r, err)
				}
				return tx.VerifyAuditChain()
			})
		})
	}
}
