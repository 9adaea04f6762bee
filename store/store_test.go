package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTemp is a new bbolt store, for the tests of the file itself.
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

// TestOpenChecksTheSchemaVersion: a store of a newer schema version is
// refused at open, naming its version, and nothing of it is lost: back at
// this version it opens with its records.
func TestOpenChecksTheSchemaVersion(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		update(t, s, func(tx *Tx) error { return tx.ReserveSerial([]byte{1}, "r") })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		e.writeSchemaVersion(t, where, e.version+1)
		refused, err := e.openAt(where)
		if err == nil {
			refused.Close()
			t.Fatal("a store of a newer schema version opened")
		}
		if want := fmt.Sprintf("schema version %d", e.version+1); !strings.Contains(err.Error(), want) {
			t.Errorf("open: %v; want it refused naming %q", err, want)
		}
		e.writeSchemaVersion(t, where, e.version)
		s = e.open(t, where)
		view(t, s, func(tx *Tx) error { _, err := tx.Serial([]byte{1}); return err })
	})
}

// TestSecondOpenIsRefused: one signerd at a time has a store open. A
// second open of the same file or database fails at once, saying it is in
// use, and leaves the first working; closed, the store opens again.
func TestSecondOpenIsRefused(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		first := e.open(t, where)
		second, err := e.openAt(where)
		if err == nil {
			second.Close()
			t.Fatal("a second open of an open store succeeded")
		}
		if !strings.Contains(err.Error(), "in use") {
			t.Errorf("second open: %v; want it refused as in use", err)
		}
		update(t, first, func(tx *Tx) error { return tx.ReserveSerial([]byte{1}, "r") })
		s := e.reopen(t, first, where)
		view(t, s, func(tx *Tx) error { _, err := tx.Serial([]byte{1}); return err })
	})
}

// TestSerialsAreNeverReused: a serial reserved once, whatever became of
// it, is refused to every later reservation and keeps its first record; an
// issued or burned serial is final.
func TestSerialsAreNeverReused(t *testing.T) {
	tests := []struct {
		name  string
		state SerialState // what became of the serial before it is asked for again
	}{
		{"reserved", SerialReserved},
		{"issued", SerialIssued},
		{"burned", SerialBurned},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				serial := []byte{0x42, byte(i)}
				update(t, s, func(tx *Tx) error { return tx.ReserveSerial(serial, "first") })
				if tc.state != SerialReserved {
					update(t, s, func(tx *Tx) error { return tx.SetSerialState(serial, tc.state) })
				}
				err := s.Update(func(tx *Tx) error { return tx.ReserveSerial(serial, "second") })
				if !errors.Is(err, ErrSerialUsed) {
					t.Fatalf("reserving a %s serial again: %v, want ErrSerialUsed", tc.state, err)
				}
				if tc.state != SerialReserved {
					for _, to := range []SerialState{SerialIssued, SerialBurned} {
						if err := s.Update(func(tx *Tx) error { return tx.SetSerialState(serial, to) }); err == nil {
							t.Errorf("a %s serial was moved to %s", tc.state, to)
						}
					}
				}
				view(t, s, func(tx *Tx) error {
					got, err := tx.Serial(serial)
					if err != nil {
						return err
					}
					if *got != (Serial{RequestID: "first", State: tc.state}) {
						t.Errorf("serial record %+v, want the first request's, %s", *got, tc.state)
					}
					return nil
				})
			})
		}
		var listed []string
		view(t, s, func(tx *Tx) error {
			if _, err := tx.Serial([]byte{0x99}); !errors.Is(err, ErrNotFound) {
				t.Errorf("a serial never reserved: %v, want ErrNotFound", err)
			}
			return tx.Serials(func(serial []byte, r Serial) error {
				listed = append(listed, fmt.Sprintf("%x %s", serial, r.State))
				return nil
			})
		})
		if want := []string{"4200 reserved", "4201 issued", "4202 burned"}; !slices.Equal(listed, want) {
			t.Errorf("serials %q, want %q", listed, want)
		}
	})
}

