package store

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "signerd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func update(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, s *Store, fn func(*Tx) error) {
	t.Helper()
	if err := s.View(fn); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesOtherSchemas(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(*bolt.Tx) error
		want    string
	}{
		{"newer version", func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket(bucketMeta)
			return b.Put(keySchema, []byte("2"))
		}, "schema version 2"},
		{"garbage version", func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucket(bucketMeta)
			return b.Put(keySchema, []byte("x"))
		}, "unreadable schema version"},
		{"foreign bbolt file", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("something-else"))
			return err
		}, "not a signerd store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tt.prepare); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = Open(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestOpenTwiceFailsFast(t *testing.T) {
	s := openTemp(t)
	_, err := Open(s.Path())
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open = %v, want 'in use'", err)
	}
}

func TestSerialsAreNeverReused(t *testing.T) {
	s := openTemp(t)
	serial := []byte{0x42, 1, 2, 3}
	update(t, s, func(tx *Tx) error { return tx.ReserveSerial(serial, "req-1") })
	update(t, s, func(tx *Tx) error { return tx.SetSerialState(serial, SerialBurned) })
	err := s.Update(func(tx *Tx) error { return tx.ReserveSerial(serial, "req-2") })
	if !errors.Is(err, ErrSerialUsed) {
		t.Fatalf("reserving a burned serial: %v, want ErrSerialUsed", err)
	}
	err = s.Update(func(tx *Tx) error { return tx.SetSerialState(serial, SerialIssued) })
	if err == nil {
		t.Fatal("a burned serial was moved to issued")
	}
}

func TestCertificateDERIsImmutable(t *testing.T) {
	s := openTemp(t)
	c := &Certificate{Serial: []byte{1}, DER: []byte("cert"), Issuer: "ab", Status: StatusGood}
	update(t, s, func(tx *Tx) error { return tx.PutCertificate(c) })
	changed := *c
	changed.DER = []byte("other")
	if err := s.Update(func(tx *Tx) error { return tx.PutCertificate(&changed) }); !errors.Is(err, ErrImmutable) {
		t.Fatalf("overwriting DER: %v, want ErrImmutable", err)
	}
	c.Status = StatusRevoked
	update(t, s, func(tx *Tx) error { return tx.PutCertificate(c) })
}

func TestRevokedIndexFollowsStatus(t *testing.T) {
	s := openTemp(t)
	put := func(serial byte, issuer string, status CertStatus) {
		t.Helper()
		update(t, s, func(tx *Tx) error {
			return tx.PutCertificate(&Certificate{Serial: []byte{serial}, DER: []byte{serial}, Issuer: issuer, Status: status})
		})
	}
	listed := func(issuer string) []byte {
		t.Helper()
		var got []byte
		s.View(func(tx *Tx) error {
			return tx.Revoked(issuer, func(e RevokedEntry) error { got = append(got, e.Serial...); return nil })
		})
		return got
	}
	put(1, "a", StatusGood)
	put(2, "a", StatusRevoked)
	put(3, "a", StatusOnHold)
	put(4, "b", StatusRevoked)
	put(5, "a", StatusSuperseded)
	if got := listed("a"); !bytes.Equal(got, []byte{2, 3}) {
		t.Fatalf("issuer a lists %v, want [2 3]", got)
	}
	put(3, "a", StatusGood) // released from hold
	if got := listed("a"); !bytes.Equal(got, []byte{2}) {
		t.Fatalf("after restore issuer a lists %v, want [2]", got)
	}
	if got := listed("b"); !bytes.Equal(got, []byte{4}) {
		t.Fatalf("issuer b lists %v, want [4]", got)
	}
}

