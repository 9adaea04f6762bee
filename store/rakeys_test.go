package store

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
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
	k1, _ := sm2.GenerateKey(rand.Reader)
	k2, _ := sm2.GenerateKey(rand.Reader)
	a1, a2, b, a3 := certFor(t, k1, 1), certFor(t, k1, 2), certFor(t, k2, 3), certFor(t, k1, 5)
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
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
			view(t, s, func(tx *Tx) error {
				return tx.CertificatesOfKey(c.DER, func(o *Certificate) error { got = append(got, o.Serial); return nil })
			})
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
		view(t, s, func(tx *Tx) error {
			if err := tx.CertificatesOfKey([]byte("not DER"), func(*Certificate) error { return nil }); err == nil {
				t.Error("the certificates of a DER that does not parse were listed")
			}
			return nil
		})

		// As written before the index: none, and no mark.
		s = e.reopenEdited(t, s, where, func(r records) error {
			return errors.Join(r.clear(tableKeys), r.delete(tableMeta, keyKeyIndexAtHead))
		})
		check(s)

		// An older signerd issues a certificate for k1 into the indexed
		// store: the certificate and its audit event, and no index entry.
		s = e.reopenEdited(t, s, where, func(r records) error {
			raw, _ := json.Marshal(a3)
			if err := r.put(tableCerts, a3.Serial, raw); err != nil {
				return err
			}
			return r.put(tableMeta, keyAuditHead, []byte(`{"seq":1,"hash":"AA=="}`))
		})
		if got := serialsOf(s, a1); !slices.EqualFunc(got, [][]byte{{1}, {2}, {5}}, slices.Equal) {
			t.Errorf("certificates of k1 after an older signerd issued one: %x, want 01, 02 and 05", got)
		}
	})
}

// TestRAReplayMark: a mark is per serial, starts at zero and only rises.
func TestRAReplayMark(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		update(t, s, func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{1}, t0) })
		update(t, s, func(tx *Tx) error { return tx.RaiseRAReplayMark([]byte{1}, t0.Add(-time.Hour)) })
		view(t, s, func(tx *Tx) error {
			if got, err := tx.RAReplayMark([]byte{1}); err != nil || !got.Equal(t0) {
				t.Errorf("mark %v (%v), want %v", got, err, t0)
			}
			if got, err := tx.RAReplayMark([]byte{2}); err != nil || !got.IsZero() {
				t.Errorf("another serial's mark %v (%v), want none", got, err)
			}
			return nil
		})
	})
}
