package store

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"signerd/revocation"
)

// fakeCertificate is a certificate record whose DER is no certificate:
// the CRL records look only at its issuer, serial and lifecycle.
func fakeCertificate(issuer string, serial []byte) *Certificate {
	return &Certificate{Serial: serial, DER: append([]byte("der of "), serial...), Issuer: issuer, Status: StatusGood,
		NotAfter: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// changesOf is every change of issuer's log after after.
func changesOf(t *testing.T, s *Store, issuer string, after uint64) []CRLChange {
	t.Helper()
	var out []CRLChange
	view(t, s, func(tx *Tx) error {
		return tx.CRLChanges(issuer, after, func(c CRLChange) error {
			c.Serial = bytes.Clone(c.Serial)
			out = append(out, c)
			return nil
		})
	})
	return out
}

func changeSeq(t *testing.T, s *Store) uint64 {
	t.Helper()
	var seq uint64
	view(t, s, func(tx *Tx) error {
		var err error
		seq, err = tx.CRLChangeSeq()
		return err
	})
	return seq
}

// TestCRLChangeLog: each change of a certificate's listing appends one
// change with the next sequence number, whatever the issuer; a write that
// leaves the listing as it was appends none; CRLChanges gives exactly the
// changes after its bound; pruning deletes the oldest, never gives a
// sequence number again, and leaves other issuers' changes.
func TestCRLChangeLog(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		for _, serial := range []byte{1, 2, 3, 4} {
			update(t, s, func(tx *Tx) error { return tx.PutCertificate(fakeCertificate("ab", []byte{serial})) })
		}
		update(t, s, func(tx *Tx) error { return tx.PutCertificate(fakeCertificate("cd", []byte{9})) })
		if seq := changeSeq(t, s); seq != 0 {
			t.Fatalf("issuing good certificates gave change sequence %d, want 0", seq)
		}
		set := func(serial byte, status CertStatus, reason revocation.Reason, revokedAt time.Time) func(tx *Tx) error {
			return func(tx *Tx) error {
				c, err := tx.Certificate([]byte{serial})
				if err != nil {
					return err
				}
				c.Status, c.Reason, c.RevokedAt = status, reason, revokedAt
				return tx.PutCertificate(c)
			}
		}
		steps := []struct {
			name   string
			write  func(tx *Tx) error
			issuer string // whose log the change goes to
			want   []byte // the serial of the one change, nil for none
			wantAt time.Time
		}{
			{"revoke", set(1, StatusRevoked, revocation.KeyCompromise, at), "ab", []byte{1}, at},
			{"re-put the revoked certificate as it is", set(1, StatusRevoked, revocation.KeyCompromise, at), "ab", nil, time.Time{}},
			{"hold", set(2, StatusOnHold, revocation.CertificateHold, at.Add(time.Hour)), "ab", []byte{2}, at.Add(time.Hour)},
			{"hold to revoked, date kept", set(2, StatusRevoked, revocation.KeyCompromise, at.Add(time.Hour)), "ab", []byte{2}, at.Add(time.Hour)},
			{"revocation time changed", set(2, StatusRevoked, revocation.KeyCompromise, at.Add(2*time.Hour)), "ab", []byte{2}, at.Add(2 * time.Hour)},
			{"hold another", set(3, StatusOnHold, revocation.CertificateHold, at.Add(3*time.Hour)), "ab", []byte{3}, at.Add(3 * time.Hour)},
			{"restore from hold", set(3, StatusGood, revocation.Unspecified, time.Time{}), "ab", []byte{3}, time.Time{}},
			{"superseded, never listed", set(4, StatusSuperseded, revocation.Unspecified, time.Time{}), "ab", nil, time.Time{}},
			{"another issuer's revocation", set(9, StatusRevoked, revocation.Superseded, at.Add(4*time.Hour)), "cd", []byte{9}, at.Add(4 * time.Hour)},
			{"a new certificate written listed", func(tx *Tx) error {
				c := fakeCertificate("ab", []byte{5})
				c.Status, c.Reason, c.RevokedAt = StatusRevoked, revocation.CACompromise, at.Add(5*time.Hour)
				return tx.PutCertificate(c)
			}, "ab", []byte{5}, at.Add(5 * time.Hour)},
		}
		var all []CRLChange // issuer ab's, in order
		for _, step := range steps {
			before := changeSeq(t, s)
			update(t, s, step.write)
			after := changeSeq(t, s)
			got := changesOf(t, s, step.issuer, before)
			if step.want == nil {
				if after != before || len(got) != 0 {
					t.Fatalf("%s: sequence %d → %d, changes %+v; want none", step.name, before, after, got)
				}
				continue
			}
			if after != before+1 || len(got) != 1 || got[0].Seq != after || !bytes.Equal(got[0].Serial, step.want) || !got[0].At.Equal(step.wantAt) {
				t.Fatalf("%s: sequence %d → %d, changes %+v; want one, %d, serial %x at %v", step.name, before, after, got, before+1, step.want, step.wantAt)
			}
			if step.issuer == "ab" {
				all = append(all, got[0])
			}
		}
		if got := changesOf(t, s, "cd", 0); len(got) != 1 || got[0].Seq != 7 {
			t.Errorf("issuer cd's log: %+v, want its one change, 7", got)
		}
		// Every bound gives exactly the changes after it.
		for after := uint64(0); after <= 10; after++ {
			var want []CRLChange
			for _, c := range all {
				if c.Seq > after {
					want = append(want, c)
				}
			}
			if got := changesOf(t, s, "ab", after); !sameChanges(got, want) {
				t.Errorf("changes after %d: %+v, want %+v", after, got, want)
			}
		}
		if got := changesOf(t, s, "ab", math.MaxUint64); len(got) != 0 {
			t.Errorf("changes after the last possible sequence: %+v", got)
		}

		prune := func(issuer string, upTo uint64, limit, want int) {
			t.Helper()
			update(t, s, func(tx *Tx) error {
				n, err := tx.PruneCRLChanges(issuer, upTo, limit)
				if err == nil && n != want {
					err = fmt.Errorf("pruned %d changes of %s up to %d (limit %d), want %d", n, issuer, upTo, limit, want)
				}
				return err
			})
		}
		prune("ab", 4, 2, 2)  // 1 and 2 of 1, 2, 3, 4
		prune("ab", 4, 10, 2) // 3 and 4
		prune("ab", 4, 10, 0)
		prune("ab", 0, 10, 0)
		if got := changesOf(t, s, "ab", 0); !sameChanges(got, all[4:]) {
			t.Errorf("after pruning up to 4: %+v, want %+v", got, all[4:])
		}
		if got := changesOf(t, s, "cd", 0); len(got) != 1 {
			t.Errorf("pruning ab's log changed cd's: %+v", got)
		}
		// A restarted store gives the next number, never a pruned one.
		s = e.reopen(t, s, where)
		update(t, s, set(4, StatusRevoked, revocation.Unspecified, at.Add(6*time.Hour)))
		if got := changesOf(t, s, "ab", 0); len(got) != 4 || got[3].Seq != 9 || changeSeq(t, s) != 9 {
			t.Errorf("after a restart: %+v, sequence %d; want change 9 last", got, changeSeq(t, s))
		}
		prune("ab", math.MaxUint64, 100, 4)
		if changeSeq(t, s) != 9 {
			t.Errorf("pruning everything moved the sequence to %d", changeSeq(t, s))
		}
		// A change and the write that made it commit together.
		if err := s.Update(func(tx *Tx) error {
			if err := set(1, StatusGood, revocation.Unspecified, time.Time{})(tx); err != nil {
				return err
			}
			return errTest
		}); !errors.Is(err, errTest) {
			t.Fatal(err)
		}
		if changeSeq(t, s) != 9 || len(changesOf(t, s, "ab", 0)) != 0 {
			t.Errorf("a rolled-back restore left sequence %d, changes %+v", changeSeq(t, s), changesOf(t, s, "ab", 0))
		}
	})
}

