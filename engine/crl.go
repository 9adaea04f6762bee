package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"signerd/api"
	"signerd/crl"
	"signerd/issuance"
	"signerd/publish"
	"signerd/revocation"
	"signerd/store"
)

// CRLName names one series of CRLs: an issuing key's ("" for the active
// one) shard, its complete CRLs or its deltas.
type CRLName struct {
	Issuer string
	Shard  int
	Delta  bool
}

func (n CRLName) String() string {
	s := fmt.Sprintf("%s shard %d", n.Issuer, n.Shard)
	if n.Delta {
		s += " delta"
	}
	return s
}

// crlObject is how an audit event names a CRL: "crl ISSUER #N" as it
// always has for an unpartitioned issuer's complete CRL, with the shard
// ("crl ISSUER/K #N") otherwise, "delta-crl" for deltas.
func crlObject(n CRLName, shards CRLShards, number uint64) string {
	kind := "crl"
	if n.Delta {
		kind = "delta-crl"
	}
	if shards.URL == "" && !n.Delta {
		return fmt.Sprintf("%s %s #%d", kind, n.Issuer, number)
	}
	return fmt.Sprintf("%s %s/%d #%d", kind, n.Issuer, n.Shard, number)
}

// errNotDue ends a scheduled signing whose CRL another node (or this one)
// signed meanwhile: nothing is written.
var errNotDue = errors.New("not due")

// crlJob is one CRL on its way from the store through the HSM.
type crlJob struct {
	iss    *issuance.Issuer
	name   CRLName
	shards CRLShards
	number uint64
	// seq is the change sequence a complete CRL lists up to; deltaOf the
	// complete CRL a delta is of.
	seq, deltaOf           uint64
	thisUpdate, nextUpdate time.Time
	entries                int
	tok                    *issuance.Token
}

// SignCRL signs the CRL name names now, whether or not one is due (the
// operator's route). The number is taken in one transaction before the
// HSM signs and the CRL recorded in another after, so a crash leaves a
// gap, never a repeat.
func (e *Engine) SignCRL(ctx context.Context, actor store.Actor, name CRLName) ([]byte, error) {
	return e.signCRL(ctx, actor, name, nil)
}

// signCRL signs the CRL name names if due (nil: always) says it is due,
// from the shard's state and the time, inside the transaction that takes
// its number; otherwise it returns errNotDue.
func (e *Engine) signCRL(ctx context.Context, actor store.Actor, name CRLName, due func(store.CRLState, time.Time) bool) ([]byte, error) {
	iss, shards, err := e.crlSeries(&name)
	if err != nil {
		e.auditRefusal(actor, "crl.sign", "issuer "+name.Issuer, err)
		return nil, err
	}
	// One CRL at a time: a shard's entries are held while it is built and
	// signed, and never two shards'.
	e.crlMu.Lock()
	defer e.crlMu.Unlock()
	job := &crlJob{iss: iss, name: name, shards: shards}
	var buildErr, refused error
	err = e.update(func(tx *store.Tx) error {
		now, err := e.clock.read()
		if err != nil {
			buildErr = err
			return err // nothing to write
		}
		if err := issuerValidAt(iss, now); err != nil {
			refused = err
			return err // nothing to write
		}
		st, err := tx.CRLShardState(iss.ID(), name.Shard)
		if err != nil {
			return err
		}
		if due != nil && !due(st, now) {
			return errNotDue
		}
		if name.Delta && st.Number == 0 {
			refused = errorf(api.CodeNotFound, "no complete CRL of %s yet for a delta to follow", name)
			return refused
		}
		if err := e.reserveCRL(tx, job, &st, now); err != nil {
			return err
		}
		if err := e.clock.noteSigningTime(tx, now); err != nil {
			return err
		}
		err = e.crlEntries(tx, job, st, now)
		if ee := (*Error)(nil); errors.As(err, &ee) {
			buildErr = err // the CRL number is not used up
		}
		return err
	})
	switch {
	case errors.Is(err, errNotDue):
		return nil, errNotDue
	case buildErr != nil:
		if CodeOf(buildErr) == api.CodeClockBackwards {
			e.clock.alarm(buildErr, 1)
		}
		e.auditRefusal(actor, "crl.sign", "issuer "+iss.ID(), buildErr)
		return nil, buildErr
	case refused != nil:
		e.auditRefusal(actor, "crl.sign", "issuer "+iss.ID(), refused)
		return nil, refused
	case err != nil:
		return nil, errorf(storeCode(err), "reserve CRL number: %v", err)
	}
	der, signErr := e.signCRLJob(ctx, job)
	latest, err := e.recordCRL(actor, job, der, signErr)
	if err != nil {
		return nil, err
	}
	if signErr != nil {
		return nil, signErr
	}
	if latest {
		// A CRL not kept as the latest (another node recorded a later one
		// meanwhile) is not published either: the directory serves what
		// GET /v1/crl serves.
		e.publishCRL(job.name, job.number, der)
	}
	return der, nil
}

