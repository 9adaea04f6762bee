package engine

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"signerd/hsm"
	"signerd/store"
)

// Sealing the audit log (SPEC §7.2): every SealEvery events or SealInterval,
// and when the engine closes, the audit key signs the chain's head in an
// "audit.seal" event. A seal vouches for every event before it, so an edit
// anywhere before a seal is caught by its signature, and one after the
// last seal by the chain the next start-up walks.

// sealer keeps the audit log sealed and anchored: it owns the audit key,
// checks the log at start-up (check), seals it on its cadence (start) and
// on demand (seal: an export, a backup), and at close (close), and
// records each seal in the anchor (anchor.go). Without an audit key it
// still checks the chain, and seals nothing.
type sealer struct {
	key AuditSigner // nil: the log is not sealed
	pub *ecdsa.PublicKey
	// anchorStore is Config.AuditAnchor; anchor is the engine's side of it.
	anchorStore AuditAnchor
	anchor      anchorState
	// every and interval are Config.SealEvery and SealInterval.
	every    int
	interval time.Duration
	// signTimeout bounds a signature or an anchor's read or write.
	signTimeout time.Duration
	// acknowledgement is Config.AcknowledgeAuditBreak.
	acknowledgement string
	now             func() time.Time
	log             *slog.Logger
	store           *storeHealth
	hsm             *hsmHealth

	lastSeal   atomic.Int64 // UnixNano of the last seal
	stop, done chan struct{}
	closed     atomic.Bool
}

// newSealer returns the sealer for cfg (its defaults set), with its
// audit key's public key checked to be SM2.
func newSealer(cfg *Config, log *slog.Logger, st *storeHealth, h *hsmHealth) (*sealer, error) {
	s := &sealer{anchorStore: cfg.AuditAnchor, every: cfg.SealEvery, interval: cfg.SealInterval, signTimeout: cfg.SignTimeout,
		acknowledgement: cfg.AcknowledgeAuditBreak, now: cfg.Now, log: log, store: st, hsm: h}
	if cfg.AuditKey == nil {
		return s, nil
	}
	pub, err := publicKeyOf(cfg.AuditKey)
	if err != nil {
		return nil, err
	}
	s.key, s.pub = cfg.AuditKey, pub
	return s, nil
}

// ErrAuditBroken: the audit log fails its check at start-up. The engine
// starts only if an operator acknowledges the break, which is audited.
var ErrAuditBroken = errors.New("audit log broken")

// check verifies the chain from the last seal (whose signature must
// verify under the audit key) to the head, and the store against the
// HSM's audit anchor. A break is returned unless it is acknowledged, in
// which case it is recorded and a new seal covers it (and moves the
// anchor to it).
func (s *sealer) check() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.signTimeout)
	defer cancel()
	anchored, present, err := s.readAnchor(ctx)
	// Duplicate anchors: neither can be trusted over the other. It is a
	// break; the operator who acknowledges it vouches for this store, and
	// the anchor is written again from it.
	dup := err
	if !errors.Is(err, hsm.ErrDuplicateGeneration) {
		if err != nil {
			return err
		}
		dup = nil
	}
	var at anchorMark
	var head uint64
	err = s.store.view(func(tx *store.Tx) error {
		if err := verifySinceSeal(tx, s.pub); err != nil {
			return err
		}
		if present {
			if err := checkAnchor(tx, anchored); err != nil {
				return err
			}
		}
		var err error
		if head, _, err = tx.AuditHead(); err != nil {
			return err
		}
		at, err = lastSealMark(tx)
		return err
	})
	switch {
	case dup == nil && err == nil:
		return s.settleAnchor(ctx, anchored, at, head)
	case dup != nil && err != nil:
		err = fmt.Errorf("%v; and the store's own log: %w", dup, err)
	case dup != nil:
		err = dup
	}
	return s.acknowledgeBreak(err, dup != nil)
}

// acknowledgeBreak returns the break unless an operator acknowledged it;
// then it records the break and seals the log as it is, the anchor
// replaced whatever the token holds if resetAnchor.
func (s *sealer) acknowledgeBreak(err error, resetAnchor bool) error {
	if s.acknowledgement == "" {
		return fmt.Errorf("%w: %v (an operator may acknowledge the break to start anyway; the acknowledgement is audited)", ErrAuditBroken, err)
	}
	s.log.Warn("audit log break acknowledged", "break", err, "acknowledgement", s.acknowledgement)
	if aerr := s.store.appendEvent(store.Event{Actor: store.System, Action: "audit.break.acknowledged", Outcome: store.OutcomeOK,
		Reason: err.Error(), Detail: s.acknowledgement}); aerr != nil {
		return aerr
	}
	if s.key == nil {
		return nil
	}
	s.anchor.reset = resetAnchor
	// This seal vouches for the log as it is, break and acknowledgement
	// included, so later checks start from here.
	_, err = s.seal(context.Background(), "after an acknowledged break", false)
	return err
}