func sameChanges(a, b []CRLChange) bool {
	return slices.EqualFunc(a, b, func(x, y CRLChange) bool {
		return x.Seq == y.Seq && bytes.Equal(x.Serial, y.Serial) && x.At.Equal(y.At)
	})
}

// shardBounds are the bounds of n shards by the formula of the CRL
// sharding: lo(0) empty, lo(k) = BE16(0x0100 + k*0x7f00/n), the last
// shard open (hi nil). Written out for n = 4 so that a change to either
// side shows.
var shardBounds4 = [][2][]byte{
	{nil, {0x20, 0xc0}},
	{{0x20, 0xc0}, {0x40, 0x80}},
	{{0x40, 0x80}, {0x60, 0x40}},
	{{0x60, 0x40}, nil},
}

// TestRevokedRange: a range of the revoked index gives what Revoked gives
// of the issuer, filtered by the bounds bytewise, entry for entry (an
// index entry written without its time read from the certificate); the
// shards together give each entry once; no other issuer's entry appears,
// even one whose id extends the issuer's.
func TestRevokedRange(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		at := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
		serials := [][]byte{{0x00, 0x05}, {0x01}, {0x01, 0x00}, {0x20, 0xc0}, {0x20, 0xbf, 0xff}, {0x20, 0xc0, 0x00},
			{0x40, 0x80}, {0x60, 0x3f, 0xff, 0xff}, {0x7f, 0xff}, {0x80}, {0xff, 0xff}}
		fixed := len(serials)
		// More than a page of the PostgreSQL range scan.
		for range pgRangePage * 3 / 2 {
			serial := make([]byte, 16)
			rand.Read(serial)
			serial[0] = 0x01 + serial[0]%0x7f
			serials = append(serials, serial)
		}
		update(t, s, func(tx *Tx) error {
			for i, serial := range serials {
				issuers := []string{"ab", "a", "abc"}
				if i >= fixed {
					issuers = issuers[:1]
				}
				for _, issuer := range issuers {
					c := fakeCertificate(issuer, serial)
					if i%3 != 0 || issuer != "ab" {
						c.Status, c.Reason, c.RevokedAt = StatusRevoked, revocation.Reason(1+i%6), at.Add(time.Duration(i)*time.Second)
					}
					if err := tx.PutCertificate(c); err != nil {
						return err
					}
				}
			}
			// An index entry of an older signerd, without time or reason.
			return tx.r.put(tableRevoked, revokedKey("ab", serials[1]), nil)
		})
		var all []RevokedEntry
		view(t, s, func(tx *Tx) error {
			return tx.Revoked("ab", func(e RevokedEntry) error {
				e.Serial = bytes.Clone(e.Serial)
				all = append(all, e)
				return nil
			})
		})
		if len(all) < pgRangePage {
			t.Fatalf("issuer ab lists %d certificates", len(all))
		}
		rangeOf := func(lo, hi []byte) []RevokedEntry {
			var out []RevokedEntry
			view(t, s, func(tx *Tx) error {
				return tx.RevokedRange("ab", lo, hi, func(e RevokedEntry) error {
					e.Serial = bytes.Clone(e.Serial)
					out = append(out, e)
					return nil
				})
			})
			return out
		}
		within := func(lo, hi []byte) []RevokedEntry {
			return slices.DeleteFunc(slices.Clone(all), func(e RevokedEntry) bool {
				return bytes.Compare(e.Serial, lo) < 0 || hi != nil && bytes.Compare(e.Serial, hi) >= 0
			})
		}
		bounds := append(slices.Clone(shardBounds4),
			[2][]byte{nil, nil},                         // one shard
			[2][]byte{{0x01}, {0x01, 0x00}},             // a serial and the next
			[2][]byte{{0x40, 0x80}, {0x40, 0x80}},       // empty
			[2][]byte{{0x60}, {0x20}},                   // reversed
			[2][]byte{{0x80}, nil},                      // past every new serial
			[2][]byte{{0x20, 0xc0}, {0x20, 0xc0, 0x00}}, // one serial
		)
		var union []RevokedEntry
		for i, b := range bounds {
			got, want := rangeOf(b[0], b[1]), within(b[0], b[1])
			if !slices.EqualFunc(got, want, sameEntry) {
				t.Errorf("range [%x, %x): %d entries, want %d (first difference at %d)", b[0], b[1], len(got), len(want), firstDifference(got, want))
			}
			if i < len(shardBounds4) {
				union = append(union, got...)
			}
		}
		if !slices.EqualFunc(union, all, sameEntry) {
			t.Errorf("the shards together give %d entries, Revoked %d", len(union), len(all))
		}
		legacy := all[slices.IndexFunc(all, func(e RevokedEntry) bool { return bytes.Equal(e.Serial, serials[1]) })]
		if !legacy.RevokedAt.Equal(at.Add(time.Second)) || legacy.Reason != 2 {
			t.Errorf("an index entry without its time reads %+v, want the certificate's", legacy)
		}

		view(t, s, func(tx *Tx) error {
			for _, want := range []RevokedEntry{all[0], legacy, all[len(all)-1]} {
				got, ok, err := tx.RevokedEntryOf("ab", want.Serial)
				if err != nil || !ok || !sameEntry(got, want) {
					t.Errorf("entry of %x: %+v, %v, %v; want %+v", want.Serial, got, ok, err, want)
				}
			}
			for _, tc := range []struct {
				issuer string
				serial []byte
			}{{"ab", serials[0]}, {"ab", []byte{0x99}}, {"cd", serials[1]}} {
				if got, ok, err := tx.RevokedEntryOf(tc.issuer, tc.serial); err != nil || ok {
					t.Errorf("entry of %s %x, not listed: %+v, %v, %v", tc.issuer, tc.serial, got, ok, err)
				}
			}
			return nil
		})
	})
}