// crlSeries resolves name's issuer (the active one if "") and checks its
// shard and kind against the issuer's layout.
func (e *Engine) crlSeries(name *CRLName) (*issuance.Issuer, CRLShards, error) {
	iss, err := e.Issuer(name.Issuer)
	if err != nil {
		return nil, CRLShards{}, err
	}
	name.Issuer = iss.ID()
	shards := e.layouts.shards(iss.ID())
	if name.Shard < 0 || name.Shard >= shards.count() {
		return nil, shards, errorf(api.CodeNotFound, "issuer %s has %d CRL shard(s), numbered from 0: no shard %d", iss.ID(), shards.count(), name.Shard)
	}
	if name.Delta && e.cfg.CRLSchedule.DeltaInterval <= 0 {
		return nil, shards, errorf(api.CodeNotFound, "delta CRLs are not configured (crl.delta_interval)")
	}
	return iss, shards, nil
}

// reserveCRL takes job's number and dates in tx, and claims the shard's
// next CRL for this node until the signature is due back.
func (e *Engine) reserveCRL(tx *store.Tx, job *crlJob, st *store.CRLState, now time.Time) error {
	validity := e.cfg.CRLValidity
	if job.name.Delta {
		validity = e.cfg.CRLSchedule.DeltaValidity
	}
	job.thisUpdate, job.nextUpdate = now, now.Add(validity)
	number := crlNumber(st.Next, now, e.cfg.Now())
	if number == math.MaxUint64 {
		// Only an edited store gets here (times stay below 2^63 until
		// 2262); the next number would wrap to 0 and the one after go
		// back to the time.
		return fmt.Errorf("the store's next CRL number for %s is %d: no larger number follows it", job.name, number)
	}
	job.number = number
	st.Next = number + 1
	st.Claim = &store.CRLClaim{Node: e.store.Node(), Until: now.Add(2 * e.cfg.SignTimeout), Delta: job.name.Delta}
	return tx.PutCRLShardState(job.iss.ID(), job.name.Shard, *st)
}

// crlEntries builds job's TBS from the store in tx: a complete CRL lists
// every unexpired certificate of the shard that is revoked or on hold; a
// delta, each certificate of the shard whose listing changed since its
// base, as it is now (or removeFromCRL). thisUpdate is stamped in the
// transaction that reads the entries, as revocations are stamped inside
// theirs, so a CRL never lists a revocation dated after its thisUpdate.
// A clock_backwards error means the store holds a revocation dated
// after the clock; nothing is signed.
func (e *Engine) crlEntries(tx *store.Tx, job *crlJob, st store.CRLState, now time.Time) error {
	scope := crl.Scope{Number: job.number, ThisUpdate: job.thisUpdate, NextUpdate: job.nextUpdate, IDP: job.shards.idp(job.name.Shard)}
	if job.name.Delta {
		scope.DeltaOf, job.deltaOf = st.Number, st.Number
	} else if job.shards.DeltaURL != "" && e.cfg.CRLSchedule.DeltaInterval > 0 {
		scope.Freshest = crl.URL(job.shards.DeltaURL, job.name.Shard)
	}
	b, err := job.iss.NewCRL(scope)
	if err != nil {
		return errorf(issuanceCode(err), "CRL %s: %v", job.name, err)
	}
	add := func(c store.RevokedEntry) error {
		if c.RevokedAt.After(now) {
			// Only a store whose times the clock guard never saw (copied
			// in, or edited) gets here.
			return errorf(api.CodeClockBackwards,
				"system clock reads %s, before the revocation of %x at %s: refusing to sign a CRL dated before its entries",
				now.Format(time.RFC3339), c.Serial, c.RevokedAt.Format(time.RFC3339))
		}
		if err := b.Add(crl.Entry{Serial: c.Serial, RevokedAt: c.RevokedAt, Reason: c.Reason}); err != nil {
			return errorf(api.CodeInternal, "CRL %s: entry %x: %v", job.name, c.Serial, err)
		}
		return nil
	}
	id, k, n := job.iss.ID(), job.name.Shard, job.shards.count()
	if job.name.Delta {
		err = deltaEntries(tx, id, k, n, st.BaseSeq, now, add)
	} else {
		lo, hi := crl.Bounds(k, n)
		job.seq, err = tx.CRLChangeSeq()
		if err == nil {
			err = tx.RevokedRange(id, lo, hi, func(c store.RevokedEntry) error {
				if c.NotAfter.Before(now) {
					return nil // expired certificates leave the CRL (RFC 5280 §3.3)
				}
				return add(c)
			})
		}
	}
	if err != nil {
		return err
	}
	job.entries = b.Len()
	tok, err := job.iss.PrepareCRL(b)
	if err != nil {
		return errorf(issuanceCode(err), "CRL %s %v", job.name, err)
	}
	job.tok = tok
	return nil
}

