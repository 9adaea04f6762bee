package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// healthyStore records what the engine records, as it does: two issued
// certificates (the second revoked), one request still signing with a
// reserved serial, one burned serial, a CRL state, a statistic and the
// audit events of each, and returns the open store.
func healthyStore(t *testing.T) *Store {
	t.Helper()
	s := openTemp(t)
	now := time.Now().UTC().Truncate(time.Second)
	for i, serial := range []byte{1, 2} {
		c, _ := testCertificate(t, serial)
		c.RequestID = []string{"r-1", "r-2"}[i]
		c.NotAfter = now.Add(time.Hour)
		update(t, s, func(tx *Tx) error {
			if err := tx.ReserveSerial(c.Serial, c.RequestID); err != nil {
				return err
			}
			if err := tx.PutCertificate(c); err != nil {
				return err
			}
			if err := tx.SetSerialState(c.Serial, SerialIssued); err != nil {
				return err
			}
			if err := tx.PutRequest(&Request{ID: c.RequestID, State: RequestIssued, Serial: c.Serial}); err != nil {
				return err
			}
			if err := tx.Count(Month(now), "person-sign", StatIssued, 1); err != nil {
				return err
			}
			_, err := tx.Append(Event{Actor: System, Action: "certificate.issue", Object: HexSerial(c.Serial), Outcome: OutcomeOK})
			return err
		})
	}
	update(t, s, func(tx *Tx) error {
		c, err := tx.Certificate([]byte{2})
		if err != nil {
			return err
		}
		c.Status, c.RevokedAt, c.Reason = StatusRevoked, now, 1
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		if err := tx.PutCRLState(c.Issuer, CRLState{Next: 2}); err != nil {
			return err
		}
		if err := tx.ReserveSerial([]byte{3}, "r-3"); err != nil {
			return err
		}
		if err := tx.PutRequest(&Request{ID: "r-3", State: RequestSigning, Serial: []byte{3}}); err != nil {
			return err
		}
		if err := tx.ReserveSerial([]byte{4}, "r-4"); err != nil {
			return err
		}
		if err := tx.SetSerialState([]byte{4}, SerialBurned); err != nil {
			return err
		}
		if err := tx.PutRequest(&Request{ID: "r-4", State: RequestFailed, Serial: []byte{4}}); err != nil {
			return err
		}
		_, err = tx.Append(Event{Actor: System, Action: "certificate.revoke", Object: "02", Outcome: OutcomeOK})
		return err
	})
	return s
}

func fileSHA256(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(raw)
	return h[:]
}

