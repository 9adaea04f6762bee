package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testCertificate is a self-signed certificate for a new key: its DER and
// the key's SubjectPublicKeyInfo.
func testCertificate(t *testing.T, serial byte) (*Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(serial)), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &Certificate{Serial: []byte{serial}, DER: der, Issuer: "ab", Status: StatusGood}, spki
}

func withKey(t *testing.T, s *Store, spki []byte) [][]byte {
	t.Helper()
	var serials [][]byte
	if err := s.View(func(tx *Tx) error {
		return tx.CertificatesWithKey(spki, func(c *Certificate) error {
			serials = append(serials, c.Serial)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return serials
}

func reopen(t *testing.T, s *Store, raw func(*bolt.Tx) error) *Store {
	t.Helper()
	path := s.Path()
	s.Close()
	if raw != nil {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(raw); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKeyIndexFindsCertificatesOfAKey: certificates are found by their
// key, also in a store written before the index existed and in one an
// older signerd (which does not keep the index) wrote to since.
func TestKeyIndexFindsCertificatesOfAKey(t *testing.T) {
	s := openTemp(t)
	a, keyA := testCertificate(t, 1)
	renewal := &Certificate{Serial: []byte{2}, DER: a.DER, Issuer: "ab", Status: StatusGood}
	b, keyB := testCertificate(t, 3)
	update(t, s, func(tx *Tx) error {
		for _, c := range []*Certificate{a, renewal, {Serial: []byte{9}, DER: []byte("not a certificate"), Issuer: "ab"}} {
			if err := tx.PutCertificate(c); err != nil {
				return err
			}
		}
		_, err := tx.Append(Event{Action: "certificate.issue"})
		return err
	})
	// A change of state is no new entry.
	a.Status = StatusRevoked
	update(t, s, func(tx *Tx) error { return tx.PutCertificate(a) })
	if got := withKey(t, s, keyA); !slices.EqualFunc(got, [][]byte{{1}, {2}}, slices.Equal) {
		t.Fatalf("certificates of key A: %x, want 01 02", got)
	}
	if got := withKey(t, s, keyB); len(got) != 0 {
		t.Fatalf("certificates of key B before it is certified: %x", got)
	}

	// A store from before the index: no bucket, no mark.
	s = reopen(t, s, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketKeys); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Delete(keyKeyIndexAtHead)
	})
	if got := withKey(t, s, keyA); len(got) != 2 {
		t.Fatalf("after opening a store without the index: %x", got)
	}

	// An older signerd records certificate B with its event and no index
	// entry.
	s = reopen(t, s, func(tx *bolt.Tx) error {
		raw, _ := json.Marshal(b)
		if err := tx.Bucket(bucketCerts).Put(b.Serial, raw); err != nil {
			return err
		}
		_, err := (&Tx{boltRecords{tx}}).Append(Event{Action: "certificate.issue"})
		return err
	})
	if got := withKey(t, s, keyB); !slices.EqualFunc(got, [][]byte{{3}}, slices.Equal) {
		t.Fatalf("certificate an older signerd wrote: %x, want 03", got)
	}

	// A current index is not rebuilt at each open: an entry removed behind
	// the store's back stays removed.
	s = reopen(t, s, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).Delete(mustIndexEntry(t, b))
	})
	if got := withKey(t, s, keyB); len(got) != 0 {
		t.Fatalf("the index was rebuilt although current: %x", got)
	}
}

func mustIndexEntry(t *testing.T, c *Certificate) []byte {
	t.Helper()
	k, ok := keyIndexEntry(c)
	if !ok {
		t.Fatal("no public key in the certificate")
	}
	return k
}