// deltaEntries calls add, in serial order, for each certificate of shard k
// (of n) of issuer whose listing changed after the change sequence base:
// its entry if it is listed now, else a removeFromCRL entry dated when it
// was taken off (RFC 5280 §5.3.1).
func deltaEntries(tx *store.Tx, issuer string, k, n int, base uint64, now time.Time, add func(store.RevokedEntry) error) error {
	changed := map[string]time.Time{}
	err := tx.CRLChanges(issuer, base, func(c store.CRLChange) error {
		if crl.Shard(c.Serial, n) == k {
			changed[string(c.Serial)] = c.At
		}
		return nil
	})
	if err != nil {
		return err
	}
	serials := make([][]byte, 0, len(changed))
	for s := range changed {
		serials = append(serials, []byte(s))
	}
	slices.SortFunc(serials, bytes.Compare)
	for _, s := range serials {
		c, listed, err := tx.RevokedEntryOf(issuer, s)
		if err != nil {
			return err
		}
		if !listed {
			at := changed[string(s)]
			if at.IsZero() || at.After(now) {
				at = now
			}
			c = store.RevokedEntry{Serial: s, RevokedAt: at, Reason: revocation.RemoveFromCRL}
		} else if c.NotAfter.Before(now) {
			continue
		}
		if err := add(c); err != nil {
			return err
		}
	}
	return nil
}

// crlNumber is the number of a CRL whose thisUpdate is thisUpdate, signed
// from a store whose next number is next: the signing time in Unix
// nanoseconds (read is the clock read again for the nanoseconds thisUpdate,
// which carries seconds, has lost), or next if that is larger. The time
// makes numbers increase across copies of the store: a restored older copy
// holds a smaller next, but the clock has moved on since every CRL signed
// from the newer one (RFC 5280 §5.2.3; Let's Encrypt's crl-updater numbers
// its CRLs the same way). next keeps numbers increasing within one store
// when the time does not: two CRLs in one nanosecond, or a clock that ran
// ahead and was reset (--acknowledge-clock-reset). A restored copy and a
// clock reading before CRLs signed from the newer copy together defeat
// both; README "Backup and restore" says so. Unix nanoseconds fit in 63
// bits until 2262: 8 octets, well within RFC 5280's 20. A shard's
// complete CRLs and its deltas share one sequence (RFC 5280 §5.2.3).
func crlNumber(next uint64, thisUpdate, read time.Time) uint64 {
	at := read.UTC()
	if at.Truncate(time.Second).Before(thisUpdate) {
		// The clock stepped back between the two readings: the time
		// the CRL carries is the one to count from.
		at = thisUpdate
	}
	if ns := at.UnixNano(); ns > 0 && uint64(ns) > next {
		return uint64(ns)
	}
	return next
}

// signCRLJob has the HSM sign job's token, and issuance check the result.
func (e *Engine) signCRLJob(ctx context.Context, job *crlJob) ([]byte, error) {
	out, err := e.hsmHealth.issue(ctx, job.iss, job.tok)
	switch {
	case errors.Is(err, errHSM):
		return nil, errorf(api.CodeHSMUnavailable, "sign CRL %s: %v", job.name, err)
	case err != nil:
		return nil, errorf(issuanceCode(err), "signed CRL %s: %v", job.name, err)
	}
	return out.DER, nil
}