// verifySinceSeal checks the chain from the last seal (all of it if there
// is none) and, with pub, the last seal's signature.
func verifySinceSeal(tx *store.Tx, pub *ecdsa.PublicKey) error {
	last, err := tx.LastSeal()
	if err != nil {
		return err
	}
	if last == nil {
		return tx.VerifyAuditChain()
	}
	if pub != nil {
		if err := store.VerifySeal(pub, *last); err != nil {
			return err
		}
	}
	return tx.VerifyAuditChainFrom(last.Seq, last.Prev)
}

// seal signs the audit log's head now and returns the seal's sequence
// number; with verify, only if the chain since the last seal holds.
// Without an audit key it does nothing.
func (s *sealer) seal(ctx context.Context, why string, verify bool) (uint64, error) {
	if s.key == nil {
		return 0, nil
	}
	s.anchor.mu.Lock()
	defer s.anchor.mu.Unlock()
	var sealed uint64
	var mark anchorMark
	var signErr error
	defer func() {
		if signErr != nil || sealed != 0 {
			s.hsm.note(signErr)
		}
	}()
	err := s.store.update(func(tx *store.Tx) error {
		if verify {
			if err := verifySinceSeal(tx, nil); err != nil {
				return err
			}
		}
		seq, head, err := tx.AuditHead()
		if err != nil {
			return err
		}
		// Signing inside the transaction holds the single writer for one
		// HSM signature, so nothing can slip in between head and seal.
		sig, err := s.hsm.sign(ctx, s.key, s.key.Digest(store.SealMessage(seq+1, head)))
		if err != nil {
			signErr = err
			return fmt.Errorf("sign: %w", err)
		}
		ev, err := tx.Append(store.Event{Time: s.now(), Actor: store.System, Action: "audit.seal",
			Object: fmt.Sprintf("through event %d", seq), Outcome: store.OutcomeOK, Reason: why,
			Seal: &store.Seal{KeyID: hsm.KeyID(s.pub), Signature: sig}})
		sealed = ev.Seq
		if err != nil {
			return err
		}
		_, hash, err := tx.AuditHead()
		mark = anchorMark{Seq: ev.Seq, Hash: hash}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("seal the audit log: %w", err)
	}
	s.lastSeal.Store(s.now().UnixNano())
	// Only once the seal is committed: an anchor ahead of the store would
	// stop the next start.
	s.writeAnchor(mark)
	return sealed, nil
}

// unsealed is how many events follow the last seal.
func (s *sealer) unsealed() (uint64, error) {
	var n uint64
	err := s.store.view(func(tx *store.Tx) error {
		seq, _, err := tx.AuditHead()
		if err != nil {
			return err
		}
		last, err := tx.LastSeal()
		if err != nil {
			return err
		}
		n = seq
		if last != nil {
			n = seq - last.Seq
		}
		return nil
	})
	return n, err
}

// start seals from now on whenever every events are waiting, or any are
// and interval has passed, until close. Without an audit key it does
// nothing.
func (s *sealer) start() {
	if s.key == nil {
		return
	}
	s.lastSeal.Store(s.now().UnixNano())
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.run(s.stop, s.done)
}

func (s *sealer) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(min(time.Second, s.interval))
	defer tick.Stop()
	failing := false // a failed seal is audited once, not at every retry
	// checkFailing: the last check could not read the store; an outage of
	// a database store is logged once, not at every tick (health and the
	// store's own log say while it lasts).
	checkFailing := false
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		n, err := s.unsealed()
		if err != nil {
			if !checkFailing || !storeFailed(err) {
				s.log.Error("audit seal check", "err", err)
			}
			checkFailing = true
			continue
		}
		if checkFailing {
			s.log.Info("audit seal check reads the store again")
			checkFailing = false
		}
		since := s.now().Sub(time.Unix(0, s.lastSeal.Load()))
		due := n >= uint64(s.every) || (n > 0 && since >= s.interval)
		if !due {
			continue
		}
		_, err = s.seal(context.Background(), fmt.Sprintf("%d events", n), true)
		if err != nil {
			s.log.Error("audit seal", "err", err)
			if !failing {
				if aerr := s.store.appendEvent(store.Event{Actor: store.System, Action: "audit.seal", Outcome: store.OutcomeFailed,
					Reason: err.Error()}); aerr != nil {
					s.log.Error("audit a failed seal", "err", aerr)
				}
			}
		}
		failing = err != nil
	}
}

// close stops the sealing that start began and seals what is left. Only
// the first call does anything.
func (s *sealer) close() {
	if s.stop == nil || !s.closed.CompareAndSwap(false, true) {
		return
	}
	close(s.stop)
	<-s.done
	if n, err := s.unsealed(); err == nil && n > 0 {
		if _, err := s.seal(context.Background(), "shutdown", true); err != nil {
			s.log.Error("audit seal at shutdown", "err", err)
		}
	}
}

func publicKeyOf(s AuditSigner) (*ecdsa.PublicKey, error) {
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit key: %T is not an SM2 key", s.Public())
	}
	return pub, nil
}
