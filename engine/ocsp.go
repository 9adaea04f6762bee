package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"signerd/api"
	"signerd/issuance"
	"signerd/ocsp"
	"signerd/publish"
	"signerd/store"
)

// OCSP is how the engine keeps pre-signed OCSP responses (SPEC §10.2):
// for every unexpired certificate of each issuing key, a current signed
// response, made when the certificate is issued and when its status
// changes, and made again at half its validity. Its zero value keeps
// none.
type OCSP struct {
	// Validity is a response's nextUpdate − thisUpdate (default 24h,
	// at least a minute); it is made again at half of it.
	Validity time.Duration
	// ResponderKey, if set, is the delegated responder's key (SM2, in the
	// HSM), which the engine has the active issuing key certify
	// (ocspresponder.go) and which then signs the active key's
	// certificates' responses; without it, and for retired issuing keys,
	// each issuing key signs its own certificates' responses.
	ResponderKey issuance.Signer
	// ResponderValidity is the responder certificate's validity (default
	// 30 days, at most a year, at least four times Validity); it is
	// certified again when a third is left.
	ResponderValidity time.Duration
	// Batch bounds the responses signed together, recorded in one store
	// transaction (default 256).
	Batch int
	// Poll is how often the store is read for responses due that
	// another node made due (default 1s).
	Poll time.Duration
}

func (o OCSP) on() bool { return o.Validity > 0 }

func (o OCSP) withDefaults() OCSP {
	if !o.on() {
		return o
	}
	if o.Batch <= 0 {
		o.Batch = 256
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.ResponderValidity <= 0 {
		o.ResponderValidity = defaultOCSPResponderValidity
	}
	return o
}

func (o OCSP) validate() error {
	if o.Validity < 0 || o.Batch < 0 || o.Poll < 0 || o.ResponderValidity < 0 {
		return &ConfigError{"OCSP", errors.New("negative validity, batch, poll or responder validity")}
	}
	if !o.on() {
		return nil
	}
	if o.Validity < time.Minute {
		return &ConfigError{"OCSP.Validity", fmt.Errorf("%s: under a minute, responses would be made again all the time", o.Validity)}
	}
	if rv := o.withDefaults().ResponderValidity; o.ResponderKey != nil && (rv < 4*o.Validity || rv < 24*time.Hour || rv > 366*24*time.Hour) {
		return &ConfigError{"OCSP.ResponderValidity", fmt.Errorf("%s: at least a day and 4 × the responses' validity %s, at most a year", rv, o.Validity)}
	}
	return nil
}

// ocspHashes are the CertID hashes each response answers for: one
// signature covers a client naming the certificate by any of them.
var ocspHashes = ocsp.HashAlgs

// ocspRetry is how long a response whose signing failed waits before it
// is tried again.
const ocspRetry = 10 * time.Second

// ocspSigner pre-signs OCSP responses in batches: it reads what is due,
// has the HSM sign each response (in parallel across its sessions),
// records the batch in one transaction with each response's next
// refresh, and publishes it.
type ocspSigner struct {
	e   *Engine
	cfg OCSP

	worker
	// backfilled: the store's older certificates are all marked (run's
	// goroutine only).
	backfilled bool
	// inFlight are the responses of the batches signed and not yet
	// recorded (issuer, NUL, serial): still due in the store, so the next
	// batch must not take them again.
	mu       sync.Mutex
	inFlight map[string]struct{}
}

func newOCSPSigner(e *Engine, cfg OCSP) *ocspSigner {
	return &ocspSigner{e: e, cfg: cfg, worker: newWorker(), inFlight: map[string]struct{}{}}
}

// StartOCSP starts pre-signing OCSP responses on Config.OCSP (if set);
// the daemon starts it with the CRL schedule, once it has recorded its
// start.
func (e *Engine) StartOCSP() { e.ocsp.start(e.ocsp.cfg.on(), e.ocsp.run) }

// changed tells the signer a response became due here.
func (s *ocspSigner) changed() { s.wake() }

// markDue makes serial's response due now in tx, if the engine keeps
// responses.
func (s *ocspSigner) markDue(tx *store.Tx, issuer string, serial []byte, now time.Time) error {
	if !s.cfg.on() {
		return nil
	}
	return tx.MarkOCSPDue(issuer, serial, now)
}

func (s *ocspSigner) run() {
	// ctx ends at close, so that no signature or certification outlives
	// the engine.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	// Two stages, as the issuance queue has: while one batch is published
	// and recorded (fsyncs), the next is signed, so the HSM is not idle
	// through the writes.
	signed := make(chan *ocspBatch, 1)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		for b := range signed {
			if err := s.finish(b); err != nil {
				s.e.log.Warn("OCSP pre-signing", "err", err)
			}
		}
	}()
	defer func() {
		close(signed)
		<-recorded
	}()
	for ctx.Err() == nil {
		if err := s.backfill(ctx); err != nil && ctx.Err() == nil {
			s.e.log.Error("OCSP pre-signing", "err", err)
		}
		certifyCtx, done := context.WithTimeout(ctx, s.e.cfg.SignTimeout)
		if err := s.e.ensureResponder(certifyCtx); err != nil && ctx.Err() == nil {
			s.e.log.Error("OCSP responder not certified; responses wait", "err", err)
		}
		done()
		b, err := s.sign(ctx)
		if err != nil {
			s.e.log.Warn("OCSP pre-signing", "err", err)
		}
		if b != nil {
			signed <- b
			continue // more may be due
		}
		if !s.wait(s.cfg.Poll) {
			return
		}
	}
}