// recordCRL records job's signed CRL (der), or its failure (signErr), with
// its audit event, and releases the shard's claim; latest reports whether
// the CRL is now the series' latest.
func (e *Engine) recordCRL(actor store.Actor, job *crlJob, der []byte, signErr error) (latest bool, err error) {
	object := crlObject(job.name, job.shards, job.number)
	id, k := job.iss.ID(), job.name.Shard
	err = e.update(func(tx *store.Tx) error {
		latest = false
		ev := store.Event{Actor: actor, Action: "crl.sign", Object: object, Outcome: store.OutcomeOK,
			Reason: fmt.Sprintf("%d entries, next update %s", job.entries, job.nextUpdate.Format("2006-01-02T15:04:05Z"))}
		if job.name.Delta {
			ev.Reason += fmt.Sprintf(", delta of #%d", job.deltaOf)
		}
		st, err := tx.CRLShardState(id, k)
		if err != nil {
			return err
		}
		if st.Claim != nil && st.Claim.Node == e.store.Node() {
			st.Claim = nil
		}
		switch {
		case signErr != nil:
			ev.Outcome, ev.Reason = store.OutcomeFailed, signErr.Error()
		case job.name.Delta:
			if job.number > st.DeltaNumber && job.deltaOf == st.Number {
				st.DeltaNumber, st.DeltaThisUpdate, st.DeltaNextUpdate = job.number, job.thisUpdate, job.nextUpdate
				if err := tx.PutCRLObject(id, k, true, der); err != nil {
					return err
				}
				latest = true
			} else {
				ev.Reason += "; not kept as the latest delta: a later CRL was recorded meanwhile"
			}
		// Another node may have taken a larger number after this one and
		// recorded its CRL while this one was being signed: the CRL served
		// as the latest never goes back to a smaller number (or to fewer
		// entries). This one is still good, and returned.
		case job.number > st.Number:
			st.Number, st.ThisUpdate, st.NextUpdate, st.BaseSeq = job.number, job.thisUpdate, job.nextUpdate, job.seq
			if err := tx.PutCRLObject(id, k, false, der); err != nil {
				return err
			}
			latest = true
			if err := e.pruneCRLChanges(tx, id, job.shards.count(), k, st.BaseSeq); err != nil {
				return err
			}
		default:
			ev.Reason += fmt.Sprintf("; not kept as the latest: CRL #%d was recorded meanwhile", st.Number)
		}
		if err := tx.PutCRLShardState(id, k, st); err != nil {
			return err
		}
		_, err = tx.Append(ev)
		return err
	})
	if err != nil {
		return false, errorf(storeCode(err), "record %s: %v", object, err)
	}
	return latest, nil
}

// crlChangesPruned bounds the change records one CRL's transaction
// removes; the next CRL removes more.
const crlChangesPruned = 10000

// pruneCRLChanges removes the change records every shard's latest
// complete CRL lists (shard k's just became seq): no delta needs them.
func (e *Engine) pruneCRLChanges(tx *store.Tx, issuer string, n, k int, seq uint64) error {
	least := seq
	for i := range n {
		if i == k {
			continue
		}
		st, err := tx.CRLShardState(issuer, i)
		if err != nil {
			return err
		}
		least = min(least, st.BaseSeq)
	}
	if least == 0 {
		return nil
	}
	_, err := tx.PruneCRLChanges(issuer, least, crlChangesPruned)
	return err
}

// publishCRL writes a CRL just recorded into the publication directory,
// if there is one. A failure is alarmed; the schedule writes it again
// (crlSchedule.republish), as it writes what other nodes signed.
func (e *Engine) publishCRL(name CRLName, number uint64, der []byte) {
	if e.cfg.Publish == nil {
		return
	}
	s := publish.Series{Issuer: name.Issuer, Shard: name.Shard, Delta: name.Delta}
	latest, err := e.cfg.Publish.PutCRL(s, number, der)
	if err != nil {
		e.schedule.alarm(failureKey{name, true}, fmt.Errorf("publish CRL #%d: %w", number, err), time.Time{})
		return
	}
	if !latest {
		// The directory holds a larger number than the store's latest: a
		// store restored from an older copy with the clock behind the
		// CRLs signed since (README, "CRL numbers after a restore").
		e.log.Warn("CRL published under its number only: the directory's latest has a larger number", "crl", name.String(), "number", number)
	}
	e.schedule.published(name, number)
}

// LatestCRL returns the last CRL recorded for name.
func (e *Engine) LatestCRL(name CRLName) ([]byte, error) {
	if _, _, err := e.crlSeries(&name); err != nil {
		return nil, err
	}
	der, _, err := e.latestCRL(name)
	return der, err
}

// latestCRL reads the last CRL recorded for name (its issuer resolved)
// and its number.
func (e *Engine) latestCRL(name CRLName) ([]byte, uint64, error) {
	var der []byte
	var number uint64
	err := e.view(func(tx *store.Tx) error {
		st, err := tx.CRLShardState(name.Issuer, name.Shard)
		if err != nil {
			return err
		}
		number = st.Number
		if name.Delta {
			number = st.DeltaNumber
		}
		der, err = tx.CRLObject(name.Issuer, name.Shard, name.Delta)
		return err
	})
	if err != nil {
		return nil, 0, errorf(storeCode(err), "read CRL %s: %v", name, err)
	}
	if der == nil {
		return nil, 0, errorf(api.CodeNotFound, "no CRL signed yet for %s", name)
	}
	return der, number, nil
}
