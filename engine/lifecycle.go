package engine

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"signerd/api"
	"signerd/revocation"
	"signerd/store"
)

// refuseOwn answers for a certificate signerd issued for itself (its audit
// key's) as if there were none: every RA operation on a serial (status,
// renew, extend, revoke, hold, restore) checks the certificate it reads
// (lookup, transition) and calls it for one of signerd's own, so an RA can
// neither change such a certificate nor learn that the serial exists. The
// attempt is audited as what it was when action is given.
func (e *Engine) refuseOwn(actor store.Actor, action string, serial []byte) *Error {
	refused := errorf(api.CodeNotFound, "no certificate with serial %x", serial)
	if action != "" {
		refused.audited = e.recordRefusal(store.Event{Actor: actor, Action: action, Object: store.HexSerial(serial),
			Outcome: store.OutcomeRefused, Reason: string(api.CodeNotFound) + ": signerd's own certificate, which RA operations do not reach"},
			api.CodeNotFound)
	}
	return refused
}

// Revoke revokes the certificate for good with an RFC 5280 reason code. A
// certificate on hold may be revoked; a revoked or expired one stays as it
// is, except that keyCompromise may still be declared for it (see
// declareCompromise).
//
// keyCompromise is about the key, not one certificate: the key is marked
// compromised, so no certificate is issued for it again, and every other
// certificate this CA issued for it that is still valid (good, superseded
// or on hold) is revoked with it, and one revoked for another reason gets
// reason keyCompromise, in the same transaction: those of the
// certificate's own line of renewals and extensions and those of separate
// requests alike, found through the store's key index. Anything for that
// key, or replacing one of these, that is being signed meanwhile is
// discarded when it is recorded (see record).
func (e *Engine) Revoke(actor store.Actor, serial []byte, reason revocation.Reason) (*store.Certificate, error) {
	if !reason.Revocable() {
		if c, err := e.status(serial); err == nil && isOwnCertificate(c) {
			return nil, e.refuseOwn(actor, "certificate.revoke", serial)
		}
		return nil, errorf(api.CodeBadRequest, "reason %v cannot be given to revoke (use hold for certificateHold)", reason)
	}
	var then func(*store.Tx, *store.Certificate, time.Time) error
	if reason == revocation.KeyCompromise {
		then = func(tx *store.Tx, c *store.Certificate, now time.Time) error {
			return e.compromiseKey(tx, actor, c, now)
		}
	}
	return e.transition(actor, serial, "certificate.revoke", func(c *store.Certificate, now time.Time) error {
		if reason == revocation.KeyCompromise {
			return declareCompromise(c, now)
		}
		if err := notExpired(c, now); err != nil {
			return err
		}
		if c.Status == store.StatusRevoked {
			return errorf(api.CodeInvalidState, "certificate %x is already revoked", serial)
		}
		c.Status, c.Reason, c.RevokedAt = store.StatusRevoked, reason, now
		return nil
	}, then)
}

// declareCompromise revokes c for keyCompromise. Unlike any other reason
// it is taken for a certificate that is revoked already for another reason
// or has expired: the key's compromise may come to light only then, and it
// must still reach the key (compromiseKey), or a new certificate could be
// issued for it. A revoked certificate's reason becomes keyCompromise
// (RFC 5280 lets a reason change to keyCompromise) and its revocation date
// is kept: it was not valid after that date whatever the reason, and the
// CRLs already published stay true. An expired one not revoked before is
// revoked now; it stays off the CRL, which lists no expired certificate,
// but its key is marked all the same. One revoked for keyCompromise
// already is refused with invalid_state.
func declareCompromise(c *store.Certificate, now time.Time) error {
	switch {
	case c.Status == store.StatusRevoked && c.Reason == revocation.KeyCompromise:
		return errorf(api.CodeInvalidState, "certificate %x is already revoked for keyCompromise", c.Serial)
	case c.Status == store.StatusRevoked:
		c.Reason = revocation.KeyCompromise
	default: // good, superseded or on hold, valid or expired
		c.Status, c.Reason, c.RevokedAt = store.StatusRevoked, revocation.KeyCompromise, now
	}
	return nil
}

