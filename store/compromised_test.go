package store

import (
	"bytes"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestCompromisedKeysIndex: the first certificate marking a key stays.
func TestCompromisedKeysIndex(t *testing.T) {
	key := []byte("key digest")
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		update(t, s, func(tx *Tx) error {
			if got, err := tx.KeyCompromised(key); err != nil || got != nil {
				t.Errorf("an unmarked key: compromised by %x, %v", got, err)
			}
			if err := tx.MarkKeyCompromised(key, []byte{1}); err != nil {
				return err
			}
			return tx.MarkKeyCompromised(key, []byte{2})
		})
		update(t, s, func(tx *Tx) error { return tx.MarkKeyCompromised(key, []byte{3}) })
		s = e.reopen(t, s, where)
		view(t, s, func(tx *Tx) error {
			if got, err := tx.KeyCompromised(key); err != nil || !bytes.Equal(got, []byte{1}) {
				t.Errorf("key marked by %x (%v), want the first certificate 01", got, err)
			}
			if got, err := tx.KeyCompromised([]byte("other key")); err != nil || got != nil {
				t.Errorf("another key: compromised by %x, %v", got, err)
			}
			return nil
		})
	})
}

// TestBoltCompromisedKeysBucketMissing: a version 1 file written before
// the index existed opens with an empty one.
func TestBoltCompromisedKeysBucketMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signerd.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("key digest")
	update(t, s, func(tx *Tx) error { return tx.MarkKeyCompromised(key, []byte{1}) })
	s.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketCompromisedKeys) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatalf("open a store without the compromised-keys index: %v", err)
	}
	defer s.Close()
	view(t, s, func(tx *Tx) error {
		if got, err := tx.KeyCompromised(key); err != nil || got != nil {
			t.Errorf("a recreated index: compromised by %x, %v", got, err)
		}
		return nil
	})
	update(t, s, func(tx *Tx) error { return tx.MarkKeyCompromised(key, []byte{2}) })
}

// TestAllRevokedSpansIssuers lists the revoked and held certificates of
// every issuer, in issuer then serial order.
func TestAllRevokedSpansIssuers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		update(t, s, func(tx *Tx) error {
			for i, c := range []struct {
				issuer string
				status CertStatus
			}{{"b", StatusRevoked}, {"a", StatusOnHold}, {"b", StatusGood}, {"c", StatusRevoked}, {"a", StatusRevoked}} {
				if err := tx.PutCertificate(&Certificate{Serial: []byte{byte(i + 1)}, DER: []byte{1}, Issuer: c.issuer, Status: c.status}); err != nil {
					return err
				}
			}
			return nil
		})
		var got []byte
		view(t, s, func(tx *Tx) error {
			return tx.AllRevoked(func(e RevokedEntry) error { got = append(got, e.Serial...); return nil })
		})
		if !bytes.Equal(got, []byte{2, 5, 1, 4}) {
			t.Errorf("all revoked: %v, want [2 5 1 4]", got)
		}
	})
}

// TestCompromisedKeysMark: the compromised-keys index is known whole once
// the engine says it made it so, stays so through this code's writes, and
// is no longer once a writer that does not keep it (an older signerd)
// moves the audit log on.
func TestCompromisedKeysMark(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		current := func() bool {
			t.Helper()
			var ok bool
			view(t, s, func(tx *Tx) (err error) { ok, err = tx.CompromisedKeysCurrent(); return err })
			return ok
		}
		appendEvent := func(tx *Tx) error { _, err := tx.Append(Event{Action: "x", Outcome: OutcomeOK}); return err }
		if current() {
			t.Fatal("a new store's index is known whole before anyone made it so")
		}
		update(t, s, appendEvent)
		if current() {
			t.Fatal("known whole after a write that did not say so")
		}
		update(t, s, func(tx *Tx) error { tx.NoteCompromisedKeysWhole(); return nil })
		update(t, s, appendEvent)
		if !current() {
			t.Fatal("not known whole after this code's write")
		}
		// An older writer: the log moves, the mark does not.
		if err := s.b.update(func(r records) error { return appendEvent(&Tx{r: r}) }); err != nil {
			t.Fatal(err)
		}
		if current() {
			t.Error("known whole after a writer that does not keep the index")
		}
	})
}
