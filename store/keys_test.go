package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"path/filepath"
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

// reopenEdited closes s, edits its records behind its back (engine.edit)
// and opens it again, as signerd starting on a store an older signerd or
// an operator wrote to.
func (e engine) reopenEdited(t *testing.T, s *Store, where string, fn func(r records) error) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e.edit(t, where, fn)
	return e.open(t, where)
}

// TestKeyIndexFindsCertificatesOfAKey: certificates are found by their
// key, also in a store written before the index existed and in one an
// older signerd (which does not keep the index) wrote to since.
func TestKeyIndexFindsCertificatesOfAKey(t *testing.T) {
	certA, keyA := testCertificate(t, 1)
	b, keyB := testCertificate(t, 3)
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		a := *certA
		renewal := &Certificate{Serial: []byte{2}, DER: a.DER, Issuer: "ab", Status: StatusGood}
		update(t, s, func(tx *Tx) error {
			for _, c := range []*Certificate{&a, renewal, {Serial: []byte{9}, DER: []byte("not a certificate"), Issuer: "ab"}} {
				if err := tx.PutCertificate(c); err != nil {
					return err
				}
			}
			_, err := tx.Append(Event{Action: "certificate.issue"})
			return err
		})
		// A change of state is no new entry.
		a.Status = StatusRevoked
		update(t, s, func(tx *Tx) error { return tx.PutCertificate(&a) })
		if got := withKey(t, s, keyA); !slices.EqualFunc(got, [][]byte{{1}, {2}}, slices.Equal) {
			t.Fatalf("certificates of key A: %x, want 01 02", got)
		}
		if got := withKey(t, s, keyB); len(got) != 0 {
			t.Fatalf("certificates of key B before it is certified: %x", got)
		}

		// A store from before the index: no entries, no mark.
		s = e.reopenEdited(t, s, where, func(r records) error {
			if err := r.clear(tableKeys); err != nil {
				return err
			}
			return r.delete(tableMeta, keyKeyIndexAtHead)
		})
		if got := withKey(t, s, keyA); len(got) != 2 {
			t.Fatalf("after opening a store without the index: %x", got)
		}

		// An older signerd records certificate B with its event and no
		// index entry.
		s = e.reopenEdited(t, s, where, func(r records) error {
			raw, _ := json.Marshal(b)
			if err := r.put(tableCerts, b.Serial, raw); err != nil {
				return err
			}
			_, err := (&Tx{r: r}).Append(Event{Action: "certificate.issue"})
			return err
		})
		if got := withKey(t, s, keyB); !slices.EqualFunc(got, [][]byte{{3}}, slices.Equal) {
			t.Fatalf("certificate an older signerd wrote: %x, want 03", got)
		}

		// A current index is not rebuilt at each open: an entry removed
		// behind the store's back stays removed.
		s = e.reopenEdited(t, s, where, func(r records) error {
			return r.delete(tableKeys, mustIndexEntry(t, b))
		})
		if got := withKey(t, s, keyB); len(got) != 0 {
			t.Fatalf("the index was rebuilt although current: %x", got)
		}
	})
}

// TestBoltKeyIndexBucketMissing: a file without the key index's bucket,
// whatever its mark says, has the index rebuilt at open.
func TestBoltKeyIndexBucketMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signerd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a, keyA := testCertificate(t, 1)
	update(t, s, func(tx *Tx) error { return tx.PutCertificate(a) })
	s.Close()
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
	defer s.Close()
	if got := withKey(t, s, keyA); !slices.EqualFunc(got, [][]byte{{1}}, slices.Equal) {
		t.Fatalf("certificates of the key after the index's bucket was removed: %x, want 01", got)
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