// sameJSON reports whether a and b encode alike.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

func sameEntry(a, b RevokedEntry) bool {
	return bytes.Equal(a.Serial, b.Serial) && a.RevokedAt.Equal(b.RevokedAt) && a.Reason == b.Reason && a.NotAfter.Equal(b.NotAfter)
}

func firstDifference(a, b []RevokedEntry) int {
	for i := range min(len(a), len(b)) {
		if !sameEntry(a[i], b[i]) {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCRLShardState: shard 0 is the state CRLState has always kept, read
// from a record an older signerd wrote; other shards are states of their
// own; the CRL objects are kept apart, with shard 0's complete CRL read
// from an old state until an object replaces it.
func TestCRLShardState(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		e.open(t, where).Close()
		// As signerd wrote the state before shards: its CRL inside.
		old := `{"next":7,"this_update":"2026-01-02T03:04:05Z","next_update":"2026-01-03T03:04:05Z","der":"MAMCAQE=","number":6}`
		e.edit(t, where, func(r records) error { return r.put(tableCRL, []byte("ab"), []byte(old)) })
		s := e.open(t, where)
		oldDER := []byte{0x30, 0x03, 0x02, 0x01, 0x01}
		view(t, s, func(tx *Tx) error {
			st, err := tx.CRLShardState("ab", 0)
			if err != nil || st.Next != 7 || st.Number != 6 || !bytes.Equal(st.DER, oldDER) || st.ThisUpdate.Year() != 2026 ||
				st.BaseSeq != 0 || st.DeltaNumber != 0 || st.Claim != nil {
				t.Errorf("shard 0 of an old state: %+v, %v", st, err)
			}
			for _, shard := range []int{1, 2, MaxCRLShards - 1} {
				if st, err := tx.CRLShardState("ab", shard); err != nil || st.Next != 1 || st.DER != nil {
					t.Errorf("new shard %d: %+v, %v; want Next 1", shard, st, err)
				}
			}
			for _, o := range []struct {
				shard int
				delta bool
				want  []byte
			}{{0, false, oldDER}, {0, true, nil}, {1, false, nil}} {
				if der, err := tx.CRLObject("ab", o.shard, o.delta); err != nil || !bytes.Equal(der, o.want) {
					t.Errorf("CRL object of shard %d (delta %v): %x, %v; want %x", o.shard, o.delta, der, err, o.want)
				}
			}
			return nil
		})

		until := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		shard1 := CRLState{Next: 9, Number: 8, BaseSeq: 3, DeltaNumber: 8, DeltaThisUpdate: until.Add(-time.Hour),
			DeltaNextUpdate: until, Claim: &CRLClaim{Node: "n1", Until: until, Delta: true}}
		complete, delta1 := []byte{0x30, 0x01, 0x00}, []byte{0x30, 0x01, 0x01}
		update(t, s, func(tx *Tx) error {
			if err := tx.PutCRLShardState("ab", 1, shard1); err != nil {
				return err
			}
			if err := tx.PutCRLObject("ab", 1, true, delta1); err != nil {
				return err
			}
			return tx.PutCRLObject("ab", 0, false, complete)
		})
		s = e.reopen(t, s, where)
		view(t, s, func(tx *Tx) error {
			if st, err := tx.CRLShardState("ab", 1); err != nil || !sameJSON(t, st, shard1) {
				t.Errorf("shard 1: %+v, %v; want %+v", st, err, shard1)
			}
			st, err := tx.CRLState("ab")
			if err != nil || st.Next != 7 || st.Number != 6 || st.DER != nil {
				t.Errorf("shard 0 after its CRL became an object: %+v, %v; want the state without its DER", st, err)
			}
			for _, o := range []struct {
				shard int
				delta bool
				want  []byte
			}{{0, false, complete}, {0, true, nil}, {1, false, nil}, {1, true, delta1}} {
				if der, err := tx.CRLObject("ab", o.shard, o.delta); err != nil || !bytes.Equal(der, o.want) {
					t.Errorf("CRL object of shard %d (delta %v): %x, %v; want %x", o.shard, o.delta, der, err, o.want)
				}
			}
			if st, err := tx.CRLShardState("abc", 0); err != nil || st.Next != 1 {
				t.Errorf("another issuer's shard 0: %+v, %v", st, err)
			}
			return nil
		})
		// Shard 0 written as a shard is CRLState's.
		update(t, s, func(tx *Tx) error { return tx.PutCRLShardState("ab", 0, CRLState{Next: 11, BaseSeq: 5}) })
		view(t, s, func(tx *Tx) error {
			if st, err := tx.CRLState("ab"); err != nil || st.Next != 11 || st.BaseSeq != 5 {
				t.Errorf("CRLState after shard 0 was written: %+v, %v", st, err)
			}
			return nil
		})
		if err := s.Update(func(tx *Tx) error {
			var errs []error
			for _, shard := range []int{-1, MaxCRLShards} {
				errs = append(errs, tx.PutCRLShardState("ab", shard, CRLState{Next: 1}), tx.PutCRLObject("ab", shard, false, complete))
			}
			errs = append(errs, tx.PutCRLShardState("a\x00b", 1, CRLState{Next: 1}), tx.PutCRLObject("", 0, false, complete),
				tx.PutCRLObject("ab", 2, false, nil))
			for i, err := range errs {
				if err == nil {
					t.Errorf("write %d of a shard out of range, an issuer id with a zero byte or an empty CRL was taken", i)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCRLLayout: a layout reads back as written; once pinned it is
// written again only as it is; HasCertificateOf finds an issuer's
// certificate among others' and none for an issuer without one.
func TestCRLLayout(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		view(t, s, func(tx *Tx) error {
			if l, found, err := tx.CRLLayout("ab"); err != nil || found {
				t.Errorf("layout of a new issuer: %+v, %v, %v", l, found, err)
			}
			return nil
		})
		l := CRLLayout{Shards: 4, URL: "http://crl.example/ab-{shard}.crl", DeltaURL: "http://crl.example/ab-{shard}-delta.crl"}
		update(t, s, func(tx *Tx) error { return tx.PutCRLLayout("ab", l) })
		l.Shards = 8 // unpinned, it may change
		update(t, s, func(tx *Tx) error { return tx.PutCRLLayout("ab", l) })
		l.Pinned = true
		update(t, s, func(tx *Tx) error { return tx.PutCRLLayout("ab", l) })
		update(t, s, func(tx *Tx) error { return tx.PutCRLLayout("ab", l) })
		for _, change := range []func(CRLLayout) CRLLayout{
			func(c CRLLayout) CRLLayout { c.Shards = 4; return c },
			func(c CRLLayout) CRLLayout { c.URL = "http://other/{shard}"; return c },
			func(c CRLLayout) CRLLayout { c.DeltaURL = ""; return c },
			func(c CRLLayout) CRLLayout { c.Pinned = false; return c },
		} {
			if err := s.Update(func(tx *Tx) error { return tx.PutCRLLayout("ab", change(l)) }); !errors.Is(err, ErrLayoutPinned) {
				t.Errorf("changing a pinned layout to %+v: %v", change(l), err)
			}
		}
		for _, shards := range []int{0, -1, MaxCRLShards + 1} {
			if err := s.Update(func(tx *Tx) error { return tx.PutCRLLayout("cd", CRLLayout{Shards: shards}) }); err == nil {
				t.Errorf("a layout of %d shards was taken", shards)
			}
		}
		view(t, s, func(tx *Tx) error {
			if got, found, err := tx.CRLLayout("ab"); err != nil || !found || got != l {
				t.Errorf("layout: %+v, %v, %v; want %+v", got, found, err, l)
			}
			// The layout is no shard's state.
			if st, err := tx.CRLState("ab"); err != nil || st.Next != 1 {
				t.Errorf("shard 0 beside a layout: %+v, %v", st, err)
			}
			return nil
		})

		has := func(issuer string) bool {
			t.Helper()
			var found bool
			view(t, s, func(tx *Tx) error {
				var err error
				found, err = tx.HasCertificateOf(issuer)
				return err
			})
			return found
		}
		if has("ab") {
			t.Error("an empty store has a certificate of ab")
		}
		update(t, s, func(tx *Tx) error {
			for i := range 2*pgScanPage + 1 {
				c := fakeCertificate("abc", []byte{0x10, byte(i >> 8), byte(i)})
				c.Subject, c.Profile = `CN="ab"`, "ab"
				if err := tx.PutCertificate(c); err != nil {
					return err
				}
			}
			return nil
		})
		if has("ab") || has("a") || !has("abc") {
			t.Errorf("with certificates of abc only: ab %v, a %v, abc %v", has("ab"), has("a"), has("abc"))
		}
		update(t, s, func(tx *Tx) error { return tx.PutCertificate(fakeCertificate("ab", []byte{0x7f})) })
		if !has("ab") || has("a") {
			t.Errorf("with a certificate of ab last: ab %v, a %v", has("ab"), has("a"))
		}
	})
}

// TestVerifyNamesBadCRLRecords: on each engine, a change-log record, CRL
// state or CRL object that does not decode under its key is a finding
// that names its table and key; the healthy store has none.
func TestVerifyNamesBadCRLRecords(t *testing.T) {
	cases := []struct {
		name            string
		table, key, val string
		want            Finding
	}{
		{"change-log key without a sequence", tableCRLChanges, "ab\x00\x01", "\x00\x00\x00\x00\x00\x00\x00\x00\x01",
			Finding{Bucket: "crl-changes", Key: "key 61620001", Problem: "malformed key"}},
		{"change-log key without an issuer", tableCRLChanges, "\x00\x00\x00\x00\x00\x00\x00\x00\x01", "\x00\x00\x00\x00\x00\x00\x00\x00\x01",
			Finding{Bucket: "crl-changes", Problem: "malformed key"}},
		{"change without a serial", tableCRLChanges, "ab\x00\x00\x00\x00\x00\x00\x00\x00\x01", "\x00\x00\x00\x00\x00\x00\x00\x00",
			Finding{Bucket: "crl-changes", Problem: "want an 8-byte time and a serial"}},
		{"change past the sequence given", tableCRLChanges, "ab\x00\x00\x00\x00\x00\x00\x00\x00\x09", "\x00\x00\x00\x00\x00\x00\x00\x00\x01",
			Finding{Bucket: "crl-changes", Key: `issuer "ab" change 9`, Problem: "past the last sequence given (1)"}},
		{"change sequence unreadable", tableMeta, string(keyCRLChangeSeq), "x",
			Finding{Bucket: "meta", Key: string(keyCRLChangeSeq), Problem: "want 8"}},
		{"shard state that does not decode", tableCRL, "ab\x00\x00\x02", "{",
			Finding{Bucket: "crl", Key: `issuer "ab" shard 2`, Problem: "does not decode"}},
		{"crl key of no kind", tableCRL, "ab\x00\x00\x00", "{}",
			Finding{Bucket: "crl", Key: "key 6162000000", Problem: "malformed key"}},
		{"layout of no shards", tableCRL, "ab\x00layout", `{"shards":0}`,
			Finding{Bucket: "crl", Key: `issuer "ab" layout`, Problem: "layout of 0 shards"}},
		{"CRL object that is no CRL", tableCRLObjects, "ab\x00\x00\x01\x00\x00", "not DER",
			Finding{Bucket: "crl-objects", Key: `issuer "ab" shard 1 complete`, Problem: "not one DER SEQUENCE"}},
		{"CRL object key of no kind", tableCRLObjects, "ab\x00\x00\x01\x00\x02", "\x30\x00",
			Finding{Bucket: "crl-objects", Key: "key 616200000100" + "02", Problem: "malformed key"}},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		healthy := func(t *testing.T) string {
			t.Helper()
			where := e.create(t)
			s := e.open(t, where)
			c := fakeCertificate("ab", []byte{1})
			c.RequestID, c.NotBefore = "r-1", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			update(t, s, func(tx *Tx) error {
				if err := issue(tx, c); err != nil {
					return err
				}
				c.Status, c.Reason, c.RevokedAt = StatusRevoked, 1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				return errors.Join(tx.PutCertificate(c), tx.PutCRLShardState("ab", 1, CRLState{Next: 2}),
					tx.PutCRLLayout("ab", CRLLayout{Shards: 2, Pinned: true}), tx.PutCRLObject("ab", 1, true, []byte{0x30, 0x00}))
			})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return where
		}
		verify := func(t *testing.T, where string) *Report {
			t.Helper()
			var r *Report
			var err error
			if e.name == "bolt" {
				r, err = Verify(where)
			} else {
				r, err = VerifyPostgres(t.Context(), where)
			}
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if r := verify(t, healthy(t)); !r.OK() {
			t.Fatalf("healthy store: %v", r.Findings)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				where := healthy(t)
				e.edit(t, where, func(r records) error { return r.put(tc.table, []byte(tc.key), []byte(tc.val)) })
				r := verify(t, where)
				if !slices.ContainsFunc(r.Findings, func(f Finding) bool {
					return f.Bucket == tc.want.Bucket && (tc.want.Key == "" || f.Key == tc.want.Key) && strings.Contains(f.Problem, tc.want.Problem)
				}) {
					t.Errorf("findings %v; want one like %v", r.Findings, tc.want)
				}
			})
		}
	})
}

// TestBoltCRLBucketsMissing: a file of schema version 1 written before the
// CRL objects and change log (and the OCSP records) existed verifies with
// a note for each, is copied to PostgreSQL as it is, and gains the buckets
// at open, where the first revocation starts the log.
func TestBoltCRLBucketsMissing(t *testing.T) {
	s := healthyStore(t)
	path := s.Path()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// As before the change log: certificate 02's revocation is in no log.
		if err := tx.Bucket(bucketMeta).Delete(keyCRLChangeSeq); err != nil {
			return err
		}
		return errors.Join(tx.DeleteBucket(bucketCRLObjects), tx.DeleteBucket(bucketCRLChanges),
			tx.DeleteBucket(bucketOCSPResponses), tx.DeleteBucket(bucketOCSPDue))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{tableCRLObjects, tableCRLChanges, tableOCSPResponses, tableOCSPDue} {
		if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.Contains(n, strconv.Quote(b)+" is missing") }) {
			t.Errorf("notes %q name no missing bucket %q", r.Notes, b)
		}
	}
	if !r.OK() {
		t.Errorf("findings of a file without the CRL buckets: %v", r.Findings)
	}
	if _, err := MigrateToPostgres(t.Context(), path, newPostgresDatabase(t)); err != nil {
		t.Errorf("migrate a file without the CRL buckets: %v", err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("open a file without the CRL buckets: %v", err)
	}
	defer s.Close()
	update(t, s, func(tx *Tx) error {
		c, err := tx.Certificate([]byte{1})
		if err != nil {
			return err
		}
		c.Status, c.Reason, c.RevokedAt = StatusRevoked, 1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		return tx.PutCertificate(c)
	})
	if got := changesOf(t, s, "ab", 0); len(got) != 1 || got[0].Seq != 1 || !bytes.Equal(got[0].Serial, []byte{1}) {
		t.Errorf("the first change after the buckets were made: %+v", got)
	}
	path2 := filepath.Join(t.TempDir(), "copy.db")
	if _, err := s.CopyTo(path2); err != nil {
		t.Fatal(err)
	}
	if r, err := Verify(path2); err != nil || !r.OK() || len(r.Notes) != 0 {
		t.Errorf("verify once open made the buckets: %+v, %v", r, err)
	}
}
