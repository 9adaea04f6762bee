package engine

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"signerd/hsm"
	"signerd/issuance"
	"signerd/publish"
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
	// CRLValidity is a complete CRL's nextUpdate − thisUpdate (default
	// 24h).
	CRLValidity time.Duration
	// CRLSchedule is when CRLs are signed without an operator asking
	// (crlschedule.go), from StartCRLSchedule on; its zero value signs
	// none.
	CRLSchedule CRLSchedule
	// CRLShards are the issuers' CRL layouts, by issuer ID (crlshards.go);
	// an issuer not named has one unpartitioned CRL.
	CRLShards map[string]CRLShards
	// Publish, if set, is where every CRL and OCSP response signed is
	// written for relying parties' web servers and the OCSP responder
	// (package publish).
	Publish *publish.Dir
	// OCSP is how OCSP responses are pre-signed (ocsp.go), from
	// StartOCSP on; its zero value signs none.
	OCSP OCSP
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
	batches     *issueStages // the queue's stages
	log         *slog.Logger
	crlMu       sync.Mutex
	layouts     *crlLayouts
	schedule    *crlSchedule
	ocsp        *ocspSigner
	responder   *ocspResponder // nil: issuing keys sign their responses
	hsmHealth   *hsmHealth
	storeHealth *storeHealth
	sealer      *sealer
	backupMu    sync.Mutex // one store backup at a time, copy to send (backup.go)
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
		active: cfg.Issuers[0], sm2ID: cfg.SM2ID, log: cfg.Log}
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
		e.cfg.CRLValidity = DefaultCRLValidity
	}
	e.cfg.CRLSchedule = e.cfg.CRLSchedule.withDefaults(e.cfg.CRLValidity) // validated with the rest
	e.layouts = &crlLayouts{of: map[string]CRLShards{}}
	for id, l := range cfg.CRLShards {
		if _, ok := e.issuers[id]; !ok {
			return nil, fmt.Errorf("engine: CRL shards of issuer %s, which is not one of the issuers", id)
		}
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("engine: CRL shards of issuer %s: %w", id, err)
		}
		if l.DeltaURL != "" && e.cfg.CRLSchedule.DeltaInterval <= 0 {
			return nil, fmt.Errorf("engine: CRL shards of issuer %s: a delta URL, but no delta CRLs are signed (crl.delta_interval): "+
				"certificates would name a Freshest CRL that is never published", id)
		}
		e.layouts.of[id] = l
	}
	if l := e.layouts.shards(e.active.ID()); l.URL != "" {
		for _, p := range e.profiles {
			if len(p.CRLDistribution) > 0 {
				return nil, fmt.Errorf("engine: profile %s names crl_distribution_points, but the active issuer's CRLs are sharded: "+
					"each certificate names its own shard's CRL (%s)", p.Name, l.URL)
			}
		}
	}
	e.schedule = newCRLSchedule(e, e.cfg.CRLSchedule)
	e.cfg.OCSP = e.cfg.OCSP.withDefaults()
	e.ocsp = newOCSPSigner(e, e.cfg.OCSP)
	if k := e.cfg.OCSP.ResponderKey; k != nil && e.cfg.OCSP.on() {
		pub, ok := k.Public().(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("engine: OCSP responder key: %T is not an SM2 key", k.Public())
		}
		e.responder = &ocspResponder{key: k, pub: pub, validity: e.cfg.OCSP.ResponderValidity}
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
	e.storeHealth = newStoreHealth(e.store, e.log, e.cfg.Now, e.cfg.WriteStallAfter)
	e.hsmHealth = &hsmHealth{log: e.log, now: e.cfg.Now, metrics: e.cfg.Metrics, store: e.storeHealth, recovered: e.schedule.changed,
		auditKey: cfg.AuditKey, issuers: cfg.Issuers, random: cfg.Random, status: HSMStatus{Up: true}}
	var err error
	if e.sealer, err = newSealer(&e.cfg, e.log, e.storeHealth, e.hsmHealth); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := e.checkAuditKeyOwn(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := e.sealer.check(); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.clock = &clock{now: e.cfg.Now, maxStep: e.cfg.ClockMaxStep, log: e.log, metrics: e.cfg.Metrics, store: e.storeHealth}
	e.batches = &issueStages{layouts: e.layouts, ocsp: e.ocsp, store: e.storeHealth, hsm: e.hsmHealth, clock: e.clock, issuer: e.active, random: e.cfg.Random,
		metrics: e.cfg.Metrics, log: e.log, node: e.store.Node(), signTimeout: e.cfg.SignTimeout, now: e.cfg.Now}
	if err := e.update(func(tx *store.Tx) error {
		if err := e.startClock(tx); err != nil {
			return err
		}
		if err := e.layouts.check(tx, issuerIDs(cfg.Issuers)); err != nil {
			return err
		}
		return e.batches.burnInterrupted(tx)
	}); err != nil {
		return nil, fmt.Errorf("engine: start-up recovery: %w", err)
	}
	if cfg.AuditKeyGenerated != "" && e.sealer.key != nil {
		if err := e.Audit(store.Event{Actor: store.System, Action: "audit.key.generated", Object: cfg.AuditKeyGenerated,
			Outcome: store.OutcomeOK, Detail: fmt.Sprintf("CKA_ID %X", hsm.KeyID(e.sealer.pub))}); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	e.queue = newBatchQueue(e.cfg.QueueSize, e.cfg.BatchSize, e.batches)
	e.storeHealth.watch(func() {
		e.batches.burnStranded()
		e.schedule.changed()
	})
	e.sealer.start()
	if e.sealer.key != nil {
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

// Close stops taking orders, finishes those queued, and returns.
func (e *Engine) Close() {
	// The schedule and the OCSP signer first: they submit to the queue
	// (the responder's certification) and sign through the HSM.
	e.schedule.close()
	e.ocsp.close()
	e.queue.close()
	e.storeHealth.stopWatching()
	e.batches.burnStranded()
	e.sealer.close()
}

// Queue is the signing queue (for its depth).
func (e *Engine) Queue() *BatchQueue { return e.queue }

// issuerIDs are the issuers' IDs, in order.
func issuerIDs(issuers []*issuance.Issuer) []string {
	ids := make([]string, len(issuers))
	for i, iss := range issuers {
		ids[i] = iss.ID()
	}
	return ids
}