// TestConcurrentReservationsOfOneSerial: of the requests reserving one
// serial at the same time, each with its audit event, exactly one gets it
// and only its event is logged.
func TestConcurrentReservationsOfOneSerial(t *testing.T) {
	const requests = 8
	serial := []byte{0x5e, 0x41}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		errs := make([]error, requests)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range requests {
			wg.Go(func() {
				<-start
				errs[i] = s.Update(func(tx *Tx) error {
					id := fmt.Sprintf("req-%d", i)
					if err := tx.ReserveSerial(serial, id); err != nil {
						return err
					}
					_, err := tx.Append(Event{Actor: System, Action: "serial.reserve", Object: id, Outcome: OutcomeOK})
					return err
				})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("requests %d and %d both reserved the serial", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, ErrSerialUsed):
				t.Errorf("request %d: %v, want ErrSerialUsed", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no request reserved the serial")
		}
		id := fmt.Sprintf("req-%d", winner)
		view(t, s, func(tx *Tx) error {
			got, err := tx.Serial(serial)
			if err != nil || got.RequestID != id {
				t.Errorf("serial record %+v (%v), want request %s's", got, err, id)
			}
			return tx.VerifyAuditChain()
		})
		if got := auditEvents(t, s); !slices.Equal(got, []string{"1 " + id}) {
			t.Errorf("audit log %q, want the one event of %s", got, id)
		}
	})
}

// TestCertificateDERIsImmutable: a transaction that would change a
// certificate's DER is refused as a whole; its state may change.
func TestCertificateDERIsImmutable(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		c := &Certificate{Serial: []byte{1}, DER: []byte("cert"), Issuer: "ab", Status: StatusGood}
		update(t, s, func(tx *Tx) error { return tx.PutCertificate(c) })
		changed := *c
		changed.DER = []byte("other")
		err := s.Update(func(tx *Tx) error {
			if _, err := tx.Append(Event{Actor: System, Action: "certificate.issue", Object: "02", Outcome: OutcomeOK}); err != nil {
				return err
			}
			if err := tx.PutCertificate(&Certificate{Serial: []byte{2}, DER: []byte("two"), Issuer: "ab"}); err != nil {
				return err
			}
			return tx.PutCertificate(&changed)
		})
		if !errors.Is(err, ErrImmutable) {
			t.Fatalf("overwriting DER: %v, want ErrImmutable", err)
		}
		revoked := *c
		revoked.Status, revoked.RevokedAt, revoked.Reason = StatusRevoked, time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC), 4
		update(t, s, func(tx *Tx) error { return tx.PutCertificate(&revoked) })
		view(t, s, func(tx *Tx) error {
			got, err := tx.Certificate([]byte{1})
			if err != nil {
				return err
			}
			if string(got.DER) != "cert" || got.Status != StatusRevoked || got.Reason != 4 {
				t.Errorf("certificate %+v, want DER %q, revoked for reason 4", got, "cert")
			}
			if _, err := tx.Certificate([]byte{2}); !errors.Is(err, ErrNotFound) {
				t.Errorf("certificate 02 of the refused transaction: %v, want ErrNotFound", err)
			}
			return nil
		})
		if got := auditEvents(t, s); len(got) != 0 {
			t.Errorf("the refused transaction's event was logged: %q", got)
		}
	})
}

func TestRevokedIndexFollowsStatus(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		put := func(serial byte, issuer string, status CertStatus) {
			t.Helper()
			update(t, s, func(tx *Tx) error {
				return tx.PutCertificate(&Certificate{Serial: []byte{serial}, DER: []byte{serial}, Issuer: issuer, Status: status})
			})
		}
		listed := func(issuer string) []byte {
			t.Helper()
			var got []byte
			view(t, s, func(tx *Tx) error {
				return tx.Revoked(issuer, func(e RevokedEntry) error { got = append(got, e.Serial...); return nil })
			})
			return got
		}
		put(1, "a", StatusGood)
		put(2, "a", StatusRevoked)
		put(3, "a", StatusOnHold)
		put(4, "b", StatusRevoked)
		put(5, "a", StatusSuperseded)
		// An issuer whose name begins with another's is not listed with it.
		put(6, "ab", StatusRevoked)
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
		if got := listed("c"); len(got) != 0 {
			t.Fatalf("issuer c lists %v, want none", got)
		}
	})
}

