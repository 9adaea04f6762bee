package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"signerd/hsm"
	"signerd/store"
)

// The audit anchor (docs/audit.md, "The anchor"): the chain's seals
// vouch for every event before them, but whoever can rewrite the store
// can cut the log back to an earlier seal and rewrite the head, and the
// shorter log still verifies. So after each seal the engine records the
// seal's sequence number and chain hash in the HSM, where rewriting the
// store does not reach, and at start-up the store must hold that seal,
// byte for byte, and the chain from it to the head.
//
// The anchor is written after the seal's transaction commits. A crash in
// between leaves the anchor behind the store, which start-up accepts and
// brings forward; an anchor ahead of the store means sealed events are
// gone (the log was cut, or an older copy of the store restored), and the
// engine starts only on an acknowledged break.

// AuditAnchor is a value kept where the store's writers cannot change it:
// *hsm.DataObject, a private data object in the token.
type AuditAnchor interface {
	// Read returns the value, hsm.ErrObjectNotFound if there is none.
	Read(ctx context.Context) ([]byte, error)
	// Create makes it, Update replaces it. Read reports
	// hsm.ErrDuplicateGeneration, and Update hsm.ErrWrittenElsewhere,
	// when another process wrote it too. Update and Reset report
	// hsm.ErrOlderObjectsLeft when the value was written but an older
	// object could not be removed.
	Create(ctx context.Context, value []byte) error
	Update(ctx context.Context, value []byte) error
	// Reset replaces it whatever it holds (duplicates included): only on
	// an operator's acknowledged break.
	Reset(ctx context.Context, value []byte) error
}

// anchorFormat starts an anchor's value.
const anchorFormat = "signerd-audit-anchor-v1"

// anchorMark is what the anchor records: a seal's sequence number and the
// chain hash of its stored bytes (0 and the genesis hash before the first
// seal).
type anchorMark struct {
	Seq  uint64
	Hash []byte
}

func (a anchorMark) encode() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%x\n", anchorFormat, a.Seq, a.Hash)
}

func parseAnchor(raw []byte) (anchorMark, error) {
	var a anchorMark
	lines := strings.Split(string(raw), "\n")
	if len(lines) != 4 || lines[0] != anchorFormat || lines[3] != "" {
		return a, fmt.Errorf("the HSM's audit anchor is not a %s value (%q)", anchorFormat, raw)
	}
	seq, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return a, fmt.Errorf("the HSM's audit anchor: sequence number: %w", err)
	}
	hash, err := hex.DecodeString(lines[2])
	if err != nil || len(hash) != len(store.Genesis()) {
		return a, fmt.Errorf("the HSM's audit anchor: hash %q is not an SM3 hash in hex", lines[2])
	}
	return anchorMark{Seq: seq, Hash: hash}, nil
}

// anchorState is the engine's side of the anchor.
type anchorState struct {
	// mu is held across a seal and its anchor write, so the anchor moves
	// in the order the seals commit.
	mu sync.Mutex
	// present: the token holds an anchor, to be updated rather than
	// created.
	present bool
	// failing: a write failed for the reason of its index and that was
	// audited; the next failure for that reason is not, until a write
	// succeeds. Each reason has its own episode, so an ordinary write
	// failure never hides the alarm that another signerd writes the
	// anchor.
	failing [anchorFailureKinds]atomic.Bool
	// reset: the next write replaces whatever the token holds (an
	// acknowledged break over duplicate anchors).
	reset bool
}

// Why an anchor write failed: each reason is audited once per episode.
const (
	anchorWriteFailed = iota // the write did not happen (an HSM failure)
	anchorMoved              // another signerd wrote the anchor (hsm.ErrWrittenElsewhere)
	anchorDuplicated         // two anchors of the newest generation (hsm.ErrDuplicateGeneration)
	anchorFailureKinds
)

// duplicateAnchorHelp says what duplicate anchors mean and what to do.
const duplicateAnchorHelp = "two signerd ran on this token at once, each with its own store (or the token was restored beside a copy " +
	"of itself): stop every signerd on this token but one, keep the store that one wrote, and start it with " +
	"--acknowledge-audit-break; the acknowledgement is audited, and the anchor is written again from that store's " +
	"last seal, above the duplicates, which are removed"

// readAnchor returns the anchor's value; present is false if the token
// holds none (or no anchor is configured). A lost login is retried once.
func (s *sealer) readAnchor(ctx context.Context) (raw []byte, present bool, err error) {
	if s.anchorStore == nil || s.key == nil {
		return nil, false, nil
	}
	for try := 0; ; try++ {
		raw, err = s.anchorStore.Read(ctx)
		if try == 0 && errors.Is(err, hsm.ErrTransient) {
			continue
		}
		break
	}
	switch {
	case errors.Is(err, hsm.ErrObjectNotFound):
		return nil, false, nil
	case errors.Is(err, hsm.ErrDuplicateGeneration):
		return nil, false, fmt.Errorf("the HSM holds two audit anchors of one generation (%w): %s", err, duplicateAnchorHelp)
	case err != nil:
		return nil, false, fmt.Errorf("read the audit anchor: %w", err)
	}
	s.anchor.present = true
	return raw, true, nil
}