// ocspJob is one response of a batch.
type ocspJob struct {
	issuer string
	serial []byte
	// signed is the certificate's status as the response states it, to
	// be found unchanged when the response is recorded.
	signed store.Certificate
	single ocsp.Single
	der    []byte
	err    error
}

// ocspBatch is a batch signed, on its way to the directory and the store.
type ocspBatch struct {
	jobs, expired []*ocspJob
	now           time.Time
}

// sign takes up to cfg.Batch responses due now that no batch in flight
// holds, and has the HSM sign them; nil if none is due. The time comes
// from the clock guard, as for certificates and CRLs: a clock behind the
// last signing time signs nothing (alarmed), and the time signed is noted
// when the batch is recorded.
func (s *ocspSigner) sign(parent context.Context) (*ocspBatch, error) {
	now, err := s.e.clock.read()
	if err != nil {
		s.e.clock.alarm(err, 1)
		return nil, err
	}
	b := &ocspBatch{now: now}
	s.mu.Lock()
	busy := len(s.inFlight)
	s.mu.Unlock()
	err = s.e.view(func(tx *store.Tx) error {
		b.jobs, b.expired = b.jobs[:0], b.expired[:0]
		return tx.DueOCSP(now, s.cfg.Batch+busy, func(issuer string, serial []byte, _ time.Time) error {
			if len(b.jobs)+len(b.expired) == s.cfg.Batch || s.held(issuer, serial) {
				return nil
			}
			c, err := tx.Certificate(serial)
			if err != nil {
				return fmt.Errorf("certificate %x: %w", serial, err)
			}
			j := &ocspJob{issuer: issuer, serial: serial, signed: *c}
			if !c.NotAfter.After(now) {
				b.expired = append(b.expired, j)
				return nil
			}
			b.jobs = append(b.jobs, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read responses due: %w", err)
	}
	if len(b.jobs)+len(b.expired) == 0 {
		return nil, nil
	}
	s.hold(b, true)
	ctx, cancel := context.WithTimeout(parent, s.e.cfg.SignTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, j := range b.jobs {
		wg.Go(func() { s.signOne(ctx, j, now) })
	}
	wg.Wait()
	return b, nil
}

// finish publishes a signed batch, then records it in one transaction. A
// batch is published before it is recorded: a crash between the two
// leaves the responses due, made and published again, so the directory is
// never behind the store for long. A response whose certificate's status
// changed since it was read is neither published nor recorded.
func (s *ocspSigner) finish(b *ocspBatch) error {
	defer s.hold(b, false)
	if err := s.e.view(func(tx *store.Tx) error { return s.stillTrue(tx, b.jobs) }); err != nil {
		return fmt.Errorf("check responses before publishing: %w", err)
	}
	published := s.publish(b.jobs, b.expired)
	signed, failed, err := s.record(b.jobs, b.expired, b.now, published)
	if err != nil {
		return err
	}
	if m, ok := s.e.cfg.Metrics.(OCSPMetrics); ok {
		m.OCSPSigned(signed, failed)
	}
	return nil
}

// held reports whether a batch in flight holds issuer's serial.
func (s *ocspSigner) held(issuer string, serial []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inFlight[issuer+"\x00"+string(serial)]
	return ok
}

// hold marks b's responses in flight (on), or no longer (off).
func (s *ocspSigner) hold(b *ocspBatch, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, list := range [][]*ocspJob{b.jobs, b.expired} {
		for _, j := range list {
			if k := j.issuer + "\x00" + string(j.serial); on {
				s.inFlight[k] = struct{}{}
			} else {
				delete(s.inFlight, k)
			}
		}
	}
}

// stillTrue drops (der = nil) each signed response of jobs whose
// certificate's status is no longer the one it states: the change made
// it due again, and the next batch states the new one.
func (s *ocspSigner) stillTrue(tx *store.Tx, jobs []*ocspJob) error {
	for _, j := range jobs {
		if j.der == nil {
			continue
		}
		changed, err := statusChanged(tx, j)
		if err != nil {
			return err
		}
		if changed {
			j.der = nil
		}
	}
	return nil
}

// statusChanged reports whether j's certificate's status in tx is other
// than the one j read. The revocation index says it (listed or not, when,
// why) in a few bytes, without the certificate record's JSON and DER,
// which each response would otherwise decode twice more.
func statusChanged(tx *store.Tx, j *ocspJob) (bool, error) {
	e, listed, err := tx.RevokedEntryOf(j.issuer, j.serial)
	if err != nil {
		return false, err
	}
	if listed != j.signed.Listed() {
		return true, nil
	}
	return listed && (!e.RevokedAt.Equal(j.signed.RevokedAt) || e.Reason != j.signed.Reason), nil
}

// signerOf is the key that signs issuer's certificates' responses: the
// delegated responder's for the active issuing key, if there is one.
func (s *ocspSigner) signerOf(issuer string, now time.Time) (*issuance.Issuer, error) {
	if r := s.e.responder; r != nil && issuer == s.e.active.ID() {
		cur := r.current.Load()
		if cur == nil {
			return nil, errResponderPending
		}
		if cur.Cert.NotAfter.After(now.Add(ocspResponderLastMinutes)) {
			return cur, nil
		}
		// Its certificate ends before the issuing CA's, and no new one
		// would last longer (the CA's own end is near): the issuing key
		// signs its certificates' responses itself for what is left.
	}
	return s.e.Issuer(issuer)
}

// ocspResponderLastMinutes: a responder certificate with less left than
// this signs no more; the issuing key does.
const ocspResponderLastMinutes = 10 * time.Minute

// signOne has the HSM sign j's response, made at now. Its nextUpdate is
// Validity later, but never after its signer's certificate ends: a
// response must not outlive what vouches for it.
func (s *ocspSigner) signOne(ctx context.Context, j *ocspJob, now time.Time) {
	iss, err := s.signerOf(j.issuer, now)
	if err != nil {
		j.err = err
		return
	}
	nextUpdate := now.Add(s.cfg.Validity)
	if end := iss.Cert.NotAfter.Truncate(time.Second); end.Before(nextUpdate) {
		nextUpdate = end
	}
	c := j.signed
	j.single = ocsp.Single{Serial: j.serial, Status: ocsp.Good, ThisUpdate: now, NextUpdate: nextUpdate}
	if c.Listed() {
		j.single.Status, j.single.RevokedAt, j.single.Reason = ocsp.Revoked, c.RevokedAt, c.Reason
	}
	tok, err := iss.PrepareOCSP(j.single, now, ocspHashes...)
	if err != nil {
		j.err = err
		return
	}
	out, err := s.e.hsmHealth.issue(ctx, iss, tok)
	if err != nil {
		j.err = err
		return
	}
	j.der = out.DER
}

// errResponderPending: the delegated responder has no certificate yet (its
// certification is retried with the next batch).
var errResponderPending = errors.New("the delegated OCSP responder is not certified yet")

// ocspRetryLater is the wait before a response that failed for another
// reason than the HSM (an issuing key no longer configured, a lint) is
// tried again.
const ocspRetryLater = time.Hour

// record writes the batch in one transaction: each signed response still
// true, due again at half its validity — or soon, if it could not be
// published; a response that failed is due again after ocspRetry (the
// HSM) or ocspRetryLater; one dropped by stillTrue, or whose status
// changed since, stays due now; an expired certificate is due no more. It
// returns how many responses it recorded and how many failed.
func (s *ocspSigner) record(jobs, expired []*ocspJob, now time.Time, published bool) (signed, failed int, err error) {
	refresh := now.Add(s.cfg.Validity / 2)
	var first error
	err = s.e.update(func(tx *store.Tx) error {
		signed, failed, first = 0, 0, nil
		if err := s.stillTrue(tx, jobs); err != nil {
			return err
		}
		for _, j := range jobs {
			switch {
			case j.err != nil:
				failed++
				first = cmp.Or(first, j.err)
				changed, err := statusChanged(tx, j)
				if err != nil {
					return err
				}
				if changed {
					continue // the change made it due now: not put off
				}
				retry := ocspRetryLater
				if errors.Is(j.err, errHSM) || errors.Is(j.err, errResponderPending) {
					retry = ocspRetry
				}
				if err := tx.RetryOCSPDue(j.issuer, j.serial, now.Add(retry)); err != nil {
					return err
				}
			case j.der == nil:
				// What it stated is no longer true: due now, as the
				// change made it.
			default:
				signed++
				r := &store.OCSPResponse{Issuer: j.issuer, Serial: j.serial, ThisUpdate: now, NextUpdate: j.single.NextUpdate, DER: j.der}
				if err := tx.PutOCSPResponse(r, refresh); err != nil {
					return err
				}
				if !published {
					if err := tx.RetryOCSPDue(j.issuer, j.serial, now.Add(ocspRetry)); err != nil {
						return err
					}
				}
			}
		}
		for _, j := range expired {
			if err := tx.ClearOCSPDue(j.issuer, j.serial); err != nil {
				return err
			}
		}
		if signed > 0 {
			return s.e.clock.noteSigningTime(tx, now)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("record %d OCSP responses: %w", len(jobs), err)
	}
	if failed > 0 {
		s.e.log.Error("OCSP responses not signed; retried", "failed", failed, "of", len(jobs), "err", first)
	}
	return signed, failed, nil
}

// publish writes the batch's responses still true into the publication
// directory, and removes those of expired certificates; it reports
// whether the responses were written (or there is no directory).
func (s *ocspSigner) publish(jobs, expired []*ocspJob) bool {
	pub := s.e.cfg.Publish
	if pub == nil {
		return true
	}
	batch := make([]publish.OCSPResponse, 0, len(jobs))
	for _, j := range jobs {
		if j.der != nil {
			batch = append(batch, publish.OCSPResponse{Issuer: j.issuer, Serial: j.serial, DER: j.der})
		}
	}
	ok := true
	if err := pub.PutOCSP(batch); err != nil {
		s.e.log.Error("publish OCSP responses; made again soon", "responses", len(batch), "retry_in", ocspRetry.String(), "err", err)
		ok = false
	}
	for _, j := range expired {
		if err := pub.RemoveOCSP(j.issuer, j.serial); err != nil {
			s.e.log.Warn("remove an expired certificate's OCSP response", "serial", fmt.Sprintf("%x", j.serial), "err", err)
		}
	}
	return ok
}

// OCSPMetrics, if Config.Metrics implements it, is told of each batch of
// OCSP responses recorded: how many were signed and recorded, and how
// many failed to be signed (due again after a pause).
type OCSPMetrics interface {
	OCSPSigned(signed, failed int)
}

// OCSPDue counts the responses due now, up to max: the count stops
// there, so that reading it costs no more than reading max entries
// however large a backlog is.
func (e *Engine) OCSPDue(max int) (int, error) {
	now := e.cfg.Now()
	n := 0
	err := e.view(func(tx *store.Tx) (err error) {
		n, err = tx.CountOCSPDue(now, max)
		return err
	})
	return n, err
}

// OCSPResponse returns the latest response recorded for serial, issued
// by issuerID ("" for the active issuing key); not_found if there is none.
func (e *Engine) OCSPResponse(issuerID string, serial []byte) (*store.OCSPResponse, error) {
	iss, err := e.Issuer(issuerID)
	if err != nil {
		return nil, err
	}
	var r *store.OCSPResponse
	err = e.view(func(tx *store.Tx) error {
		r, err = tx.OCSPResponse(iss.ID(), serial)
		return err
	})
	if err != nil {
		return nil, errorf(storeCode(err), "read the OCSP response of %x: %v", serial, err)
	}
	if r == nil {
		return nil, errorf(api.CodeNotFound, "no OCSP response for %x yet", serial)
	}
	return r, nil
}

// ocspBackfillChunk bounds the certificates one backfill transaction marks.
const ocspBackfillChunk = 5000

// backfill makes due, once per store, the response of every unexpired
// certificate recorded before the engine kept responses (an upgraded
// store), and of every one whose response is dated after the clock (made
// while it ran ahead: an acknowledged clock reset runs the pass again): in
// chunks, each read and marked in one transaction, its progress recorded
// so that a restart goes on where it stopped. Any other certificate with a
// response keeps its refresh time.
func (s *ocspSigner) backfill(ctx context.Context) error {
	if s.backfilled {
		return nil
	}
	if err := s.e.view(func(tx *store.Tx) (err error) {
		_, s.backfilled, err = tx.OCSPBackfill()
		return err
	}); err != nil || s.backfilled {
		return err
	}
	for ctx.Err() == nil {
		done := false
		err := s.e.update(func(tx *store.Tx) error {
			after, complete, err := tx.OCSPBackfill()
			if err != nil || complete {
				done = complete
				return err
			}
			now := s.e.cfg.Now()
			n := 0
			err = tx.CertificatesAfter(after, ocspBackfillChunk, func(c *store.Certificate) error {
				n++
				after = c.Serial
				if !c.NotAfter.After(now) {
					return nil
				}
				r, err := tx.OCSPResponse(c.Issuer, c.Serial)
				if err != nil || r != nil && !r.ThisUpdate.After(now) {
					return err
				}
				return tx.MarkOCSPDue(c.Issuer, c.Serial, now)
			})
			if err != nil {
				return err
			}
			done = n < ocspBackfillChunk
			return tx.PutOCSPBackfill(after, done)
		})
		if err != nil {
			return fmt.Errorf("mark older certificates' OCSP responses due: %w", err)
		}
		if done {
			s.backfilled = true
			return nil
		}
	}
	return ctx.Err()
}