func TestRevokedEntriesCarryWhatTheCRLLists(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
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
		view(t, s, func(tx *Tx) error {
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
	})
}

// TestRequestsFollowTheirID: a request id names one record, which each
// write replaces (a retry after a failure is the same request), and the
// in-flight index lists exactly the requests left signing.
func TestRequestsFollowTheirID(t *testing.T) {
	steps := []struct {
		put      Request
		inFlight []string
	}{
		{Request{ID: "r1", State: RequestSigning, Serial: []byte{1}}, []string{"r1"}},
		{Request{ID: "r2", State: RequestSigning, Serial: []byte{2}}, []string{"r1", "r2"}},
		{Request{ID: "r1", State: RequestFailed, Serial: []byte{1}, Burned: [][]byte{{1}}, Error: "hsm"}, []string{"r2"}},
		{Request{ID: "r1", State: RequestSigning, Serial: []byte{3}, Burned: [][]byte{{1}}}, []string{"r1", "r2"}},
		{Request{ID: "r2", State: RequestIssued, Serial: []byte{2}}, []string{"r1"}},
		{Request{ID: "r1", State: RequestIssued, Serial: []byte{3}, Burned: [][]byte{{1}}}, nil},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		for i, step := range steps {
			update(t, s, func(tx *Tx) error { r := step.put; return tx.PutRequest(&r) })
			view(t, s, func(tx *Tx) error {
				inFlight, err := tx.InFlight()
				if err != nil {
					return err
				}
				var ids []string
				for _, r := range inFlight {
					ids = append(ids, r.ID)
				}
				if !slices.Equal(ids, step.inFlight) {
					t.Errorf("step %d: in flight %q, want %q", i, ids, step.inFlight)
				}
				got, err := tx.Request(step.put.ID)
				if err != nil {
					return err
				}
				if got.State != step.put.State || !bytes.Equal(got.Serial, step.put.Serial) || got.Error != step.put.Error {
					t.Errorf("step %d: request %+v, want %+v", i, got, step.put)
				}
				return nil
			})
		}
		if err := s.Update(func(tx *Tx) error { return tx.PutRequest(&Request{State: RequestSigning}) }); err == nil {
			t.Error("a request without an id was recorded")
		}
		view(t, s, func(tx *Tx) error {
			if _, err := tx.Request("r3"); !errors.Is(err, ErrNotFound) {
				t.Errorf("an unknown request: %v, want ErrNotFound", err)
			}
			n := 0
			if err := tx.r.scan(tableRequests, nil, nil, func(k, v []byte) error { n++; return nil }); err != nil {
				return err
			}
			if n != 2 {
				t.Errorf("%d request records, want one per id, 2", n)
			}
			return nil
		})
	})
}

