package engine

import (
	"encoding/asn1"
	"fmt"
	"time"

	"signerd/store"
)

// RACertificateEKU is id-kp-cmcRA (RFC 6402 §2.10, 1.3.6.1.5.5.7.3.28), the
// extended key usage of a CMC registration authority. The ra-sign profile
// carries it, and signerd accepts RA request signatures only from
// certificates that do.
var RACertificateEKU = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28}

// SigningRecord returns serial's certificate and every other certificate
// recorded for the same public key, so a caller can refuse a key once any
// certificate for it is revoked or on hold. signerd's own certificates
// (the audit key's) are store.ErrNotFound, as a serial never issued, so
// that a request signed in their name learns nothing of them.
func (e *Engine) SigningRecord(serial []byte) (*store.Certificate, []*store.Certificate, error) {
	var (
		c    *store.Certificate
		same []*store.Certificate
	)
	err := e.view(func(tx *store.Tx) error {
		var err error
		if c, err = tx.Certificate(serial); err != nil {
			return err
		}
		if isOwnCertificate(c) {
			return store.ErrNotFound
		}
		return tx.CertificatesOfKey(c.DER, func(o *store.Certificate) error {
			same = append(same, o)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %x and those of its key: %w", serial, err)
	}
	return c, same, nil
}

// RAReplayMark is the time at or before which no request signed with the
// RA certificate serial may be accepted (store.Tx.RAReplayMark).
func (e *Engine) RAReplayMark(serial []byte) (time.Time, error) {
	var t time.Time
	err := e.view(func(tx *store.Tx) error {
		var err error
		t, err = tx.RAReplayMark(serial)
		return err
	})
	return t, err
}

// RaiseRAReplayMark durably raises serial's RA replay mark to t.
func (e *Engine) RaiseRAReplayMark(serial []byte, t time.Time) error {
	return e.store.Update(func(tx *store.Tx) error { return tx.RaiseRAReplayMark(serial, t) })
}

// SharedStore reports whether the store may be shared by several nodes
// (it was opened with a node name), whose replay memories are each their
// own: every signed request must then be claimed in the store
// (ClaimRANonce).
func (e *Engine) SharedStore() bool { return e.store.Node() != "" }

// ClaimRANonce claims the request the RA certificate serial signed with
// nonce, dated date, for this node, across every node on the store; fresh
// is false if any node claimed it before (store.Store.ClaimRANonce).
func (e *Engine) ClaimRANonce(serial []byte, nonce string, date time.Time) (fresh bool, err error) {
	fresh, err = e.store.ClaimRANonce(serial, nonce, date)
	if storeFailed(err) {
		e.storeHealth.note(err)
	}
	return fresh, err
}

// ExpireRANonceClaims deletes up to limit RA nonce claims dated before
// before (store.Store.ExpireRANonceClaims).
func (e *Engine) ExpireRANonceClaims(before time.Time, limit int) (int, error) {
	return e.store.ExpireRANonceClaims(before, limit)
}
