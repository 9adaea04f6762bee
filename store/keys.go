package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/smx509"
	bolt "go.etcd.io/bbolt"
)

// The key index finds every certificate issued for one public key, so that
// revoking any of them (a superseded one included) can stop the key from
// signing RA requests. Its entries are SHA-256(SubjectPublicKeyInfo, as
// re-encoded from the parsed key) followed by the serial, with no value.
// It is derived from the certificates: a store written before it existed
// gets it built on open.
var bucketKeys = []byte("keys")

// bucketRAReplay holds each RA certificate's replay mark (RAReplayMark),
// made on first use.
var bucketRAReplay = []byte("ra-replay")

// keyIndexHead is a copy of the audit log's head as of the last
// transaction this code wrote. Every change to the store comes with an
// audit event, so a head that differs from it at open means another
// program (an older signerd) wrote certificates the index may lack.
var keyIndexHead = []byte("key-index-head")

// ensureKeyIndex builds the key index of a store that has none, or whose
// audit head moved on without it, from every certificate.
func ensureKeyIndex(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if tx.Bucket(bucketKeys) != nil && bytes.Equal(meta.Get(keyAuditHead), meta.Get(keyIndexHead)) {
		return nil
	}
	if tx.Bucket(bucketKeys) != nil {
		if err := tx.DeleteBucket(bucketKeys); err != nil {
			return err
		}
	}
	keys, err := tx.CreateBucket(bucketKeys)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketCerts).ForEach(func(serial, raw []byte) error {
		var c Certificate
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("key index: certificate %x: %w", serial, err)
		}
		return indexKey(keys, &c)
	}); err != nil {
		return err
	}
	return noteKeyIndexed(tx)
}

// noteKeyIndexed records that the key index is complete up to the audit
// head; Update calls it at the end of each transaction.
func noteKeyIndexed(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	head := meta.Get(keyAuditHead)
	if bytes.Equal(head, meta.Get(keyIndexHead)) {
		return nil
	}
	return meta.Put(keyIndexHead, bytes.Clone(head))
}

// keyOf identifies the public key certified by der; ok is false for DER
// that does not parse (it then certifies no key anyone can sign with).
func keyOf(der []byte) (id []byte, ok bool) {
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, false
	}
	spki, err := smx509.MarshalPKIXPublicKey(c.PublicKey)
	if err != nil {
		return nil, false
	}
	sum := sha256.Sum256(spki)
	return sum[:], true
}

func indexKey(keys *bolt.Bucket, c *Certificate) error {
	id, ok := keyOf(c.DER)
	if !ok {
		return nil
	}
	return keys.Put(append(id, c.Serial...), nil)
}

// CertificatesOfKey calls fn for every certificate that certifies the same
// public key as der (itself included).
func (t *Tx) CertificatesOfKey(der []byte, fn func(*Certificate) error) error {
	id, ok := keyOf(der)
	if !ok {
		return fmt.Errorf("certificate does not parse")
	}
	cur := t.bucket(bucketKeys).Cursor()
	for k, _ := cur.Seek(id); k != nil && bytes.HasPrefix(k, id); k, _ = cur.Next() {
		c, err := t.Certificate(k[len(id):])
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// RAReplayMark is, for the RA certificate serial, a time at or before
// which no request it signed may be accepted, because an earlier run of
// signerd may have accepted it already; zero if never set.
func (t *Tx) RAReplayMark(serial []byte) (time.Time, error) {
	b := t.bucket(bucketRAReplay)
	if b == nil {
		return time.Time{}, nil
	}
	raw := b.Get(serial)
	if raw == nil {
		return time.Time{}, nil
	}
	var ts time.Time
	if err := ts.UnmarshalText(raw); err != nil {
		return time.Time{}, fmt.Errorf("read RA replay mark of %x: %w", serial, err)
	}
	return ts, nil
}

// RaiseRAReplayMark raises serial's RA replay mark to ts (never lowers it).
func (t *Tx) RaiseRAReplayMark(serial []byte, ts time.Time) error {
	last, err := t.RAReplayMark(serial)
	if err != nil {
		return err
	}
	if !ts.After(last) {
		return nil
	}
	b, err := t.tx.CreateBucketIfNotExists(bucketRAReplay)
	if err != nil {
		return err
	}
	raw, _ := ts.UTC().MarshalText()
	return b.Put(serial, raw)
}