// TestAuditChainDetectsTampering edits the audit log through the records,
// behind the chain's back, and expects VerifyAuditChain to name where it
// breaks.
func TestAuditChainDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(r records) error
		want   string
	}{
		{"edit", func(r records) error {
			v, err := r.get(tableAudit, seqKey(2))
			if err != nil {
				return err
			}
			return r.put(tableAudit, seqKey(2), bytes.Replace(v, []byte(`"ok"`), []byte(`"no"`), 1))
		}, "event 3: does not chain"},
		{"edit the last", func(r records) error {
			v, err := r.get(tableAudit, seqKey(3))
			if err != nil {
				return err
			}
			return r.put(tableAudit, seqKey(3), bytes.Replace(v, []byte(`"c"`), []byte(`"d"`), 1))
		}, "event 3: stored bytes differ"},
		{"delete middle", func(r records) error { return r.delete(tableAudit, seqKey(2)) }, "event 3: found where 2 belongs"},
		{"delete last", func(r records) error { return r.delete(tableAudit, seqKey(3)) }, "ends at event 2 but its head names event 3"},
		{"swap", func(r records) error {
			one, err := r.get(tableAudit, seqKey(1))
			if err != nil {
				return err
			}
			one = bytes.Clone(one)
			two, err := r.get(tableAudit, seqKey(2))
			if err != nil {
				return err
			}
			two = bytes.Clone(two)
			return errors.Join(r.put(tableAudit, seqKey(1), two), r.put(tableAudit, seqKey(2), one))
		}, "event 2: found where 1 belongs"},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		for _, obj := range []string{"a", "b", "c"} {
			update(t, s, func(tx *Tx) error {
				_, err := tx.Append(Event{Actor: System, Action: "test", Object: obj, Outcome: OutcomeOK})
				return err
			})
		}
		untouched := dump(t, s)
		var log [][2][]byte
		if err := s.b.view(func(r records) error {
			return r.scan(tableAudit, nil, nil, func(k, v []byte) error {
				log = append(log, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := s.View(func(tx *Tx) error { return tx.VerifyAuditChain() }); err != nil {
					t.Fatalf("untouched chain: %v", err)
				}
				if err := s.b.update(tt.tamper); err != nil {
					t.Fatal(err)
				}
				err := s.View(func(tx *Tx) error { return tx.VerifyAuditChain() })
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("VerifyAuditChain = %v, want %q", err, tt.want)
				}
				// The log as it was, for the next case.
				if err := s.b.update(func(r records) error {
					if err := r.clear(tableAudit); err != nil {
						return err
					}
					for _, kv := range log {
						if err := r.put(tableAudit, kv[0], kv[1]); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				wantSameDump(t, "the log put back", untouched, dump(t, s))
			})
		}
	})
}

// issue records c as the engine records an issued certificate, in the
// caller's transaction: its serial reserved and issued, the certificate,
// its request, the month's count, the signing time and the audit event
// (dated c.NotBefore, as the count and the signing time are).
func issue(tx *Tx, c *Certificate) error {
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
	if err := tx.Count(Month(c.NotBefore), "person-sign", StatIssued, 1); err != nil {
		return err
	}
	if err := tx.NoteSigningTime(c.NotBefore); err != nil {
		return err
	}
	_, err := tx.Append(Event{Time: c.NotBefore, Actor: System, Action: "certificate.issue", Object: HexSerial(c.Serial), Outcome: OutcomeOK})
	return err
}

// TestChangeAndItsAuditEventCommitTogether: a transaction that fails,
// whether fn gives up or a rule refuses, after it wrote a change and its
// audit event leaves the store as it was, every table of it; one that
// succeeds commits the change, its derived indexes and its event.
func TestChangeAndItsAuditEventCommitTogether(t *testing.T) {
	first, _ := testCertificate(t, 1)
	second, _ := testCertificate(t, 2)
	for i, c := range []*Certificate{first, second} {
		c.RequestID = fmt.Sprintf("r-%d", i+1)
		c.NotBefore = time.Date(2026, 12, 1+i, 0, 0, 0, 0, time.UTC)
	}
	refused := []struct {
		name string
		fn   func(tx *Tx) error
		want error
	}{
		{"fn fails after writing", func(tx *Tx) error {
			if err := issue(tx, second); err != nil {
				return err
			}
			return errTest
		}, errTest},
		{"a certificate's DER would change", func(tx *Tx) error {
			if err := issue(tx, second); err != nil {
				return err
			}
			changed := *first
			changed.DER = second.DER
			return tx.PutCertificate(&changed)
		}, ErrImmutable},
		{"a serial used before", func(tx *Tx) error {
			if _, err := tx.Append(Event{Actor: System, Action: "certificate.issue", Outcome: OutcomeOK}); err != nil {
				return err
			}
			return tx.ReserveSerial(first.Serial, "r-3")
		}, ErrSerialUsed},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		update(t, s, func(tx *Tx) error { return issue(tx, first) })
		for _, tc := range refused {
			t.Run(tc.name, func(t *testing.T) {
				before := dump(t, s)
				if err := s.Update(tc.fn); !errors.Is(err, tc.want) {
					t.Fatalf("update: %v, want %v", err, tc.want)
				}
				wantSameDump(t, "after a failed transaction", before, dump(t, s))
			})
		}
		t.Run("committed", func(t *testing.T) {
			update(t, s, func(tx *Tx) error { return issue(tx, second) })
			if got, want := auditEvents(t, s), []string{"1 01", "2 02"}; !slices.Equal(got, want) {
				t.Errorf("audit log %q, want %q", got, want)
			}
			view(t, s, func(tx *Tx) error {
				if _, err := tx.Certificate(second.Serial); err != nil {
					t.Error(err)
				}
				if r, err := tx.Serial(second.Serial); err != nil || r.State != SerialIssued {
					t.Errorf("serial of the certificate: %+v, %v", r, err)
				}
				if r, err := tx.Request(second.RequestID); err != nil || r.State != RequestIssued {
					t.Errorf("request of the certificate: %+v, %v", r, err)
				}
				if st, err := tx.Statistics("2026-12"); err != nil || st["person-sign"][StatIssued] != 2 {
					t.Errorf("statistics %v, %v; want 2 issued", st, err)
				}
				if last, err := tx.LastSigningTime(); err != nil || !last.Equal(second.NotBefore) {
					t.Errorf("last signing time %v, %v; want %v", last, err, second.NotBefore)
				}
				if current, err := keyIndexCurrent(tx); err != nil || !current {
					t.Errorf("key index noted at the head: %v, %v", current, err)
				}
				return tx.VerifyAuditChain()
			})
			if !hasRecord(t, s, tableKeys, mustIndexEntry(t, second)) {
				t.Error("the certificate is not in the key index")
			}
		})
	})
}

func TestStatisticsAndClock(t *testing.T) {
	nov := time.Date(2026, 11, 30, 17, 0, 0, 0, time.UTC) // 01:00 on 1 December in Beijing
	if Month(nov) != "2026-12" {
		t.Fatalf("Month(%v) = %s, want 2026-12", nov, Month(nov))
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		view(t, s, func(tx *Tx) error {
			if last, err := tx.LastSigningTime(); err != nil || !last.IsZero() {
				t.Errorf("last signing time of a new store %v, %v; want none", last, err)
			}
			return nil
		})
		update(t, s, func(tx *Tx) error {
			for _, c := range []struct {
				month, profile, kind string
				n                    uint64
			}{
				{"2026-12", "person-sign", StatIssued, 3},
				{"2026-12", "person-sign", StatIssued, 2},
				{"2026-12", "device-sign", StatRevoked, 1},
				{"2027-01", "device-sign", StatRevoked, 1},
				{"2026-1", "device-sign", StatRevoked, 7}, // a month whose name begins another's
			} {
				if err := tx.Count(c.month, c.profile, c.kind, c.n); err != nil {
					return err
				}
			}
			if err := tx.Count("2026-12", "a/b", StatIssued, 1); err == nil {
				t.Error("a profile with '/' was counted")
			}
			if err := tx.NoteSigningTime(nov); err != nil {
				return err
			}
			return tx.NoteSigningTime(nov.Add(-time.Hour)) // never lowers
		})
		view(t, s, func(tx *Tx) error {
			st, err := tx.Statistics("2026-12")
			if err != nil {
				return err
			}
			if st["person-sign"][StatIssued] != 5 || st["device-sign"][StatRevoked] != 1 || len(st) != 2 {
				t.Errorf("statistics = %v", st)
			}
			last, err := tx.LastSigningTime()
			if err != nil || !last.Equal(nov) {
				t.Errorf("last signing time %v (%v), want %v", last, err, nov)
			}
			return nil
		})
		// An operator's acknowledged clock reset lowers it.
		update(t, s, func(tx *Tx) error { return tx.ResetSigningTime(nov.Add(-time.Hour)) })
		view(t, s, func(tx *Tx) error {
			if last, err := tx.LastSigningTime(); err != nil || !last.Equal(nov.Add(-time.Hour)) {
				t.Errorf("after a reset the last signing time is %v (%v), want %v", last, err, nov.Add(-time.Hour))
			}
			return nil
		})
	})
}

