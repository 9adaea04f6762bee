package engine

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/store"
)

// Config is what an Engine needs.
type Config struct {
	Store *store.Store
	// Issuers are the CA's issuing keys. The first issues new
	// certificates; every one signs CRLs for the certificates it issued.
	Issuers []*issuance.Issuer
	// Profiles are the certificate profiles; nil means BuiltinProfiles().
	Profiles map[string]*Profile
	// SM2ID is the signer ID SM2 CSR signatures are checked with; nil
	// means hsm.DefaultSM2ID.
	SM2ID []byte
	// Random is where serials come from: the daemon passes the HSM's RNG.
	Random io.Reader
	// QueueSize bounds the signing queue (default 1024); BatchSize bounds
	// a batch (default 64).
	QueueSize int
	BatchSize int
	// CRLValidity is nextUpdate − thisUpdate (default 24h).
	CRLValidity time.Duration
	// SignTimeout bounds a batch's wait for HSM sessions (default 30s).
	SignTimeout time.Duration
	// WriteStallAfter is how long store writes may wait with none
	// completing before the store counts as stalled (default 10s; see
	// Store).
	WriteStallAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger
	// Metrics, if set, is told about batches and signatures.
	Metrics Metrics
	// AuditKey, if set, seals the audit log (an SM2 key of its own, used
	// for nothing else but ProbeHSM) every SealEvery events (default 1000)
	// or SealInterval (default 1m), and at Close.
	AuditKey     AuditSigner
	SealEvery    int
	SealInterval time.Duration
	// AuditKeyGenerated is AuditKey's label if the daemon generated it for
	// this start; the engine records that before certifying the key.
	AuditKeyGenerated string
	// AcknowledgeAuditBreak, if not empty, is an operator's statement that
	// lets the engine start on an audit log that fails its check; it is
	// recorded with the break.
	AcknowledgeAuditBreak string
	// AcknowledgeClockReset, if not empty, is an operator's statement that
	// the clock is right although it reads before the last signing time
	// (stamped by a clock that ran ahead): at start the guard is lowered
	// to the clock and the statement recorded (clock.go, resetClock).
	AcknowledgeClockReset string
	// ClockMaxStep is how far past the last signing time a new one may be
	// before the forward step is alarmed (default 7 days; clock.go).
	ClockMaxStep time.Duration
	// RASignatureSkew is how far from the clock an RA request's signed
	// date may lie (the daemon's ra_signatures.max_skew). An acknowledged
	// clock reset lowers RA replay marks no further than the clock plus
	// it, so a request accepted while the clock was right stays refused
	// (clock.go, resetClock). Zero: no request was dated ahead of the clock.
	RASignatureSkew time.Duration
	// AuditAnchor, with AuditKey, records each seal where the store's
	// writers cannot reach (anchor.go); nil leaves the log unanchored.
	AuditAnchor AuditAnchor
	// Refusals, if set, records the requests the engine refuses, tallied
	// (the daemon's refusal log); nil writes each as its own event.
	Refusals RefusalSink
}

// RefusalSink records the engine's refusals so that a flood of them does
// not write one event per request: the daemon tallies them per actor,
// action and code, writes the first of each window at once and the rest
// as one event with their count (cmd/signerd/refusals.go). ev is bounded;
// code is its stable code. Record must not lose ev, and must not wait on
// the store longer than writing ev would.
type RefusalSink interface {
	Record(ev store.Event, code string)
}

// Metrics receives the engine's measurements; the daemon exports them.
type Metrics interface {
	// Batch is called for each batch the queue runs, with its size.
	Batch(size int)
	// Signature is called for each HSM signature with how long it took
	// and how it ended.
	Signature(took time.Duration, err error)
}

type noMetrics struct{}

func (noMetrics) Batch(int)                      {}
func (noMetrics) Signature(time.Duration, error) {}

// Engine issues, tracks and revokes certificates.
type Engine struct {
	cfg         Config
	store       *store.Store
	profiles    map[string]*Profile
	issuers     map[string]*issuance.Issuer
	caNames     map[string]bool // refused as subjects (checkNotReserved)
	active      *issuance.Issuer
	sm2ID       []byte
	clock       *clock
	queue       *BatchQueue
	log         *slog.Logger
	crlMu       sync.Mutex
	health      hsmHealth
	storeHealth storeHealth

	auditKey AuditSigner
	auditPub *ecdsa.PublicKey
	lastSeal atomic.Int64 // UnixNano of the last seal
	sealStop chan struct{}
	sealDone chan struct{}
	// watchStop and watchDone stop watchStore (a database store only).
	watchStop, watchDone chan struct{}
	sealClosed           atomic.Bool
	anchor               anchorState
	backupMu             sync.Mutex // one store backup at a time, copy to send (backup.go)
}

