package engine

import (
	"crypto"
	"fmt"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/issuance"
	"signerd/revocation"
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
	_, d, err := o.keySPKI()
	if err != nil {
		return errorf(api.CodeInternal, "request %s: %v", o.id, err)
	}
	serial, err := tx.KeyCompromised(d)
	if err != nil {
		return errorf(storeCode(err), "request %s: %v", o.id, err)
	}
	if serial != nil {
		return errorf(api.CodeKeyCompromised, "the public key was revoked for keyCompromise (certificate %x); it is never certified again", serial)
	}
	return nil
}

// loadRevocations reads the revocation index at start: it returns the
// latest revocation or hold time (for the clock guard) and marks the key of
// every certificate revoked for keyCompromise as compromised, which makes
// the compromised-keys index whole even if the store was written by a
// signerd that did not keep it.
func loadRevocations(tx *store.Tx) (last time.Time, err error) {
	// The compromised-keys index is rebuilt only when a writer other than
	// this code may have left it behind (store.CompromisedKeysCurrent):
	// the rebuild reads the certificate of every keyCompromise
	// revocation, which on a database store is a round trip each.
	whole, err := tx.CompromisedKeysCurrent()
	if err != nil {
		return last, err
	}
	err = tx.AllRevoked(func(r store.RevokedEntry) error {
		if r.RevokedAt.After(last) {
			last = r.RevokedAt
		}
		if whole || r.Reason != revocation.KeyCompromise {
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
	if err == nil && !whole {
		tx.NoteCompromisedKeysWhole()
	}
	return last, err
}

// keyInUse is a key a request being signed is to certify, with the
// keyUsage its certificate gets.
type keyInUse struct {
	pub    crypto.PublicKey
	usage  smx509.KeyUsage
	serial []byte
}

// keysBeingSigned returns the keys of the requests recorded as signing:
// reserved by an earlier batch (or earlier in this one) and not yet
// recorded as issued or burned, so not yet in the key index. Each is read
// from the TBS the request recorded, the bytes the HSM signs.
func keysBeingSigned(tx *store.Tx, parsed *tbsKeys) ([]keyInUse, error) {
	// Every node's: a key another node is certifying for one use is as
	// much in use as one of this node's.
	rs, err := tx.InFlightOfEveryNode()
	if err != nil {
		return nil, err
	}
	out := make([]keyInUse, 0, len(rs))
	for _, r := range rs {
		k, err := parsed.of(r.TBS)
		if err != nil {
			return nil, fmt.Errorf("request %s: %w", r.ID, err)
		}
		out = append(out, keyInUse{pub: k.pub, usage: k.usage, serial: r.Serial})
	}
	parsed.keep(rs)
	return out, nil
}

// tbsKeys remembers the key and usage each TBS being signed certifies, by
// the TBS's bytes: a request stays signing over several batches, and each
// batch would otherwise parse every one again.
type tbsKeys struct {
	mu   sync.Mutex
	keys map[string]keyInUse
}

func (t *tbsKeys) of(tbs []byte) (keyInUse, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k, ok := t.keys[string(tbs)]; ok {
		return k, nil
	}
	// The key and its usage only: the TBS was linted whole before it was
	// recorded.
	pub, usage, err := issuance.ParseTBSKey(tbs)
	if err != nil {
		return keyInUse{}, err
	}
	k := keyInUse{pub: pub, usage: usage}
	if t.keys == nil {
		t.keys = map[string]keyInUse{}
	}
	t.keys[string(tbs)] = k
	return k, nil
}

// keep forgets every TBS but those of rs, the requests signing now.
func (t *tbsKeys) keep(rs []*store.Request) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.keys) <= len(rs) {
		return
	}
	signing := make(map[string]bool, len(rs))
	for _, r := range rs {
		signing[string(r.TBS)] = true
	}
	for tbs := range t.keys {
		if !signing[tbs] {
			delete(t.keys, tbs)
		}
	}
}

// keyUsedOtherwise refuses with key_reused a key that a recorded
// certificate (found through the key index), or a request in signing (of
// those given), certifies for another use than p's. Any other error
// (the store failing) has api.CodeInternal.
//
// reserve calls it in the transaction that records the request as
// signing, with every key being signed then: of two requests for one key
// with different uses, whichever is reserved second is refused, in the
// same batch or in another, however they race. Once the first is recorded
// its certificate is in the key index; once it is burned it certifies
// nothing.
func keyUsedOtherwise(tx *store.Tx, o *order, signing []keyInUse) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	k, ok := o.pub.(equaler)
	if !ok {
		return nil
	}
	spki, _, err := o.keySPKI()
	if err != nil {
		return errorf(api.CodeMalformedKey, "public key: %v", err)
	}
	want := o.profile.LintUsage().KeyUsage()
	var refused error
	err = tx.CertificatesWithKey(spki, func(c *store.Certificate) error {
		cert, err := smx509.ParseCertificate(c.DER)
		if err != nil {
			return fmt.Errorf("certificate %x: %w", c.Serial, err)
		}
		if cert.KeyUsage != want && k.Equal(cert.PublicKey) {
			refused = errorf(api.CodeKeyReused, "the key is certified for another use already (certificate %x, profile %s): a key serves one use only", c.Serial, c.Profile)
			return errStop
		}
		return nil
	})
	if refused != nil {
		return refused
	}
	if err != nil {
		return errorf(api.CodeInternal, "look up the certificates of the key: %v", err)
	}
	for _, s := range signing {
		if s.usage != want && k.Equal(s.pub) {
			return errorf(api.CodeKeyReused, "a certificate for the key for another use is being signed (serial %x): a key serves one use only", s.serial)
		}
	}
	return nil
}