// TestCRLState: each issuer's CRL sequence is kept as written; a new
// issuer's starts at number 1.
func TestCRLState(t *testing.T) {
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		want := CRLState{Next: 7, ThisUpdate: at, NextUpdate: at.Add(24 * time.Hour), DER: []byte("crl")}
		update(t, s, func(tx *Tx) error {
			return errors.Join(tx.PutCRLState("ab", want), tx.PutCRLState("cd", CRLState{Next: 2}))
		})
		view(t, s, func(tx *Tx) error {
			got, err := tx.CRLState("ab")
			if err != nil {
				return err
			}
			if got.Next != want.Next || !got.ThisUpdate.Equal(want.ThisUpdate) || !got.NextUpdate.Equal(want.NextUpdate) ||
				!bytes.Equal(got.DER, want.DER) {
				t.Errorf("CRL state of ab %+v, want %+v", got, want)
			}
			for issuer, next := range map[string]uint64{"cd": 2, "ef": 1, "a": 1} {
				if got, err := tx.CRLState(issuer); err != nil || got.Next != next {
					t.Errorf("CRL state of %s %+v (%v), want next %d", issuer, got, err, next)
				}
			}
			return nil
		})
	})
}

// TestAuditEventsAndLastSeal: events are numbered from 1, each chained to
// the one before as stored, read from any position, and kept byte for byte
// across a reopen; the last seal is found without a walk.
func TestAuditEventsAndLastSeal(t *testing.T) {
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	event := func(i int) Event {
		e := Event{Actor: System, Action: "test", Object: fmt.Sprint(i), Outcome: OutcomeOK, Time: at.Add(time.Duration(i) * time.Second)}
		if i%2 == 0 {
			e.Action, e.Seal = "audit.seal", &Seal{KeyID: []byte("audit key"), Signature: []byte{byte(i)}}
		}
		return e
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		view(t, s, func(tx *Tx) error {
			seq, hash, err := tx.AuditHead()
			if err != nil || seq != 0 || !bytes.Equal(hash, Genesis()) {
				t.Errorf("head of an empty log: %d %x %v; want 0 and the genesis hash", seq, hash, err)
			}
			if last, err := tx.LastSeal(); err != nil || last != nil {
				t.Errorf("last seal of an empty log: %+v, %v", last, err)
			}
			return nil
		})
		// Several events in one transaction, and one in another.
		for _, batch := range [][]int{{1, 2, 3, 4}, {5}} {
			update(t, s, func(tx *Tx) error {
				for _, i := range batch {
					got, err := tx.Append(event(i))
					if err != nil {
						return err
					}
					if got.Seq != uint64(i) {
						t.Errorf("event %d appended as %d", i, got.Seq)
					}
				}
				return nil
			})
		}
		stored := func(s *Store) [][]byte {
			var out [][]byte
			view(t, s, func(tx *Tx) error {
				prev := Genesis()
				err := tx.Events(1, func(e Event, raw []byte) error {
					if !bytes.Equal(e.Prev, prev) {
						t.Errorf("event %d: prev %x, want %x", e.Seq, e.Prev, prev)
					}
					prev = ChainHash(raw)
					out = append(out, bytes.Clone(raw))
					return nil
				})
				if err != nil {
					return err
				}
				seq, hash, err := tx.AuditHead()
				if err != nil || seq != 5 || !bytes.Equal(hash, prev) {
					t.Errorf("head %d %x (%v), want 5 %x", seq, hash, err, prev)
				}
				last, err := tx.LastSeal()
				if err != nil || last == nil || last.Seq != 4 || last.Seal.Signature[0] != 4 {
					t.Errorf("last seal %+v (%v), want event 4", last, err)
				}
				return tx.VerifyAuditChain()
			})
			return out
		}
		before := stored(s)
		if len(before) != 5 {
			t.Fatalf("%d events, want 5", len(before))
		}
		view(t, s, func(tx *Tx) error {
			var seqs []uint64
			if err := tx.Events(3, func(e Event, _ []byte) error { seqs = append(seqs, e.Seq); return nil }); err != nil {
				return err
			}
			if !slices.Equal(seqs, []uint64{3, 4, 5}) {
				t.Errorf("events from 3: %v", seqs)
			}
			if err := tx.VerifyAuditChainFrom(3, ChainHash(before[1])); err != nil {
				t.Errorf("chain from event 3: %v", err)
			}
			if err := tx.VerifyAuditChainFrom(3, Genesis()); err == nil {
				t.Error("the chain from event 3 verified against another event's hash")
			}
			return nil
		})
		after := stored(e.reopen(t, s, where))
		if !slices.EqualFunc(before, after, bytes.Equal) {
			t.Error("the events' stored bytes changed across a reopen")
		}
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