// notExpired refuses a change to a certificate that has expired.
func notExpired(c *store.Certificate, now time.Time) error {
	if !c.NotAfter.After(now) {
		return errorf(api.CodeInvalidState, "certificate %x expired %s", c.Serial, c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// compromiseKey marks c's key compromised and revokes for keyCompromise
// every other certificate for that key that has not expired, each with
// its audit event. The key index finds them by the subjectPublicKey bits;
// only those whose key is c's by the digest the compromised-keys index
// uses (algorithm and curve included) are taken. One valid or on hold is
// revoked now, and counted; one revoked before for another reason gets
// reason keyCompromise with its revocation date kept, as declareCompromise
// does for c itself, so no CRL lists a certificate of a compromised key
// under a milder reason; one revoked for keyCompromise already is left.
// signerd's own certificates are left to signerd (an RA never reaches
// them, and no RA certificate can share their key: see checkKeyUse).
func (e *Engine) compromiseKey(tx *store.Tx, actor store.Actor, c *store.Certificate, now time.Time) error {
	d, err := certKeyDigest(c)
	if err != nil {
		return err
	}
	if err := tx.MarkKeyCompromised(d, c.Serial); err != nil {
		return err
	}
	var same []*store.Certificate
	if err := tx.CertificatesOfKey(c.DER, func(o *store.Certificate) error {
		if bytes.Equal(o.Serial, c.Serial) || (o.Status == store.StatusRevoked && o.Reason == revocation.KeyCompromise) ||
			!o.NotAfter.After(now) || isOwnCertificate(o) {
			return nil
		}
		k, err := certKeyDigest(o)
		if err != nil {
			return err
		}
		if bytes.Equal(k, d) {
			same = append(same, o)
		}
		return nil
	}); err != nil {
		return err
	}
	// Written once the index has been read: no bucket changes under its cursor.
	for _, o := range same {
		why := fmt.Sprintf("status revoked, reason 1: same key as %x, revoked for keyCompromise", c.Serial)
		if o.Status == store.StatusRevoked {
			why = fmt.Sprintf("status revoked, reason 1, was reason %d, revocation date %s kept: same key as %x, revoked for keyCompromise",
				o.Reason, o.RevokedAt.Format(time.RFC3339), c.Serial)
			o.Reason = revocation.KeyCompromise
		} else {
			o.Status, o.Reason, o.RevokedAt = store.StatusRevoked, revocation.KeyCompromise, now
			if err := tx.Count(store.Month(now), o.Profile, store.StatRevoked, 1); err != nil {
				return err
			}
		}
		if err := tx.PutCertificate(o); err != nil {
			return err
		}
		if _, err := tx.Append(store.Event{Actor: actor, Action: "certificate.revoke", Object: store.HexSerial(o.Serial),
			Outcome: store.OutcomeOK, Reason: why}); err != nil {
			return err
		}
	}
	return nil
}

// Hold suspends a certificate (certificateHold on the next CRL).
func (e *Engine) Hold(actor store.Actor, serial []byte) (*store.Certificate, error) {
	return e.transition(actor, serial, "certificate.hold", func(c *store.Certificate, now time.Time) error {
		if err := notExpired(c, now); err != nil {
			return err
		}
		if c.Status != store.StatusGood && c.Status != store.StatusSuperseded {
			return errorf(api.CodeInvalidState, "certificate %x is %s; only a valid certificate can be held", serial, c.Status)
		}
		c.Status, c.Reason, c.RevokedAt = store.StatusOnHold, revocation.CertificateHold, now
		return nil
	}, nil)
}

// Restore lifts a hold: the certificate is valid again and leaves the next
// CRL.
func (e *Engine) Restore(actor store.Actor, serial []byte) (*store.Certificate, error) {
	return e.transition(actor, serial, "certificate.restore", func(c *store.Certificate, now time.Time) error {
		if err := notExpired(c, now); err != nil {
			return err
		}
		if c.Status != store.StatusOnHold {
			return errorf(api.CodeInvalidState, "certificate %x is %s, not on hold", serial, c.Status)
		}
		c.Status, c.Reason, c.RevokedAt = store.StatusGood, revocation.Unspecified, time.Time{}
		if c.SupersededBy != nil {
			c.Status = store.StatusSuperseded
		}
		return nil
	}, nil)
}

// transition applies change to a certificate's record in one transaction
// with its audit event (and, for a revocation of a certificate not revoked
// before, the monthly count); then, if not nil, runs after it in the same
// transaction once change succeeded. change decides whether an expired
// certificate may change (notExpired).
//
// Its time comes from the monotonic clock that stamps certificates and
// CRLs, taken inside the write transaction and noted in it: changes and
// CRLs are thus stamped in the order they commit (a CRL never lists a
// revocation dated after its thisUpdate), and after a restart nothing is
// signed, revoked, held or restored with a time before a recorded one.
func (e *Engine) transition(actor store.Actor, serial []byte, action string, change func(*store.Certificate, time.Time) error,
	then func(*store.Tx, *store.Certificate, time.Time) error) (*store.Certificate, error) {
	var out *store.Certificate
	var refused, clockErr error
	own := false
	err := e.update(func(tx *store.Tx) error {
		refused, own = nil, false
		c, err := tx.Certificate(serial)
		if errors.Is(err, store.ErrNotFound) {
			refused = errorf(api.CodeNotFound, "no certificate with serial %x", serial)
			return nil
		}
		if err != nil {
			return err
		}
		if own = isOwnCertificate(c); own {
			return nil // refused after the transaction
		}
		now, err := e.clock.read()
		if err != nil {
			clockErr = err
			return err // nothing to write
		}
		was := *c
		if refused = change(c, now); refused != nil {
			return nil // recorded after the transaction, tallied
		}
		ev := store.Event{Actor: actor, Action: action, Object: store.HexSerial(serial), Outcome: store.OutcomeOK,
			Reason: fmt.Sprintf("status %s, reason %d", c.Status, int(c.Reason))}
		if was.Status == store.StatusRevoked && c.Status == store.StatusRevoked {
			ev.Reason += fmt.Sprintf(", was reason %d, revocation date %s kept", was.Reason, c.RevokedAt.Format(time.RFC3339))
		}
		if !c.NotAfter.After(now) {
			ev.Reason += fmt.Sprintf(", certificate expired %s", c.NotAfter.Format(time.RFC3339))
		}
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		if err := e.ocsp.markDue(tx, c.Issuer, c.Serial, now); err != nil {
			return err
		}
		if err := e.clock.noteSigningTime(tx, now); err != nil {
			return err
		}
		if action == "certificate.revoke" && was.Status != store.StatusRevoked {
			if err := tx.Count(store.Month(now), c.Profile, store.StatRevoked, 1); err != nil {
				return err
			}
		}
		out = c
		if _, err := tx.Append(ev); err != nil {
			return err
		}
		if then != nil {
			return then(tx, c, now)
		}
		return nil
	})
	if clockErr != nil {
		// Refused like any other refusal, under the actor and action
		// (tallied by the refusal sink); the clock.alarm is the system's,
		// once per episode.
		e.clock.alarm(clockErr, 1)
		e.recordRefusal(store.Event{Actor: actor, Action: action, Object: store.HexSerial(serial), Outcome: store.OutcomeRefused,
			Reason: store.BoundedText(clockErr.Error(), maxRefusalReason)}, api.CodeClockBackwards)
		return nil, clockErr
	}
	if err != nil {
		return nil, errorf(storeCode(err), "%s %x: %v", action, serial, err)
	}
	if own {
		return nil, e.refuseOwn(actor, action, serial)
	}
	if refused != nil {
		// A refusal changes nothing: it goes to the refusal sink, so an RA
		// repeating one (a restore of a good certificate, a revocation of a
		// serial that does not exist) cannot write an event per request.
		e.recordRefusal(store.Event{Actor: actor, Action: action, Object: store.HexSerial(serial), Outcome: store.OutcomeRefused,
			Reason: store.BoundedText(refused.Error(), maxRefusalReason)}, CodeOf(refused))
		return nil, refused
	}
	e.schedule.changed()
	e.ocsp.changed()
	return out, nil
}
