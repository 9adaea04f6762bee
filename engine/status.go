package engine

import (
	"errors"
	"signerd/api"
	"signerd/issuance"
	"signerd/store"
	"time"
)

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
