package engine

import (
	"crypto"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/store"
)

// keyDigest names a public key: SM3 over its SubjectPublicKeyInfo as
// signerd encodes it, whatever encoding the CSR or certificate carried.
func keyDigest(pub crypto.PublicKey) ([]byte, error) {
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	h := sm3.Sum(der)
	return h[:], nil
}

// certKeyDigest is the keyDigest of the key c certifies.
func certKeyDigest(c *store.Certificate) ([]byte, error) {
	x, err := smx509.ParseCertificate(c.DER)
	if err != nil {
		return nil, fmt.Errorf("certificate %x: %w", c.Serial, err)
	}
	return keyDigest(x.PublicKey)
}

// checkKeyUsable refuses o if its key was revoked for keyCompromise: no
// certificate for a compromised key may be valid, so none is issued.
func checkKeyUsable(tx *store.Tx, o *order) error {
	d, err := keyDigest(o.pub)
	if err != nil {
		return errorf(CodeInternal, "request %s: %v", o.id, err)
	}
	if serial := tx.KeyCompromised(d); serial != nil {
		return errorf(CodeKeyCompromised, "the public key was revoked for keyCompromise (certificate %x); it is never certified again", serial)
	}
	return nil
}

// loadRevocations reads the revocation index at start: it returns the
// latest revocation or hold time (for the clock guard) and marks the key of
// every certificate revoked for keyCompromise as compromised, which makes
// the compromised-keys index whole even if the store was written by a
// signerd that did not keep it.
func loadRevocations(tx *store.Tx) (last time.Time, err error) {
	err = tx.AllRevoked(func(r store.RevokedEntry) error {
		if r.RevokedAt.After(last) {
			last = r.RevokedAt
		}
		if r.Reason != reasonKeyCompromise {
			return nil
		}
		c, err := tx.Certificate(r.Serial)
		if err != nil {
			return err
		}
		d, err := certKeyDigest(c)
		if err != nil {
			return err
		}
		return tx.MarkKeyCompromised(d, r.Serial)
	})
	return last, err
}