// New starts an engine: it resolves requests a crash left signing (their
// serials are burned), loads the last signing time, and starts the queue.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || len(cfg.Issuers) == 0 || cfg.Random == nil {
		return nil, errors.New("engine: store, an issuer and a random source are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e := &Engine{cfg: cfg, store: cfg.Store, profiles: cfg.Profiles, issuers: map[string]*issuance.Issuer{},
		active: cfg.Issuers[0], sm2ID: cfg.SM2ID, log: cfg.Log, health: hsmHealth{status: HSMStatus{Up: true}},
		storeHealth: storeHealth{status: StoreStatus{Writable: true}}}
	if e.profiles == nil {
		e.profiles = BuiltinProfiles()
	}
	for _, p := range e.profiles {
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	for _, iss := range cfg.Issuers {
		e.issuers[iss.ID()] = iss
	}
	e.caNames = caNames(cfg.Issuers)
	if e.sm2ID == nil {
		e.sm2ID = hsm.DefaultSM2ID
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	defaults := []struct {
		v *int
		d int
	}{{&e.cfg.QueueSize, 1024}, {&e.cfg.BatchSize, 64}, {&e.cfg.SealEvery, 1000}}
	for _, f := range defaults {
		if *f.v <= 0 {
			*f.v = f.d
		}
	}
	if e.cfg.CRLValidity <= 0 {
		e.cfg.CRLValidity = 24 * time.Hour
	}
	if e.cfg.SignTimeout <= 0 {
		e.cfg.SignTimeout = 30 * time.Second
	}
	if e.cfg.WriteStallAfter <= 0 {
		e.cfg.WriteStallAfter = DefaultWriteStallAfter
	}
	if e.cfg.Now == nil {
		e.cfg.Now = time.Now
	}
	if e.cfg.SealInterval <= 0 {
		e.cfg.SealInterval = time.Minute
	}
	if e.cfg.Metrics == nil {
		e.cfg.Metrics = noMetrics{}
	}
	if e.cfg.ClockMaxStep <= 0 {
		e.cfg.ClockMaxStep = defaultClockMaxStep
	}
	var err error
	if cfg.AuditKey != nil {
		if e.auditPub, err = publicKeyOf(cfg.AuditKey); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		e.auditKey = cfg.AuditKey
	}
	if err := e.checkAuditKeyOwn(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := e.checkAudit(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.clock = &clock{now: e.cfg.Now}
	if err := e.update(func(tx *store.Tx) error {
		if err := e.startClock(tx); err != nil {
			return err
		}
		return e.burnInterrupted(tx)
	}); err != nil {
		return nil, fmt.Errorf("engine: start-up recovery: %w", err)
	}
	if cfg.AuditKeyGenerated != "" && e.auditKey != nil {
		if err := e.Audit(store.Event{Actor: store.System, Action: "audit.key.generated", Object: cfg.AuditKeyGenerated,
			Outcome: store.OutcomeOK, Detail: fmt.Sprintf("CKA_ID %X", hsm.KeyID(e.auditPub))}); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	e.queue = newBatchQueue(e.cfg.QueueSize, e.cfg.BatchSize, e.prepare, e.signBatch, e.recordBatch)
	if !e.store.Embedded() {
		e.watchStop, e.watchDone = make(chan struct{}), make(chan struct{})
		go e.watchStore(e.watchStop, e.watchDone)
	}
	if e.auditKey != nil {
		e.lastSeal.Store(e.cfg.Now().UnixNano())
		e.sealStop, e.sealDone = make(chan struct{}), make(chan struct{})
		go e.sealer(e.sealStop, e.sealDone)
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.SignTimeout)
		err := e.certifyAuditKey(ctx)
		cancel()
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	return e, nil
}

// burnInterrupted resolves requests a crash left between the two batch
// transactions: nothing was recorded as issued, so whatever the HSM may
// have signed never left the process; the serial is burned and the RA may
// retry the request.
func (e *Engine) burnInterrupted(tx *store.Tx) error {
	stuck, err := tx.InFlight()
	if err != nil {
		return err
	}
	for _, r := range stuck {
		const why = "signerd stopped while the request was being signed; serial burned, retry the request"
		if err := e.burn(tx, r, store.System, why); err != nil {
			return err
		}
		e.log.Warn("burned serial of interrupted request", "request_id", r.ID, "serial", store.HexSerial(r.Serial))
	}
	return nil
}

// burn ends r's attempt without a certificate.
func (e *Engine) burn(tx *store.Tx, r *store.Request, actor store.Actor, why string) error {
	if err := tx.SetSerialState(r.Serial, store.SerialBurned); err != nil {
		return err
	}
	r.State = store.RequestFailed
	r.Burned = append(r.Burned, r.Serial)
	r.Error = why
	r.Updated = e.cfg.Now().UTC()
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	if err := releaseClaim(tx, r); err != nil {
		return err
	}
	_, err := tx.Append(store.Event{Actor: actor, Action: "certificate." + r.Kind, Object: store.HexSerial(r.Serial),
		Outcome: store.OutcomeFailed, Reason: fmt.Sprintf("request %s: %s", r.ID, why)})
	return err
}

// releaseClaim lets go of the certificate a failed renewal or extension
// claimed, so it can be replaced again.
func releaseClaim(tx *store.Tx, r *store.Request) error {
	if r.Replaces == nil {
		return nil
	}
	old, err := tx.Certificate(r.Replaces)
	if err != nil {
		return err
	}
	if old.Superseding != r.ID {
		return nil
	}
	old.Superseding = ""
	return tx.PutCertificate(old)
}

// Close stops taking orders, finishes those queued, and returns.
func (e *Engine) Close() {
	e.queue.close()
	if e.watchStop != nil {
		close(e.watchStop)
		<-e.watchDone
		e.watchStop = nil
	}
	e.burnStranded()
	e.closeAudit()
}

// Queue is the signing queue (for its depth).
func (e *Engine) Queue() *BatchQueue { return e.queue }

// Issue issues a certificate for req (or returns the one an earlier request
// with the same id and content got).
func (e *Engine) Issue(ctx context.Context, actor store.Actor, req Request) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindIssue, "request "+req.ID, err) }()
	o, err := e.check(kindIssue, &req, nil)
	if err != nil {
		return nil, err
	}
	o.actor = actor
	return e.queue.submit(ctx, o)
}

// Renew issues a certificate for req's new key that replaces the one with
// serial old; old is marked superseded (it stays valid until revoked or
// expired, so the holder can switch over).
func (e *Engine) Renew(ctx context.Context, actor store.Actor, old []byte, req Request) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindRenew, "request "+req.ID, err) }()
	prev, err := e.lookup(actor, "certificate."+kindRenew, old)
	if err != nil {
		return nil, err
	}
	if req.Profile != prev.Profile {
		return nil, errorf(api.CodeBadRequest, "renewal must keep profile %q", prev.Profile)
	}
	o, err := e.check(kindRenew, &req, old)
	if err != nil {
		return nil, err
	}
	o.actor = actor
	return e.queue.submit(ctx, o)
}