func TestRevokedEntriesCarryWhatTheCRLLists(t *testing.T) {
	s := openTemp(t)
	at := time.Date(2026, 11, 3, 4, 5, 6, 7, time.UTC)
	end := at.AddDate(1, 0, 0)
	c := &Certificate{Serial: []byte{7}, DER: []byte{7}, Issuer: "a", Status: StatusRevoked, RevokedAt: at, Reason: 4, NotAfter: end}
	legacy := &Certificate{Serial: []byte{8}, DER: []byte{8}, Issuer: "a", Status: StatusOnHold, RevokedAt: end, Reason: 6, NotAfter: at}
	update(t, s, func(tx *Tx) error {
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
		if err := tx.PutCertificate(legacy); err != nil {
			return err
		}
		// An index entry without a value, as stores before this layout
		// hold them: read from the certificate.
		return tx.r.put(tableRevoked, revokedKey("a", legacy.Serial), nil)
	})
	var got []RevokedEntry
	s.View(func(tx *Tx) error {
		return tx.Revoked("a", func(e RevokedEntry) error { got = append(got, e); return nil })
	})
	want := []RevokedEntry{{Serial: []byte{7}, RevokedAt: at, Reason: 4, NotAfter: end}, {Serial: []byte{8}, RevokedAt: end, Reason: 6, NotAfter: at}}
	if len(got) != 2 {
		t.Fatalf("entries %+v", got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if !bytes.Equal(g.Serial, w.Serial) || !g.RevokedAt.Equal(w.RevokedAt) || g.Reason != w.Reason || !g.NotAfter.Equal(w.NotAfter) {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestInFlightFollowsRequestState(t *testing.T) {
	s := openTemp(t)
	r := &Request{ID: "r1", State: RequestSigning, Serial: []byte{9}}
	update(t, s, func(tx *Tx) error { return tx.PutRequest(r) })
	var n int
	s.View(func(tx *Tx) error { got, err := tx.InFlight(); n = len(got); return err })
	if n != 1 {
		t.Fatalf("%d in flight, want 1", n)
	}
	r.State = RequestIssued
	update(t, s, func(tx *Tx) error { return tx.PutRequest(r) })
	s.View(func(tx *Tx) error { got, err := tx.InFlight(); n = len(got); return err })
	if n != 0 {
		t.Fatalf("%d in flight after issue, want 0", n)
	}
	s.View(func(tx *Tx) error {
		got, err := tx.Request("r1")
		if err != nil || got.State != RequestIssued {
			t.Fatalf("request r1 = %+v, %v", got, err)
		}
		return nil
	})
}

func TestAuditChainDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(b *bolt.Bucket) error
		want   string
	}{
		{"edit", func(b *bolt.Bucket) error {
			v := bytes.Replace(b.Get(seqKey(2)), []byte(`"ok"`), []byte(`"no"`), 1)
			return b.Put(seqKey(2), v)
		}, "event 3: does not chain"},
		{"delete middle", func(b *bolt.Bucket) error { return b.Delete(seqKey(2)) }, "event 3: found where 2 belongs"},
		{"delete last", func(b *bolt.Bucket) error { return b.Delete(seqKey(3)) }, "ends at event 2 but its head names event 3"},
		{"swap", func(b *bolt.Bucket) error {
			one, two := append([]byte(nil), b.Get(seqKey(1))...), append([]byte(nil), b.Get(seqKey(2))...)
			b.Put(seqKey(1), two)
			return b.Put(seqKey(2), one)
		}, "event 2: found where 1 belongs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t)
			for _, obj := range []string{"a", "b", "c"} {
				update(t, s, func(tx *Tx) error {
					_, err := tx.Append(Event{Actor: System, Action: "test", Object: obj, Outcome: OutcomeOK})
					return err
				})
			}
			if err := s.View(func(tx *Tx) error { return tx.VerifyAuditChain() }); err != nil {
				t.Fatalf("untouched chain: %v", err)
			}
			if err := s.bolt.db.Update(func(tx *bolt.Tx) error { return tt.tamper(tx.Bucket(bucketAudit)) }); err != nil {
				t.Fatal(err)
			}
			err := s.View(func(tx *Tx) error { return tx.VerifyAuditChain() })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("VerifyAuditChain = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAuditEventGoesWithItsChange(t *testing.T) {
	s := openTemp(t)
	err := s.Update(func(tx *Tx) error {
		if _, err := tx.Append(Event{Actor: System, Action: "reserve", Outcome: OutcomeOK}); err != nil {
			return err
		}
		if err := tx.ReserveSerial([]byte{7}, "r"); err != nil {
			return err
		}
		return errors.New("abort")
	})
	if err == nil {
		t.Fatal("aborted update succeeded")
	}
	s.View(func(tx *Tx) error {
		n := 0
		tx.Events(1, func(Event, []byte) error { n++; return nil })
		if _, err := tx.Serial([]byte{7}); !errors.Is(err, ErrNotFound) || n != 0 {
			t.Fatalf("aborted transaction left %d events, serial err %v", n, err)
		}
		return nil
	})
}

func TestStatisticsAndClock(t *testing.T) {
	s := openTemp(t)
	nov := time.Date(2026, 11, 30, 17, 0, 0, 0, time.UTC) // 01:00 on 1 December in Beijing
	if Month(nov) != "2026-12" {
		t.Fatalf("Month(%v) = %s, want 2026-12", nov, Month(nov))
	}
	update(t, s, func(tx *Tx) error {
		tx.Count("2026-12", "person-sign", StatIssued, 3)
		tx.Count("2026-12", "person-sign", StatIssued, 2)
		tx.Count("2026-12", "device-sign", StatRevoked, 1)
		tx.Count("2027-01", "device-sign", StatRevoked, 1)
		if err := tx.NoteSigningTime(nov); err != nil {
			return err
		}
		return tx.NoteSigningTime(nov.Add(-time.Hour)) // never lowers
	})
	s.View(func(tx *Tx) error {
		st, err := tx.Statistics("2026-12")
		if err != nil {
			t.Fatal(err)
		}
		if st["person-sign"][StatIssued] != 5 || st["device-sign"][StatRevoked] != 1 || len(st) != 2 {
			t.Fatalf("statistics = %v", st)
		}
		last, _ := tx.LastSigningTime()
		if !last.Equal(nov) {
			t.Fatalf("last signing time %v, want %v", last, nov)
		}
		return nil
	})
}

// TestOpenRefusesAStoreMissingABucket: a store whose file was edited so
// that one of its record buckets is gone is refused at open, naming the
// bucket, instead of failing (or crashing) on first use.
func TestOpenRefusesAStoreMissingABucket(t *testing.T) {
	for _, name := range []string{"certificates", "serials", "requests", "in-flight", "revoked", "crl", "statistics", "audit"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.db")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(name)) }); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("a store without bucket %q opened", name)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("open: %v, want the missing bucket named", err)
			}
		})
	}
}