// checkAnchor checks the store against the anchor: it holds the anchored
// seal, byte for byte, and the chain runs from there to the head.
func checkAnchor(tx *store.Tx, raw []byte) error {
	a, err := parseAnchor(raw)
	if err != nil {
		return err
	}
	head, _, err := tx.AuditHead()
	if err != nil {
		return err
	}
	if a.Seq > head {
		return fmt.Errorf("the HSM's audit anchor records seal event %d, but the store's audit log ends at event %d: "+
			"sealed events are missing from the store (cut back, or an older copy of the store restored): "+
			"events %d to %d, and the certificates, revocations and serials recorded with them, are not in this store; "+
			"restore a copy of the store that holds seal event %d", a.Seq, head, head+1, a.Seq, a.Seq)
	}
	stored := store.Genesis()
	if a.Seq > 0 {
		raw, err := storedEvent(tx, a.Seq)
		if err != nil {
			return err
		}
		stored = store.ChainHash(raw)
	}
	if !bytes.Equal(stored, a.Hash) {
		return fmt.Errorf("the store's audit event %d is not the one the HSM's audit anchor records (hash %x, anchored %x): "+
			"the log was rewritten from there, or this is another store", a.Seq, stored, a.Hash)
	}
	if err := tx.VerifyAuditChainFrom(a.Seq+1, a.Hash); err != nil {
		return fmt.Errorf("from the anchored event %d: %w", a.Seq, err)
	}
	return nil
}

// storedEvent returns event seq's stored bytes.
func storedEvent(tx *store.Tx, seq uint64) ([]byte, error) {
	var raw []byte
	err := tx.Events(seq, func(ev store.Event, stored []byte) error {
		if ev.Seq == seq {
			raw = bytes.Clone(stored)
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("audit event %d: missing", seq)
	}
	return raw, nil
}

// lastSealMark is what the anchor should record for the store as it is:
// its last seal, or nothing sealed yet.
func lastSealMark(tx *store.Tx) (anchorMark, error) {
	last, err := tx.LastSeal()
	if err != nil || last == nil {
		return anchorMark{Hash: store.Genesis()}, err
	}
	raw, err := storedEvent(tx, last.Seq)
	if err != nil {
		return anchorMark{}, err
	}
	return anchorMark{Seq: last.Seq, Hash: store.ChainHash(raw)}, nil
}

// settleAnchor runs at start-up once the log and the anchor agree: it
// makes the anchor if the token holds none (audited if the log already
// holds events, since what was cut from it before now went unseen) and
// brings one left behind by a crash up to the last seal.
func (s *sealer) settleAnchor(ctx context.Context, anchored []byte, at anchorMark, head uint64) error {
	if s.anchorStore == nil || s.key == nil {
		return nil
	}
	if !s.anchor.present {
		if err := s.anchorStore.Create(ctx, at.encode()); err != nil {
			s.anchorFailed(err)
			return nil
		}
		s.anchor.present = true
		if head == 0 {
			return nil // a new log: nothing went before
		}
		s.log.Warn("audit anchor created for a log that had none", "seal", at.Seq, "head", head)
		return s.store.appendEvent(store.Event{Actor: store.System, Action: "audit.anchor.created", Object: fmt.Sprintf("seal event %d", at.Seq),
			Outcome: store.OutcomeOK, Reason: fmt.Sprintf("the HSM held no audit anchor; the log (%d events) is anchored from seal event %d on, "+
				"and a cut made before this start could not be detected", head, at.Seq)})
	}
	a, err := parseAnchor(anchored)
	if err != nil || a.Seq >= at.Seq {
		return err
	}
	s.log.Warn("audit anchor behind the store's last seal (stopped between a seal and its anchor?): brought forward",
		"anchored", a.Seq, "last_seal", at.Seq)
	s.writeAnchor(at)
	return nil
}

// writeAnchor records a seal in the anchor. A failure leaves the anchor
// behind the store, which is safe; it is logged, audited once per reason
// (an HSM failure, the anchor moved under this signerd, duplicates) until
// a write succeeds, and the next seal tries again.
func (s *sealer) writeAnchor(at anchorMark) {
	if s.anchorStore == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.signTimeout)
	defer cancel()
	// An older object left beneath the new one (hsm.ErrOlderObjectsLeft)
	// does not undo the write: the anchor records the seal, the leftover
	// is superseded, and the next write removes it.
	written := func(err error) error {
		if errors.Is(err, hsm.ErrOlderObjectsLeft) {
			s.log.Warn("audit anchor written, but an older anchor object was left in the token", "seal", at.Seq, "err", err)
			return nil
		}
		return err
	}
	var err error
	if s.anchor.reset {
		if err = written(s.anchorStore.Reset(ctx, at.encode())); err == nil {
			s.anchor.reset, s.anchor.present = false, true
		}
	} else if s.anchor.present {
		err = written(s.anchorStore.Update(ctx, at.encode()))
	} else if err = s.anchorStore.Create(ctx, at.encode()); err == nil {
		s.anchor.present = true
	}
	if err != nil {
		s.anchorFailed(err)
		return
	}
	again := false
	for i := range s.anchor.failing {
		again = s.anchor.failing[i].Swap(false) || again
	}
	if again {
		s.log.Info("audit anchor written again", "seal", at.Seq)
	}
}

func (s *sealer) anchorFailed(err error) {
	kind := anchorWriteFailed
	switch {
	case errors.Is(err, hsm.ErrWrittenElsewhere):
		kind = anchorMoved
		err = fmt.Errorf("the HSM's audit anchor moved under this signerd: another signerd is sealing on this token "+
			"with a store of its own (%w); stop it, or this store's next start is refused as a break", err)
	case errors.Is(err, hsm.ErrDuplicateGeneration):
		kind = anchorDuplicated
		err = fmt.Errorf("the HSM holds two audit anchors of one generation (%w): %s", err, duplicateAnchorHelp)
	}
	s.log.Error("audit anchor", "err", err)
	if s.anchor.failing[kind].Swap(true) {
		return
	}
	if aerr := s.store.appendEvent(store.Event{Actor: store.System, Action: "audit.anchor", Outcome: store.OutcomeFailed,
		Reason: err.Error()}); aerr != nil {
		s.log.Error("audit a failed anchor write", "err", aerr)
	}
}