// Extend issues the certificate with serial old again with a new validity:
// same key, subject, names and identity, a new serial. The old one is
// marked superseded.
func (e *Engine) Extend(ctx context.Context, actor store.Actor, requestID string, old []byte, days int) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindExtend, "request "+requestID, err) }()
	prev, err := e.status(old)
	if err == nil && isOwnCertificate(prev) {
		return nil, e.refuseOwn(actor, "certificate."+kindExtend, old)
	}
	if err := checkRequestID(requestID); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	p := e.profiles[prev.Profile]
	if p == nil {
		return nil, errorf(api.CodeUnknownProfile, "certificate %x has profile %q, no longer configured", old, prev.Profile)
	}
	cert, err := smx509.ParseCertificate(prev.DER)
	if err != nil {
		return nil, errorf(api.CodeInternal, "certificate %x: %v", old, err)
	}
	o := &order{kind: kindExtend, id: requestID, actor: actor, profile: p, raw: cert.RawSubject, pub: cert.PublicKey,
		dns: cert.DNSNames, emails: cert.EmailAddresses, replaces: old}
	for _, ext := range cert.Extensions {
		for _, oid := range identityOIDs {
			if ext.Id.Equal(oid) {
				o.identity = append(o.identity, ext)
			}
		}
	}
	if err := allowKey(o.pub, p); err != nil {
		return nil, err
	}
	if o.days, err = checkValidity(days, p); err != nil {
		return nil, err
	}
	o.digest = contentDigest(kindExtend, old, struct {
		ID   string `json:"request_id"`
		Days int    `json:"validity_days"`
	}{requestID, days})
	return e.queue.submit(ctx, o)
}

// Status returns the record of the certificate with serial; signerd's own
// certificates are not found (refuseOwn).
func (e *Engine) Status(serial []byte) (*store.Certificate, error) {
	return e.lookup(store.Actor{}, "", serial)
}

// StatusFor is Status asked by actor (an RA): an attempt on signerd's own
// certificate is audited as certificate.status, refused, like every other
// RA route's; a serial that does not exist is a read, and not audited.
func (e *Engine) StatusFor(actor store.Actor, serial []byte) (*store.Certificate, error) {
	return e.lookup(actor, "certificate.status", serial)
}

