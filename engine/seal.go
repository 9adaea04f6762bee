package engine

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"time"

	"signerd/hsm"
	"signerd/store"
)

// Sealing the audit log (SPEC §7.2): every SealEvery events or SealInterval,
// and when the engine closes, the audit key signs the chain's head in an
// "audit.seal" event. A seal vouches for every event before it, so an edit
// anywhere before a seal is caught by its signature, and one after the
// last seal by the chain the next start-up walks.

// ErrAuditBroken: the audit log fails its check at start-up. The engine
// starts only if an operator acknowledges the break, which is audited.
var ErrAuditBroken = errors.New("audit log broken")

// checkAudit verifies the chain from the last seal (whose signature must
// verify under the audit key) to the head, and the store against the
// HSM's audit anchor. A break is returned unless it is acknowledged, in
// which case it is recorded and a new seal covers it (and moves the
// anchor to it).
func (e *Engine) checkAudit() error {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.SignTimeout)
	defer cancel()
	anchored, present, err := e.readAnchor(ctx)
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
	err = e.view(func(tx *store.Tx) error {
		if err := verifySinceSeal(tx, e.auditPub); err != nil {
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
		return e.settleAnchor(ctx, anchored, at, head)
	case dup != nil && err != nil:
		err = fmt.Errorf("%v; and the store's own log: %w", dup, err)
	case dup != nil:
		err = dup
	}
	return e.acknowledgeBreak(err, dup != nil)
}

// acknowledgeBreak returns the break unless an operator acknowledged it;
// then it records the break and seals the log as it is, the anchor
// replaced whatever the token holds if resetAnchor.
func (e *Engine) acknowledgeBreak(err error, resetAnchor bool) error {
	if e.cfg.AcknowledgeAuditBreak == "" {
		return fmt.Errorf("%w: %v (an operator may acknowledge the break to start anyway; the acknowledgement is audited)", ErrAuditBroken, err)
	}
	e.log.Warn("audit log break acknowledged", "break", err, "acknowledgement", e.cfg.AcknowledgeAuditBreak)
	if aerr := e.Audit(store.Event{Actor: store.System, Action: "audit.break.acknowledged", Outcome: store.OutcomeOK,
		Reason: err.Error(), Detail: e.cfg.AcknowledgeAuditBreak}); aerr != nil {
		return aerr
	}
	if e.auditKey == nil {
		return nil
	}
	e.anchor.reset = resetAnchor
	// This seal vouches for the log as it is, break and acknowledgement
	// included, so later checks start from here.
	_, err = e.seal(context.Background(), "after an acknowledged break", false)
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
func (e *Engine) seal(ctx context.Context, why string, verify bool) (uint64, error) {
	if e.auditKey == nil {
		return 0, nil
	}
	e.anchor.mu.Lock()
	defer e.anchor.mu.Unlock()
	var sealed uint64
	var mark anchorMark
	var signErr error
	defer func() {
		if signErr != nil || sealed != 0 {
			e.noteHSM(signErr)
		}
	}()
	err := e.update(func(tx *store.Tx) error {
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
		sig, err := e.hsmSign(ctx, e.auditKey, e.auditKey.Digest(store.SealMessage(seq+1, head)))
		if err != nil {
			signErr = err
			return fmt.Errorf("sign: %w", err)
		}
		ev, err := tx.Append(store.Event{Time: e.cfg.Now(), Actor: store.System, Action: "audit.seal",
			Object: fmt.Sprintf("through event %d", seq), Outcome: store.OutcomeOK, Reason: why,
			Seal: &store.Seal{KeyID: hsm.KeyID(e.auditPub), Signature: sig}})
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
	e.lastSeal.Store(e.cfg.Now().UnixNano())
	// Only once the seal is committed: an anchor ahead of the store would
	// stop the next start.
	e.writeAnchor(mark)
	return sealed, nil
}

// unsealed is how many events follow the last seal.
func (e *Engine) unsealed() (uint64, error) {
	var n uint64
	err := e.view(func(tx *store.Tx) error {
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

// sealer seals when SealEvery events are waiting, or any are and
// SealInterval has passed, until stop closes.
func (e *Engine) sealer(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(min(time.Second, e.cfg.SealInterval))
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
		n, err := e.unsealed()
		if err != nil {
			if !checkFailing || !storeFailed(err) {
				e.log.Error("audit seal check", "err", err)
			}
			checkFailing = true
			continue
		}
		if checkFailing {
			e.log.Info("audit seal check reads the store again")
			checkFailing = false
		}
		since := e.cfg.Now().Sub(time.Unix(0, e.lastSeal.Load()))
		due := n >= uint64(e.cfg.SealEvery) || (n > 0 && since >= e.cfg.SealInterval)
		if !due {
			continue
		}
		_, err = e.seal(context.Background(), fmt.Sprintf("%d events", n), true)
		if err != nil {
			e.log.Error("audit seal", "err", err)
			if !failing {
				if aerr := e.Audit(store.Event{Actor: store.System, Action: "audit.seal", Outcome: store.OutcomeFailed,
					Reason: err.Error()}); aerr != nil {
					e.log.Error("audit a failed seal", "err", aerr)
				}
			}
		}
		failing = err != nil
	}
}

// closeAudit stops the sealer and seals what is left. Only the first call
// does anything.
func (e *Engine) closeAudit() {
	if e.sealStop == nil || !e.sealClosed.CompareAndSwap(false, true) {
		return
	}
	close(e.sealStop)
	<-e.sealDone
	if n, err := e.unsealed(); err == nil && n > 0 {
		if _, err := e.seal(context.Background(), "shutdown", true); err != nil {
			e.log.Error("audit seal at shutdown", "err", err)
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