// TestVerifyNamesEachKindOfDamage copies a healthy store with CopyTo,
// damages copies of the copy as someone editing the file would, one kind
// of damage each, and expects Verify to name the bucket, the record or
// event, and the problem; the undamaged copy has no finding, and Verify
// changes no byte of what it reads.
func TestVerifyNamesEachKindOfDamage(t *testing.T) {
	s := healthyStore(t)
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	snap, err := s.CopyTo(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(copyPath); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != snap.Size {
		t.Fatalf("copy: %v, %v; want mode 0600 and %d bytes", fi, err, snap.Size)
	}
	if !bytes.Equal(fileSHA256(t, copyPath), snap.SHA256) || snap.AuditHead != 3 {
		t.Fatalf("snapshot %+v does not describe the copy (want head 3 and the file's SHA-256)", snap)
	}
	if _, err := s.CopyTo(copyPath); err == nil {
		t.Fatal("CopyTo overwrote an existing file")
	}
	before := fileSHA256(t, copyPath)
	r, err := Verify(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Certificates != 2 || r.Serials != 4 || r.Requests != 4 || r.Revoked != 1 || r.AuditHead != 3 || r.Events != 3 {
		t.Fatalf("healthy copy: %+v", r)
	}
	if !bytes.Equal(fileSHA256(t, copyPath), before) {
		t.Fatal("Verify changed the file")
	}
	// Verify refuses a store held open for writing rather than wait.
	if _, err := Verify(s.Path()); err == nil || !strings.Contains(err.Error(), "verify a copy") {
		t.Fatalf("Verify of the open store: %v", err)
	}

	seqKey := func(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }
	cases := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		want   Finding // fields compared when set; Problem as a substring
	}{
		{"revoked certificate left out of the revoked index", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRevoked).Delete(revokedKey("ab", []byte{2}))
		}, Finding{Bucket: "revoked", Key: "serial 02", Problem: "not in the index"}},
		{"good certificate in the revoked index", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRevoked).Put(revokedKey("ab", []byte{1}), nil)
		}, Finding{Bucket: "revoked", Key: "serial 01", Problem: "is good but the index lists it"}},
		{"revoked index entry with another reason", func(tx *bolt.Tx) error {
			k := revokedKey("ab", []byte{2})
			v := bytes.Clone(tx.Bucket(bucketRevoked).Get(k))
			v[16] = 4
			return tx.Bucket(bucketRevoked).Put(k, v)
		}, Finding{Bucket: "revoked", Key: "serial 02", Problem: "differ from the certificate's"}},
		{"signing request missing from in-flight", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketInFlight).Delete([]byte("r-3"))
		}, Finding{Bucket: "in-flight", Key: `request "r-3"`, Problem: "signing but not in the index"}},
		{"issued request in in-flight", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketInFlight).Put([]byte("r-1"), nil)
		}, Finding{Bucket: "in-flight", Key: `request "r-1"`, Problem: "is issued but the index has it as signing"}},
		{"in-flight names no request", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketInFlight).Put([]byte("r-9"), nil)
		}, Finding{Bucket: "in-flight", Key: `request "r-9"`, Problem: "does not hold"}},
		{"certificate's serial never reserved", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketSerials).Delete([]byte{1})
		}, Finding{Bucket: "serials", Key: "serial 01", Problem: "never reserved"}},
		{"issued serial without a certificate", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketSerials).Put([]byte{9}, []byte(`{"request_id":"r-x","state":"issued"}`))
		}, Finding{Bucket: "serials", Key: "serial 09", Problem: "no certificate"}},
		{"key index entry removed", func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketCerts).Get([]byte{1})
			var cert Certificate
			if err := json.Unmarshal(c, &cert); err != nil {
				return err
			}
			k, ok := keyIndexEntry(&cert)
			if !ok {
				return errors.New("no public key in the certificate")
			}
			return tx.Bucket(bucketKeys).Delete(k)
		}, Finding{Bucket: "keys", Key: "serial 01", Problem: "not indexed"}},
		{"certificate record undecodable", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketCerts).Put([]byte{1}, []byte("{not json"))
		}, Finding{Bucket: "certificates", Key: "serial 01", Problem: "does not decode"}},
		{"audit event edited", func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			return b.Put(seqKey(2), bytes.Replace(b.Get(seqKey(2)), []byte(`"ok"`), []byte(`"failed"`), 1))
		}, Finding{Bucket: "audit", Seq: 3, Problem: "does not chain to event 2"}},
		{"last audit event removed", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAudit).Delete(seqKey(3))
		}, Finding{Bucket: "audit", Seq: 2, Problem: "head names event 3"}},
		{"bucket removed", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bucketCRL)
		}, Finding{Bucket: "crl", Problem: "missing"}},
		{"other schema version", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
		}, Finding{Bucket: "meta", Key: "schema", Problem: "schema version 2"}},
		{"not a signerd store", func(tx *bolt.Tx) error {
			return tx.DeleteBucket(bucketMeta)
		}, Finding{Bucket: "meta", Problem: "not a signerd store"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "damaged.db")
			raw, err := os.ReadFile(copyPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.damage); err != nil {
				t.Fatal(err)
			}
			db.Close()
			r, err := Verify(path)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, f := range r.Findings {
				if f.Bucket == tc.want.Bucket && (tc.want.Key == "" || f.Key == tc.want.Key) &&
					(tc.want.Seq == 0 || f.Seq == tc.want.Seq) && strings.Contains(f.Problem, tc.want.Problem) {
					found = true
				}
			}
			if !found || r.OK() {
				t.Fatalf("findings %v; want one like %v", r.Findings, tc.want)
			}
			t.Logf("%v", r.Findings)
		})
	}
}

// TestVerifyRefusesUnreadableFiles: a file that cannot be read as a store
// at all is an error naming why, never a crash (a truncated file would
// otherwise be read past its end), and a missing file is not created.
func TestVerifyRefusesUnreadableFiles(t *testing.T) {
	s := healthyStore(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "copy.db")
	if _, err := s.CopyTo(good); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	pages := bytes.Clone(raw)
	for i := 2 * 4096; i < len(pages); i++ {
		pages[i] = 0xff
	}
	cases := []struct {
		name    string
		content []byte // nil: no file
		want    string
	}{
		{"missing", nil, "no such file"},
		{"empty", []byte{}, "empty file"},
		{"truncated", raw[:len(raw)/2], "the file is truncated"},
		{"cut inside the last page", raw[:len(raw)-1], "the file is truncated"},
		{"pages overwritten", pages, "the file is damaged"},
		{"not bbolt", bytes.Repeat([]byte("signerd"), 2000), "invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			if tc.content != nil {
				if err := os.WriteFile(path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r, err := Verify(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify: %+v, %v; want an error saying %q", r, err, tc.want)
			}
			if tc.content == nil {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Fatalf("Verify created the missing file: %v", err)
				}
			}
		})
	}
}