// lookup is status for an RA operation (action): signerd's own
// certificate is refused (refuseOwn) in the same read.
func (e *Engine) lookup(actor store.Actor, action string, serial []byte) (*store.Certificate, error) {
	c, err := e.status(serial)
	if err == nil && isOwnCertificate(c) {
		return nil, e.refuseOwn(actor, action, serial)
	}
	return c, err
}

func (e *Engine) status(serial []byte) (*store.Certificate, error) {
	var c *store.Certificate
	err := e.view(func(tx *store.Tx) error {
		var err error
		c, err = tx.Certificate(serial)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(api.CodeNotFound, "no certificate with serial %x", serial)
	}
	if err != nil {
		return nil, errorf(api.CodeInternal, "read certificate %x: %v", serial, err)
	}
	return c, nil
}

// Statistics returns a month's ("2006-01", Beijing time) counts by profile
// and kind (issued, renewed, extended, revoked).
func (e *Engine) Statistics(month string) (map[string]map[string]uint64, error) {
	if _, err := time.Parse("2006-01", month); err != nil {
		return nil, errorf(api.CodeBadRequest, "month %q: want YYYY-MM", month)
	}
	var out map[string]map[string]uint64
	err := e.view(func(tx *store.Tx) error {
		var err error
		out, err = tx.Statistics(month)
		return err
	})
	return out, err
}

// Issuer returns the issuer with key ID id ("" means the one issuing now).
func (e *Engine) Issuer(id string) (*issuance.Issuer, error) {
	if id == "" {
		return e.active, nil
	}
	if iss := e.issuers[id]; iss != nil {
		return iss, nil
	}
	return nil, errorf(api.CodeNotFound, "no issuing key %q", id)
}

// alarm reports n refusals because the clock went backwards: each in the
// log at error level, and in the audit log as one clock.alarm event per
// episode (clock.alarmDue), not per request; the refused requests
// themselves are recorded by their callers, with their actors, as
// refusals (tallied by the refusal sink).
func (e *Engine) alarm(err error, n int) {
	e.log.Error("clock alarm", "err", err, "refused", n, "remedy", clockRemedy)
	due, since := e.clock.alarmDue(n)
	if !due {
		return
	}
	reason := fmt.Sprintf("%v; %d clock_backwards refusals since the last clock.alarm, this one included", err, since)
	if aerr := e.update(func(tx *store.Tx) error {
		_, err := tx.Append(store.Event{Actor: store.System, Action: "clock.alarm", Outcome: store.OutcomeRefused, Reason: reason,
			Detail: clockRemedy})
		return err
	}); aerr != nil {
		e.log.Error("audit clock alarm", "err", aerr)
	}
}

// Bounds of a refusal event's object and reason, in bytes.
const (
	maxRefusalObject = 160
	maxRefusalReason = 1024
)

// auditRefusal records a request the engine refused or failed, unless
// nothing went wrong or the failure is already recorded (a burned serial,
// which stays one event per request).
func (e *Engine) auditRefusal(actor store.Actor, action, object string, err error) {
	var ee *Error
	if err == nil || (errors.As(err, &ee) && ee.audited) {
		return
	}
	outcome := store.OutcomeRefused
	code := CodeOf(err)
	switch code {
	case api.CodeInternal, api.CodeHSMUnavailable, api.CodeStoreUnavailable, api.CodeLintFailed, api.CodeIssuerExpired:
		outcome = store.OutcomeFailed
	}
	// The object and the reason quote what the RA sent (a request id, a
	// subject): bounded, so a refused request cannot grow the log by more
	// than a small event.
	e.recordRefusal(store.Event{Actor: actor, Action: action, Object: store.BoundedText(object, maxRefusalObject),
		Outcome: outcome, Reason: store.BoundedText(err.Error(), maxRefusalReason)}, code)
}

// recordRefusal hands a refusal's event to the refusal sink, or writes it
// if there is none; it reports whether it is recorded (or will be).
func (e *Engine) recordRefusal(ev store.Event, code api.Code) bool {
	if e.cfg.Refusals != nil {
		e.cfg.Refusals.Record(ev, string(code))
		return true
	}
	if err := e.Audit(ev); err != nil {
		e.log.Error("audit a refused request", "action", ev.Action, "err", err)
		return false
	}
	return true
}

// Audit records an event that goes with no engine operation (a refused
// peer, a daemon start).
func (e *Engine) Audit(ev store.Event) error {
	return e.update(func(tx *store.Tx) error {
		_, err := tx.Append(ev)
		return err
	})
}
