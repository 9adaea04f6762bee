package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/crl"
	"signerd/issuance"
	"signerd/revocation"
	"signerd/store"
)

// SignCRL signs a full CRL for the issuing key with ID issuerID ("" for
// the active one): every certificate it issued that is revoked or on hold
// and not yet expired. The CRL number (crlNumber) is taken in one
// transaction before the HSM signs and the CRL recorded in another after,
// so a crash leaves a gap, never a repeat.
func (e *Engine) SignCRL(ctx context.Context, actor store.Actor, issuerID string) ([]byte, error) {
	iss, err := e.Issuer(issuerID)
	if err != nil {
		e.auditRefusal(actor, "crl.sign", "issuer "+issuerID, err)
		return nil, err
	}
	e.crlMu.Lock()
	defer e.crlMu.Unlock()
	// thisUpdate is stamped inside the transaction that reads the entries,
	// as revocations are stamped inside theirs (transition): a CRL never
	// lists a revocation dated after its thisUpdate.
	tmpl := &smx509.RevocationList{}
	var clockErr, refused error
	err = e.update(func(tx *store.Tx) error {
		now, err := e.clock.read()
		if err != nil {
			clockErr = err
			return err // nothing to write
		}
		if err := issuerValidAt(iss, now); err != nil {
			refused = err
			return err // nothing to write
		}
		tmpl.ThisUpdate, tmpl.NextUpdate = now, now.Add(e.cfg.CRLValidity)
		st, err := tx.CRLState(iss.ID())
		if err != nil {
			return err
		}
		number := crlNumber(st.Next, now, e.cfg.Now())
		if number == math.MaxUint64 {
			// Only an edited store gets here (times stay below 2^63 until
			// 2262); the next number would wrap to 0 and the one after
			// go back to the time.
			return fmt.Errorf("the store's next CRL number for %s is %d: no larger number follows it", iss.ID(), number)
		}
		tmpl.Number = new(big.Int).SetUint64(number)
		st.Next = number + 1
		if err := tx.PutCRLState(iss.ID(), st); err != nil {
			return err
		}
		if err := e.clock.noteSigningTime(tx, now); err != nil {
			return err
		}
		err = tx.Revoked(iss.ID(), func(c store.RevokedEntry) error {
			if c.NotAfter.Before(now) {
				return nil // expired certificates leave the CRL (RFC 5280 §3.3)
			}
			if c.RevokedAt.After(now) && clockErr == nil {
				// Only a store whose times the clock guard never saw
				// (copied in, or edited) gets here.
				clockErr = errorf(api.CodeClockBackwards,
					"system clock reads %s, before the revocation of %x at %s: refusing to sign a CRL dated before its entries",
					now.Format(time.RFC3339), c.Serial, c.RevokedAt.Format(time.RFC3339))
			}
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, smx509.RevocationListEntry{
				SerialNumber: new(big.Int).SetBytes(c.Serial), RevocationTime: c.RevokedAt, ReasonCode: int(c.Reason)})
			return nil
		})
		if err == nil && clockErr != nil {
			return clockErr // the CRL number is not used up
		}
		return err
	})
	if clockErr != nil {
		e.clock.alarm(clockErr, 1)
		e.auditRefusal(actor, "crl.sign", "issuer "+iss.ID(), clockErr)
		return nil, clockErr
	}
	if refused != nil {
		e.auditRefusal(actor, "crl.sign", "issuer "+iss.ID(), refused)
		return nil, refused
	}
	if err != nil {
		return nil, errorf(storeCode(err), "reserve CRL number: %v", err)
	}
	der, signErr := e.signCRL(ctx, iss, tmpl)
	object := fmt.Sprintf("crl %s #%v", iss.ID(), tmpl.Number)
	err = e.update(func(tx *store.Tx) error {
		ev := store.Event{Actor: actor, Action: "crl.sign", Object: object, Outcome: store.OutcomeOK,
			Reason: fmt.Sprintf("%d entries, next update %s", len(tmpl.RevokedCertificateEntries), tmpl.NextUpdate.Format("2006-01-02T15:04:05Z"))}
		if signErr != nil {
			ev.Outcome, ev.Reason = store.OutcomeFailed, signErr.Error()
		} else {
			st, err := tx.CRLState(iss.ID())
			if err != nil {
				return err
			}
			// Another node may have taken a larger number after this one
			// and recorded its CRL while this one was being signed: the
			// CRL served as the latest never goes back to a smaller number
			// (or to fewer entries). This one is still good, and returned.
			if n := tmpl.Number.Uint64(); n > st.Number {
				st.DER, st.ThisUpdate, st.NextUpdate, st.Number = der, tmpl.ThisUpdate, tmpl.NextUpdate, n
				if err := tx.PutCRLState(iss.ID(), st); err != nil {
					return err
				}
			} else {
				ev.Reason += fmt.Sprintf("; not kept as the latest: CRL #%d was recorded meanwhile", st.Number)
			}
		}
		_, err := tx.Append(ev)
		return err
	})
	if signErr != nil {
		return nil, signErr
	}
	if err != nil {
		return nil, errorf(storeCode(err), "record %s: %v", object, err)
	}
	return der, nil
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
// bits until 2262: 8 octets, well within RFC 5280's 20.
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

// signCRL has issuance build and lint the CRL, the HSM sign it, and
// issuance check the result.
func (e *Engine) signCRL(ctx context.Context, iss *issuance.Issuer, tmpl *smx509.RevocationList) ([]byte, error) {
	b, err := iss.NewCRL(crl.Scope{Number: tmpl.Number.Uint64(), ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate})
	if err != nil {
		return nil, errorf(issuanceCode(err), "CRL %v", err)
	}
	// The encoder takes entries in bytewise serial order, the store's.
	slices.SortFunc(tmpl.RevokedCertificateEntries, func(a, b smx509.RevocationListEntry) int {
		return bytes.Compare(a.SerialNumber.Bytes(), b.SerialNumber.Bytes())
	})
	for _, r := range tmpl.RevokedCertificateEntries {
		if err := b.Add(crl.Entry{Serial: r.SerialNumber.Bytes(), RevokedAt: r.RevocationTime, Reason: revocation.Reason(r.ReasonCode)}); err != nil {
			return nil, errorf(api.CodeInternal, "CRL %v", err)
		}
	}
	tok, err := iss.PrepareCRL(b)
	if err != nil {
		return nil, errorf(issuanceCode(err), "CRL %v", err)
	}
	out, err := e.hsmHealth.issue(ctx, iss, tok)
	switch {
	case errors.Is(err, errHSM):
		return nil, errorf(api.CodeHSMUnavailable, "sign CRL: %v", err)
	case err != nil:
		return nil, errorf(issuanceCode(err), "signed CRL: %v", err)
	}
	return out.DER, nil
}

// LatestCRL returns the last CRL signed for issuerID ("" for the active
// issuer).
func (e *Engine) LatestCRL(issuerID string) ([]byte, error) {
	iss, err := e.Issuer(issuerID)
	if err != nil {
		return nil, err
	}
	var der []byte
	err = e.view(func(tx *store.Tx) error {
		st, err := tx.CRLState(iss.ID())
		der = st.DER
		return err
	})
	if err != nil {
		return nil, errorf(api.CodeInternal, "read CRL state: %v", err)
	}
	if der == nil {
		return nil, errorf(api.CodeNotFound, "no CRL signed yet for %s", iss.ID())
	}
	return der, nil
}
