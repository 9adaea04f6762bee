package store

import (
	"crypto/rand"
	"encoding/json"
	"math/big"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	bolt "go.etcd.io/bbolt"
)

// certFor returns a certificate record with serial for key's public key.
func certFor(t *testing.T, key *sm2.PrivateKey, serial byte) *Certificate {
	t.Helper()
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(int64(serial)), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &Certificate{Serial: []byte{serial}, DER: der, Issuer: "i", Status: StatusGood}
}

// TestCertificatesOfKey: the key index finds every certificate of a key,
// in a store written by this code, in one written before the index existed
// and in one an older signerd wrote to after (rebuilt when such a store is
// opened).
func TestCertificatesOfKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signerd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := sm2.GenerateKey(rand.Reader)
	k2, _ := sm2.GenerateKey(rand.Reader)
	a1, a2, b := certFor(t, k1, 1), certFor(t, k1, 2), certFor(t, k2, 3)
	update(t, s, func(tx *Tx) error {
		for _, c := range []*Certificate{a1, a2, b, {Serial: []byte{4}, DER: []byte("not DER"), Issuer: "i"}} {
			if err := tx.PutCertificate(c); err != nil {
				return err
			}
		}
		return nil
	})
	serialsOf := func(s *Store, c *Certificate) [][]byte {
		t.Helper()
		var got [][]byte
		if err := s.View(func(tx *Tx) error {
			return tx.CertificatesOfKey(c.DER, func(o *Certificate) error { got = append(got, o.Serial); return nil })
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	check := func(s *Store) {
		t.Helper()
		if got := serialsOf(s, a2); !slices.EqualFunc(got, [][]byte{{1}, {2}}, slices.Equal) {
			t.Errorf("certificates of k1: %x, want 01 and 02", got)
		}
		if got := serialsOf(s, b); !slices.EqualFunc(got, [][]byte{{3}}, slices.Equal) {
			t.Errorf("certificates of k2: %x, want 03", got)
		}
	}
	check(s)
	s.Close()

	// As written before the index: no keys bucket.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketKeys) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	check(s)
	s.Close()

	// An older signerd issues a certificate for k1 into the indexed store:
	// the certificate and its audit event, and no index entry.
	a3 := certFor(t, k1, 5)
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		raw, _ := json.Marshal(a3)
		if err := tx.Bucket(bucketCerts).Put(a3.Serial, raw); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyAuditHead, []byte(`{"seq":1,"hash":"AA=="}`))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := serialsOf(s, a1); !slices.EqualFunc(got, [][]byte{{1}, {2}, {5}}, slices.Equal) {
		t.Errorf("certificates of k1 after an older signerd issued one: %x, want 01, 02 and 05", got)
	}
}

// TestRAReplayMark: a mark is per serial, starts at zero and only rises.
func TestRAReplayMark(t *testing.T) {
	s := openTemp(t)
	t0 := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	update(t, s, func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{1}, t0) })
	update(t, s, func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{1}, t0.Add(-time.Hour)) })
	s.View(func(tx *Tx) error {
		if got, err := tx.RAReplayMark([]byte{1}); err != nil || !got.Equal(t0) {
			t.Errorf("mark %v (%v), want %v", got, err, t0)
		}
		if got, err := tx.RAReplayMark([]byte{2}); err != nil || !got.IsZero() {
			t.Errorf("another serial's mark %v (%v), want none", got, err)
		}
		return nil
	})
}
