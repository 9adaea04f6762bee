package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"signerd/store/pgtest"
)

// ocspAt is a time the OCSP tests count from.
var ocspAt = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// testOCSPResponse is a response whose DER is one SEQUENCE holding n,
// valid for a week from thisUpdate.
func testOCSPResponse(issuer string, serial []byte, n byte, thisUpdate time.Time) *OCSPResponse {
	return &OCSPResponse{Issuer: issuer, Serial: serial, ThisUpdate: thisUpdate, NextUpdate: thisUpdate.Add(7 * 24 * time.Hour),
		DER: []byte{0x30, 0x03, 0x02, 0x01, n}}
}

// dueEntry is one entry of the due table as its key says.
type dueEntry struct {
	issuer string
	serial string // hex
	at     time.Time
}

func (d dueEntry) String() string {
	return fmt.Sprintf("%s/%s@%s", d.issuer, d.serial, d.at.Format(time.RFC3339Nano))
}

// dueTable is every entry of the due table, read raw, in key order.
func dueTable(t *testing.T, s *Store) []dueEntry {
	t.Helper()
	var out []dueEntry
	if err := s.b.view(func(r records) error {
		return r.scan(tableOCSPDue, nil, nil, func(k, v []byte) error {
			at, rk, ok := parseOCSPDueKey(k)
			if !ok || len(v) != 0 {
				return fmt.Errorf("due entry %x = %x: malformed", k, v)
			}
			issuer, serial, _ := parseOCSPResponseKey(rk)
			out = append(out, dueEntry{issuer, fmt.Sprintf("%x", serial), at})
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// dueOf is what DueOCSP gives.
func dueOf(t *testing.T, s *Store, until time.Time, limit int) []dueEntry {
	t.Helper()
	var out []dueEntry
	view(t, s, func(tx *Tx) error {
		return tx.DueOCSP(until, limit, func(issuer string, serial []byte, at time.Time) error {
			out = append(out, dueEntry{issuer, fmt.Sprintf("%x", serial), at})
			return nil
		})
	})
	return out
}

func sameOCSPResponse(a, b *OCSPResponse) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Issuer == b.Issuer && bytes.Equal(a.Serial, b.Serial) && a.ThisUpdate.Equal(b.ThisUpdate) &&
		a.NextUpdate.Equal(b.NextUpdate) && bytes.Equal(a.DER, b.DER)
}

// TestOCSPResponseRoundTrip: a response reads back as written, after a
// reopen too, as a copy; a certificate marked due before its first
// response has none; a response replaced is gone; what the records cannot
// hold is refused and writes nothing.
func TestOCSPResponseRoundTrip(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		first := testOCSPResponse("ab", []byte{0x00, 0x01}, 1, ocspAt)
		noNext := &OCSPResponse{Issuer: "ab", Serial: []byte{0x02}, ThisUpdate: ocspAt.Add(time.Nanosecond), DER: []byte{0x30, 0x00}}
		update(t, s, func(tx *Tx) error {
			return errors.Join(tx.PutOCSPResponse(first, ocspAt.Add(time.Hour)), tx.PutOCSPResponse(noNext, time.Time{}),
				tx.MarkOCSPDue("ab", []byte{0x03}, ocspAt))
		})
		s = e.reopen(t, s, where)
		view(t, s, func(tx *Tx) error {
			for _, tc := range []struct {
				issuer string
				serial []byte
				want   *OCSPResponse
			}{{"ab", []byte{0x00, 0x01}, first}, {"ab", []byte{0x02}, noNext}, {"ab", []byte{0x03}, nil},
				{"ab", []byte{0x01}, nil}, {"a", []byte{0x00, 0x01}, nil}, {"abc", []byte{0x00, 0x01}, nil}} {
				got, err := tx.OCSPResponse(tc.issuer, tc.serial)
				if err != nil || !sameOCSPResponse(got, tc.want) {
					t.Errorf("response of %s %x: %+v, %v; want %+v", tc.issuer, tc.serial, got, err, tc.want)
				}
			}
			got, err := tx.OCSPResponse("ab", []byte{0x00, 0x01})
			if err != nil {
				return err
			}
			got.DER[4], got.Serial[1] = 0x7f, 0x7f
			if again, err := tx.OCSPResponse("ab", []byte{0x00, 0x01}); err != nil || !sameOCSPResponse(again, first) {
				t.Errorf("a response changed through a copy: %+v, %v", again, err)
			}
			return nil
		})
		second := testOCSPResponse("ab", []byte{0x00, 0x01}, 2, ocspAt.Add(time.Hour))
		update(t, s, func(tx *Tx) error { return tx.PutOCSPResponse(second, ocspAt.Add(2*time.Hour)) })
		view(t, s, func(tx *Tx) error {
			if got, err := tx.OCSPResponse("ab", []byte{0x00, 0x01}); err != nil || !sameOCSPResponse(got, second) {
				t.Errorf("the replaced response: %+v, %v; want %+v", got, err, second)
			}
			return nil
		})
		if got, want := dueTable(t, s), []dueEntry{{"ab", "03", ocspAt}, {"ab", "0001", ocspAt.Add(2 * time.Hour)}}; !slices.Equal(got, want) {
			t.Errorf("due entries %v, want %v", got, want)
		}

		before := dump(t, s)
		valid := func() *OCSPResponse { return testOCSPResponse("cd", []byte{9}, 9, ocspAt) }
		with := func(change func(r *OCSPResponse)) *OCSPResponse { r := valid(); change(r); return r }
		refusals := []struct {
			name  string
			write func(tx *Tx) error
		}{
			{"empty issuer", func(tx *Tx) error { return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.Issuer = "" }), ocspAt) }},
			{"issuer with a zero byte", func(tx *Tx) error {
				return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.Issuer = "c\x00d" }), ocspAt)
			}},
			{"empty serial", func(tx *Tx) error { return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.Serial = nil }), ocspAt) }},
			{"no DER", func(tx *Tx) error { return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.DER = nil }), ocspAt) }},
			{"DER of two SEQUENCEs", func(tx *Tx) error {
				return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.DER = []byte{0x30, 0x00, 0x30, 0x00} }), ocspAt)
			}},
			{"no thisUpdate", func(tx *Tx) error {
				return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.ThisUpdate = time.Time{} }), ocspAt)
			}},
			{"nextUpdate before thisUpdate", func(tx *Tx) error {
				return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.NextUpdate = r.ThisUpdate.Add(-time.Second) }), ocspAt)
			}},
			{"thisUpdate before 1970", func(tx *Tx) error {
				return tx.PutOCSPResponse(with(func(r *OCSPResponse) { r.ThisUpdate = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }), ocspAt)
			}},
			{"refresh after 2262", func(tx *Tx) error { return tx.PutOCSPResponse(valid(), time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC)) }},
			{"due at no time", func(tx *Tx) error { return tx.MarkOCSPDue("cd", []byte{9}, time.Time{}) }},
			{"due at the epoch", func(tx *Tx) error { return tx.MarkOCSPDue("cd", []byte{9}, time.Unix(0, 0)) }},
			{"due with an empty serial", func(tx *Tx) error { return tx.MarkOCSPDue("cd", nil, ocspAt) }},
			{"clear with an empty issuer", func(tx *Tx) error { return tx.ClearOCSPDue("", []byte{9}) }},
			{"read with an empty serial", func(tx *Tx) error { _, err := tx.OCSPResponse("cd", []byte{}); return err }},
		}
		update(t, s, func(tx *Tx) error {
			for _, r := range refusals {
				if err := r.write(tx); err == nil {
					t.Errorf("%s: taken", r.name)
				}
			}
			return nil
		})
		wantSameDump(t, "after refused writes", before, dump(t, s))
	})
}

// ocspModel is what the OCSP records of a few certificates should be
// after a sequence of writes: when each is due, and its latest response.
type ocspModel struct {
	due  map[string]time.Time // by issuer/serial hex
	resp map[string]*OCSPResponse
}

// TestOCSPOneDueEntryPerSerial: after any sequence of MarkOCSPDue,
// PutOCSPResponse and ClearOCSPDue, several to a transaction, in a random
// order read ahead or not, each certificate has exactly the one due entry
// the rules give (an earlier mark wins, a response replaces it, a clear
// removes it) and its latest response; a record without either is gone;
// and verify finds nothing wrong.
func TestOCSPOneDueEntryPerSerial(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		where := e.create(t)
		s := e.open(t, where)
		rng := rand.New(rand.NewPCG(1, 2))
		keys := []OCSPKey{{"ab", []byte{1}}, {"ab", []byte{2}}, {"ab", []byte{1, 0}}, {"abc", []byte{1}}, {"a", []byte{0, 1}}}
		m := ocspModel{due: map[string]time.Time{}, resp: map[string]*OCSPResponse{}}
		name := func(k OCSPKey) string { return fmt.Sprintf("%s/%x", k.Issuer, k.Serial) }
		for step := range 150 {
			var ops []string
			err := s.Update(func(tx *Tx) error {
				if rng.IntN(2) == 0 {
					if err := tx.Prefetch(Prefetch{OCSP: keys}); err != nil {
						return err
					}
				}
				for range 1 + rng.IntN(4) {
					k := keys[rng.IntN(len(keys))]
					at := ocspAt.Add(time.Duration(rng.IntN(6)) * time.Minute)
					switch op := rng.IntN(7); {
					case op < 3:
						ops = append(ops, fmt.Sprintf("mark %s %v", name(k), at.Format(time.TimeOnly)))
						if err := tx.MarkOCSPDue(k.Issuer, k.Serial, at); err != nil {
							return err
						}
						if cur, ok := m.due[name(k)]; !ok || at.Before(cur) {
							m.due[name(k)] = at
						}
					case op < 6:
						refresh := at
						if op == 5 {
							refresh = time.Time{}
						}
						r := testOCSPResponse(k.Issuer, k.Serial, byte(step), ocspAt.Add(time.Duration(step)*time.Second))
						ops = append(ops, fmt.Sprintf("put %s refresh %v", name(k), refresh.Format(time.TimeOnly)))
						if err := tx.PutOCSPResponse(r, refresh); err != nil {
							return err
						}
						m.resp[name(k)] = r
						if refresh.IsZero() {
							delete(m.due, name(k))
						} else {
							m.due[name(k)] = refresh
						}
					default:
						ops = append(ops, "clear "+name(k))
						if err := tx.ClearOCSPDue(k.Issuer, k.Serial); err != nil {
							return err
						}
						delete(m.due, name(k))
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("step %d %q: %v", step, ops, err)
			}
			var want []dueEntry
			for _, k := range keys {
				if at, ok := m.due[name(k)]; ok {
					want = append(want, dueEntry{k.Issuer, fmt.Sprintf("%x", k.Serial), at})
				}
			}
			slices.SortFunc(want, func(a, b dueEntry) int {
				return bytes.Compare(ocspDueKey(a.at, []byte(a.issuer+"\x00"+a.serial)), ocspDueKey(b.at, []byte(b.issuer+"\x00"+b.serial)))
			})
			if got := dueTable(t, s); !slices.EqualFunc(got, want, func(a, b dueEntry) bool {
				return a.issuer == b.issuer && a.serial == b.serial && a.at.Equal(b.at)
			}) {
				t.Fatalf("after step %d %q: due entries %v, want %v", step, ops, got, want)
			}
			records := 0
			view(t, s, func(tx *Tx) error {
				for _, k := range keys {
					got, err := tx.OCSPResponse(k.Issuer, k.Serial)
					if err != nil || !sameOCSPResponse(got, m.resp[name(k)]) {
						t.Fatalf("after step %d %q: response of %s %+v, %v; want %+v", step, ops, name(k), got, err, m.resp[name(k)])
					}
					_, due := m.due[name(k)]
					if m.resp[name(k)] != nil || due {
						records++
					}
				}
				return tx.r.scan(tableOCSPResponses, nil, nil, func([]byte, []byte) error { records--; return nil })
			})
			if records != 0 {
				t.Fatalf("after step %d %q: the records of certificates with neither a response nor a due time are kept (%d more or fewer)",
					step, ops, records)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := verifyAt(e, where)
		if err != nil || !r.OK() || r.OCSPResponses == 0 || r.OCSPDue == 0 {
			t.Errorf("verify: %+v, %v", r, err)
		}
	})
}

// TestDueOCSP: DueOCSP gives the entries due at or before until, in due
// order (then issuer and serial, bytewise), up to limit, across more than
// a page of the PostgreSQL range scan; CountOCSPDue counts them up to its
// bound; ClearOCSPDue takes an entry out and keeps the response.
func TestDueOCSP(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		var all []dueEntry // as DueOCSP should give them
		mark := func(tx *Tx, issuer string, serial []byte, at time.Time) error {
			all = append(all, dueEntry{issuer, fmt.Sprintf("%x", serial), at})
			return tx.MarkOCSPDue(issuer, serial, at)
		}
		update(t, s, func(tx *Tx) error {
			var errs []error
			// Same time: by issuer ("a" < "ab" < "abc"), then serial.
			for _, k := range []OCSPKey{{"a", []byte{2}}, {"ab", []byte{1}}, {"ab", []byte{1, 0}}, {"ab", []byte{2}}, {"abc", []byte{0}}} {
				errs = append(errs, mark(tx, k.Issuer, k.Serial, ocspAt))
			}
			errs = append(errs, mark(tx, "ab", []byte{9}, ocspAt.Add(-time.Nanosecond)),
				mark(tx, "ab", []byte{8}, ocspAt.Add(time.Nanosecond)), mark(tx, "cd", []byte{7}, ocspAt.Add(time.Hour)))
			return errors.Join(errs...)
		})
		// More than a page, later than the others.
		many := pgRangePage + 100
		update(t, s, func(tx *Tx) error {
			keys := make([]OCSPKey, many)
			for i := range keys {
				keys[i] = OCSPKey{"ef", []byte{byte(i >> 8), byte(i)}}
			}
			if err := tx.Prefetch(Prefetch{OCSP: keys}); err != nil {
				return err
			}
			for i, k := range keys {
				if err := mark(tx, k.Issuer, k.Serial, ocspAt.Add(2*time.Hour+time.Duration(i%1000)*time.Second)); err != nil {
					return err
				}
			}
			return nil
		})
		slices.SortStableFunc(all, func(a, b dueEntry) int {
			return bytes.Compare(ocspDueKey(a.at, []byte(a.issuer+"\x00"+a.serial)), ocspDueKey(b.at, []byte(b.issuer+"\x00"+b.serial)))
		})
		// The keys above were sorted by the serial's hex, which sorts as
		// its bytes for the serials of this test.
		upTo := func(until time.Time, limit int) []dueEntry {
			var out []dueEntry
			for _, d := range all {
				if !d.at.After(until) && (len(out) < limit) {
					out = append(out, d)
				}
			}
			return out
		}
		far := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, tc := range []struct {
			until time.Time
			limit int
		}{
			{ocspAt.Add(-time.Hour), 10}, {ocspAt.Add(-time.Nanosecond), 10}, {ocspAt, 10}, {ocspAt, 3}, {ocspAt.Add(time.Nanosecond), 10},
			{ocspAt.Add(time.Hour), 1000}, {far, 0}, {far, -1}, {far, 1}, {far, 1000}, {far, pgRangePage + 1}, {far, many + 100},
			{time.Time{}, 10}, {time.Unix(0, 0), 10}, {time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), 20},
		} {
			got, want := dueOf(t, s, tc.until, tc.limit), upTo(tc.until, tc.limit)
			if !slices.EqualFunc(got, want, func(a, b dueEntry) bool { return a.issuer == b.issuer && a.serial == b.serial && a.at.Equal(b.at) }) {
				t.Errorf("due until %v, limit %d: %d entries %.5v, want %d %.5v", tc.until, tc.limit, len(got), got, len(want), want)
			}
			view(t, s, func(tx *Tx) error {
				n, err := tx.CountOCSPDue(tc.until, tc.limit)
				if want := len(want); err != nil || n != want {
					t.Errorf("count until %v, max %d: %d, %v; want %d", tc.until, tc.limit, n, err, want)
				}
				return nil
			})
		}
		// fn's error ends the scan and is returned as it is.
		calls := 0
		if err := s.View(func(tx *Tx) error {
			return tx.DueOCSP(far, 100, func(string, []byte, time.Time) error { calls++; return errTest })
		}); !errors.Is(err, errTest) || calls != 1 {
			t.Errorf("DueOCSP with fn failing: %v after %d calls", err, calls)
		}

		r := testOCSPResponse("ab", []byte{2}, 5, ocspAt)
		update(t, s, func(tx *Tx) error {
			return errors.Join(tx.PutOCSPResponse(r, ocspAt.Add(time.Minute)), tx.ClearOCSPDue("ab", []byte{2}),
				tx.ClearOCSPDue("ab", []byte{1}), tx.ClearOCSPDue("ab", []byte{0x55}))
		})
		got := dueOf(t, s, ocspAt.Add(time.Hour), 100)
		if want := []dueEntry{{"ab", "09", ocspAt.Add(-time.Nanosecond)}, {"a", "02", ocspAt}, {"ab", "0100", ocspAt}, {"abc", "00", ocspAt}, {"ab", "08", ocspAt.Add(time.Nanosecond)}, {"cd", "07", ocspAt.Add(time.Hour)}}; !slices.EqualFunc(got, want, func(a, b dueEntry) bool {
			return a.issuer == b.issuer && a.serial == b.serial && a.at.Equal(b.at)
		}) {
			t.Errorf("after clearing ab/01 and ab/02: %v, want %v", got, want)
		}
		view(t, s, func(tx *Tx) error {
			if got, err := tx.OCSPResponse("ab", []byte{2}); err != nil || !sameOCSPResponse(got, r) {
				t.Errorf("response of a cleared certificate: %+v, %v", got, err)
			}
			return nil
		})
		if hasRecord(t, s, tableOCSPResponses, []byte("ab\x00\x01")) {
			t.Error("a certificate cleared before its first response keeps a record")
		}
	})
}

// TestOCSPResponsesPaging: pages of OCSPResponses, each from the last
// serial of the one before, give every response of the issuer once, in
// serial order (bytewise), and nothing of another issuer or of a
// certificate without a response yet.
func TestOCSPResponsesPaging(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) {
		s := e.openNew(t)
		var want []*OCSPResponse
		update(t, s, func(tx *Tx) error {
			serials := [][]byte{{0x00, 0x05}, {0x01}, {0x01, 0x00}, {0x01, 0x00, 0x00}, {0x7f}, {0xff}, {0xff, 0xff}}
			for i := range 40 {
				serials = append(serials, []byte{0x40, byte(i)})
			}
			for i, serial := range serials {
				if i%5 == 3 {
					// Due for its first response: none to give.
					if err := tx.MarkOCSPDue("ab", serial, ocspAt); err != nil {
						return err
					}
					continue
				}
				r := testOCSPResponse("ab", serial, byte(i), ocspAt.Add(time.Duration(i)*time.Minute))
				want = append(want, r)
				if err := errors.Join(tx.PutOCSPResponse(r, ocspAt.Add(time.Hour)),
					tx.PutOCSPResponse(testOCSPResponse("a", serial, 0xa, ocspAt), time.Time{}),
					tx.PutOCSPResponse(testOCSPResponse("abc", serial, 0xc, ocspAt), time.Time{})); err != nil {
					return err
				}
			}
			return nil
		})
		slices.SortFunc(want, func(a, b *OCSPResponse) int { return bytes.Compare(a.Serial, b.Serial) })
		page := func(after []byte, limit int) []*OCSPResponse {
			var out []*OCSPResponse
			view(t, s, func(tx *Tx) error {
				return tx.OCSPResponses("ab", after, limit, func(r *OCSPResponse) error { out = append(out, r); return nil })
			})
			return out
		}
		for _, limit := range []int{1, 7, len(want), 1000} {
			var got []*OCSPResponse
			var after []byte
			for pages := 0; ; pages++ {
				p := page(after, limit)
				if len(p) > limit || pages > len(want) {
					t.Fatalf("limit %d: a page of %d", limit, len(p))
				}
				got = append(got, p...)
				if len(p) < limit {
					break
				}
				after = p[len(p)-1].Serial
			}
			if !slices.EqualFunc(got, want, sameOCSPResponse) {
				t.Errorf("pages of %d: %d responses, want %d", limit, len(got), len(want))
			}
		}
		if got := page(nil, 0); !slices.EqualFunc(got, want, sameOCSPResponse) {
			t.Errorf("no limit: %d responses, want %d", len(got), len(want))
		}
		// From a serial that has no response: the ones after it.
		if got := page([]byte{0x01, 0x00, 0x00, 0x00}, 2); len(got) != 2 || !bytes.Equal(got[0].Serial, []byte{0x40, 0x00}) {
			t.Errorf("after a serial with no response: %+v", got)
		}
		if got := page([]byte{0xff, 0xff}, 10); len(got) != 0 {
			t.Errorf("after the last serial: %+v", got)
		}
		if err := s.View(func(tx *Tx) error {
			return tx.OCSPResponses("ab", nil, 10, func(*OCSPResponse) error { return errTest })
		}); !errors.Is(err, errTest) {
			t.Errorf("OCSPResponses with fn failing: %v", err)
		}
	})
}

// TestOCSPReader: a Reader opened beside a named node that writes the
// database (and another process's read-only role, granted only what the
// schema's comment says) reads what the node committed, and a certificate
// without a response as none; it opens beside an unnamed signerd too; it
// refuses a database of an older schema until it is upgraded, and a role
// that may not read the responses.
func TestOCSPReader(t *testing.T) {
	t.Parallel()
	server := pgtest.Shared(t)
	dsn := newPostgresDatabase(t)
	db := pgtest.DatabaseName(t, dsn)
	node := openNode(t, dsn, "n1")
	reader := openReader(t, dsn)
	ctx := t.Context()

	if got, err := reader.OCSPResponse(ctx, "ab", []byte{1}); err != nil || got != nil {
		t.Fatalf("a response of an empty store: %+v, %v", got, err)
	}
	first := testOCSPResponse("ab", []byte{1}, 1, ocspAt)
	update(t, node, func(tx *Tx) error {
		return errors.Join(tx.PutOCSPResponse(first, ocspAt.Add(time.Hour)), tx.MarkOCSPDue("ab", []byte{2}, ocspAt))
	})
	role := "responder_" + db
	server.Exec(t, db, fmt.Sprintf("CREATE ROLE %s LOGIN", role))
	t.Cleanup(func() {
		// Roles are the server's, shared by the package's tests.
		server.Exec(t, db, "DROP OWNED BY "+role)
		server.Exec(t, "postgres", "DROP ROLE "+role)
	})
	roleDSN := strings.Replace(dsn, "user=postgres", "user="+role, 1)
	for _, grant := range []string{"GRANT CONNECT ON DATABASE %[2]s TO %[1]s", "GRANT USAGE ON SCHEMA public TO %[1]s",
		"GRANT SELECT ON schema_migrations TO %[1]s"} {
		server.Exec(t, db, fmt.Sprintf(grant, role, db))
	}
	// Before it may read the responses, it is refused at open.
	if r, err := OpenPostgresReader(roleDSN, ReaderOptions{}); err == nil ||
		!strings.Contains(err.Error(), "read ocsp_responses") || !strings.Contains(err.Error(), "permission denied") {
		if err == nil {
			r.Close()
		}
		t.Fatalf("a reader whose role may not read the responses: %v; want refused, naming the table", err)
	}
	server.Exec(t, db, fmt.Sprintf("GRANT SELECT ON ocsp_responses TO %s", role))
	narrow := openReader(t, roleDSN)
	for _, r := range []*Reader{reader, narrow} {
		for _, tc := range []struct {
			issuer string
			serial []byte
			want   *OCSPResponse
		}{{"ab", []byte{1}, first}, {"ab", []byte{2}, nil}, {"ab", []byte{3}, nil}, {"abc", []byte{1}, nil}} {
			if got, err := r.OCSPResponse(ctx, tc.issuer, tc.serial); err != nil || !sameOCSPResponse(got, tc.want) {
				t.Errorf("reader: response of %s %x: %+v, %v; want %+v", tc.issuer, tc.serial, got, err, tc.want)
			}
		}
		if _, err := r.OCSPResponse(ctx, "", []byte{1}); err == nil {
			t.Error("a response of an empty issuer id was looked up")
		}
	}
	// The role reads nothing else, and writes nothing.
	conn, err := pgx.Connect(ctx, roleDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{"SELECT count(*) FROM certificates", "DELETE FROM ocsp_responses"} {
		if _, err := conn.Exec(ctx, sql); err == nil {
			t.Errorf("the responder's role ran %q", sql)
		}
	}
	// A rolled-back write is never seen; a committed one is, at once.
	second := testOCSPResponse("ab", []byte{1}, 2, ocspAt.Add(time.Hour))
	if err := node.Update(func(tx *Tx) error {
		if err := tx.PutOCSPResponse(second, ocspAt.Add(2*time.Hour)); err != nil {
			return err
		}
		return errTest
	}); !errors.Is(err, errTest) {
		t.Fatal(err)
	}
	if got, err := narrow.OCSPResponse(ctx, "ab", []byte{1}); err != nil || !sameOCSPResponse(got, first) {
		t.Errorf("after a rolled-back write: %+v, %v", got, err)
	}
	update(t, node, func(tx *Tx) error { return tx.PutOCSPResponse(second, ocspAt.Add(2*time.Hour)) })
	if got, err := narrow.OCSPResponse(ctx, "ab", []byte{1}); err != nil || !sameOCSPResponse(got, second) {
		t.Errorf("after the node replaced the response: %+v, %v; want %+v", got, err, second)
	}
	// Beside an unnamed signerd, which has the database to itself as a
	// writer: the readers take no lock it refuses.
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	unnamed, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatalf("open an unnamed signerd beside the readers: %v", err)
	}
	defer unnamed.Close()
	again := openReader(t, dsn)
	if got, err := again.OCSPResponse(ctx, "ab", []byte{1}); err != nil || !sameOCSPResponse(got, second) {
		t.Errorf("a reader opened beside an unnamed signerd: %+v, %v", got, err)
	}

	old := server.CreateDatabase(t)
	oldConn, err := pgx.Connect(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range pgMigrations[:3] {
		if _, err := oldConn.Exec(ctx, m.SQL); err != nil {
			t.Fatal(err)
		}
		if _, err := oldConn.Exec(ctx, "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", m.Version, m.Description); err != nil {
			t.Fatal(err)
		}
	}
	oldConn.Close(ctx)
	if r, err := OpenPostgresReader(old, ReaderOptions{}); err == nil || !strings.Contains(err.Error(), "schema version 3") {
		if err == nil {
			r.Close()
		}
		t.Fatalf("a reader of a version 3 database: %v; want refused, naming its version", err)
	}
	mustUpgrade(t, old)
	openReader(t, old)
}

func openReader(t *testing.T, dsn string) *Reader {
	t.Helper()
	r, err := OpenPostgresReader(dsn, ReaderOptions{})
	if err != nil {
		t.Fatalf("open reader: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestOCSPReaderServerRestart: a Reader whose server stops reads
// ErrUnavailable, and once the server is back reads again at the first
// request, every pooled connection broken by the restart notwithstanding.
func TestOCSPReaderServerRestart(t *testing.T) {
	t.Parallel()
	server := pgtest.Start(t)
	dsn := server.CreateDatabase(t)
	mustUpgrade(t, dsn)
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := testOCSPResponse("ab", []byte{1}, 1, ocspAt)
	update(t, s, func(tx *Tx) error { return tx.PutOCSPResponse(r, ocspAt.Add(time.Hour)) })
	s.Close()
	reader, err := OpenPostgresReader(dsn, ReaderOptions{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	// Every pooled connection in use at once, so that all are broken by
	// the restart.
	errs := make(chan error, 4)
	for range 4 {
		go func() { _, err := reader.OCSPResponse(t.Context(), "ab", []byte{1}); errs <- err }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	server.Stop(t)
	if got, err := reader.OCSPResponse(t.Context(), "ab", []byte{1}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("with the server down: %+v, %v; want ErrUnavailable", got, err)
	}
	server.Restart(t)
	for i := range 4 {
		if got, err := reader.OCSPResponse(t.Context(), "ab", []byte{1}); err != nil || !sameOCSPResponse(got, r) {
			t.Errorf("read %d after the restart: %+v, %v", i, got, err)
		}
	}
}

// TestPostgresUpgradeFromVersion3: a database an older signerd wrote at
// version 3 is refused at open, upgraded by migration 4 alone, and then
// opens with its records as they were and takes OCSP records, which the
// operators' view shows and verify finds whole.
func TestPostgresUpgradeFromVersion3(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.Shared(t).CreateDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, m := range pgMigrations[:3] {
		if _, err := conn.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)", m.Version, m.Description); err != nil {
			t.Fatal(err)
		}
	}
	// Written through the records as version 3 left them.
	b := &pgBackend{where: "version 3"}
	r := &pgRecords{ctx: ctx, b: b, conn: conn, kind: ErrWrite, pending: map[string]map[string]pgWrite{}}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	v3 := &Tx{r: r}
	c := fakeCertificate("ab", []byte{0x42})
	if err := errors.Join(v3.ReserveSerial(c.Serial, "r-1"), v3.PutCertificate(c), v3.SetSerialState(c.Serial, SerialIssued),
		v3.PutCRLShardState("ab", 1, CRLState{Next: 3})); err != nil {
		t.Fatal(err)
	}
	if err := r.commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPostgres(dsn, PostgresOptions{}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("schema version 3; this signerd reads version %d", pgSchemaVersionLatest)) {
		t.Fatalf("open of a version 3 database: %v; want refused, naming the upgrade", err)
	}
	applied, err := UpgradePostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 || applied[0].Version != 4 {
		t.Fatalf("upgrade from version 3 applied %v, want migration 4 alone", applied)
	}
	s, err := OpenPostgres(dsn, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp := testOCSPResponse("ab", c.Serial, 1, ocspAt)
	update(t, s, func(tx *Tx) error {
		if st, err := tx.CRLShardState("ab", 1); err != nil || st.Next != 3 {
			return fmt.Errorf("the version 3 shard state: %+v, %v", st, err)
		}
		if got, err := tx.Certificate(c.Serial); err != nil || got.Issuer != "ab" {
			return fmt.Errorf("the version 3 certificate: %+v, %v", got, err)
		}
		return errors.Join(tx.PutOCSPResponse(resp, ocspAt.Add(time.Hour)), tx.MarkOCSPDue("ab", []byte{0x43}, ocspAt))
	})
	if rep, err := VerifyPostgres(ctx, dsn); err != nil || !rep.OK() || rep.Schema != 4 || rep.OCSPResponses != 2 || rep.OCSPDue != 2 {
		t.Fatalf("verify after the upgrade: %+v, %v", rep, err)
	}
	rows, err := conn.Query(ctx, "SELECT issuer, serial, this_update, next_update, due_at, der FROM ocsp_response_records ORDER BY serial")
	if err != nil {
		t.Fatal(err)
	}
	type shown struct {
		Issuer, Serial                string
		ThisUpdate, NextUpdate, DueAt *time.Time
		DER                           []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[shown])
	if err != nil {
		t.Fatal(err)
	}
	at := func(t time.Time) *time.Time { return &t }
	want := []shown{{"ab", "42", at(ocspAt), at(resp.NextUpdate), at(ocspAt.Add(time.Hour)), resp.DER}, {"ab", "43", nil, nil, at(ocspAt), nil}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		if len(got) != 2 || !got[0].ThisUpdate.Equal(*want[0].ThisUpdate) || !got[0].DueAt.Equal(*want[0].DueAt) ||
			!bytes.Equal(got[0].DER, resp.DER) || got[1].ThisUpdate != nil || got[1].DER != nil || !got[1].DueAt.Equal(ocspAt) {
			t.Errorf("ocsp_response_records shows %+v; want %+v", got, want)
		}
	}
	// A damaged key shows as a row without issuer or serial, not as an
	// error of the whole view.
	if _, err := conn.Exec(ctx, "INSERT INTO ocsp_responses (k, v) VALUES ('\\x6162'::bytea, '\\x01'::bytea)"); err != nil {
		t.Fatal(err)
	}
	var damaged int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ocsp_response_records WHERE issuer IS NULL AND serial IS NULL").Scan(&damaged); err != nil || damaged != 1 {
		t.Errorf("ocsp_response_records with a damaged key: %d rows without issuer, %v", damaged, err)
	}
}

// TestVerifyNamesBadOCSPRecords: on each engine, an OCSP record or due
// entry that does not decode under its key, a second due entry for a
// certificate, a due entry no record names and a record whose due entry
// is missing are findings naming the table and the key; the healthy
// store has none.
func TestVerifyNamesBadOCSPRecords(t *testing.T) {
	dueKey := func(at time.Time, issuer string, serial []byte) string {
		return string(ocspDueKey(at, []byte(issuer+"\x00"+string(serial))))
	}
	record := func(rec ocspRecord) string { return string(rec.encode()) }
	cases := []struct {
		name            string
		table, key, val string
		delete          bool
		want            Finding
	}{
		{"due key without a zero byte after the time", tableOCSPDue, dueKey(ocspAt, "ab", []byte{1})[:8] + "xab\x00\x01", "", false,
			Finding{Bucket: "ocsp-due", Problem: "malformed key"}},
		{"due key of time zero", tableOCSPDue, "\x00\x00\x00\x00\x00\x00\x00\x00\x00ab\x00\x01", "", false,
			Finding{Bucket: "ocsp-due", Key: "key 000000000000000000616200" + "01", Problem: "malformed key"}},
		{"due key without a serial", tableOCSPDue, dueKey(ocspAt, "ab", nil), "", false,
			Finding{Bucket: "ocsp-due", Problem: "malformed key"}},
		{"a second due entry", tableOCSPDue, dueKey(ocspAt.Add(time.Minute), "ab", []byte{1}), "", false,
			Finding{Bucket: "ocsp-due", Key: `issuer "ab" serial 01 due 2026-07-01T12:01:00Z`, Problem: "names another due time"}},
		{"a due entry of no record", tableOCSPDue, dueKey(ocspAt, "ab", []byte{7}), "", false,
			Finding{Bucket: "ocsp-due", Key: `issuer "ab" serial 07 due 2026-07-01T12:00:00Z`, Problem: "has none"}},
		{"a due entry with a value", tableOCSPDue, dueKey(ocspAt.Add(time.Hour), "ab", []byte{1}), "x", false,
			Finding{Bucket: "ocsp-due", Problem: "due entries hold none"}},
		{"a record's due entry missing", tableOCSPDue, dueKey(ocspAt.Add(time.Hour), "ab", []byte{1}), "", true,
			Finding{Bucket: "ocsp-responses", Key: `issuer "ab" serial 01`, Problem: "the due entry is missing"}},
		{"record of another format", tableOCSPResponses, "ab\x00\x03", "\x02" + record(ocspRecord{dueAt: ocspAt})[1:], false,
			Finding{Bucket: "ocsp-responses", Key: `issuer "ab" serial 03`, Problem: "record format 2"}},
		{"record too short", tableOCSPResponses, "ab\x00\x03", "\x01\x00", false,
			Finding{Bucket: "ocsp-responses", Key: `issuer "ab" serial 03`, Problem: "does not decode"}},
		{"record of neither", tableOCSPResponses, "ab\x00\x03", record(ocspRecord{}), false,
			Finding{Bucket: "ocsp-responses", Problem: "neither a response nor a due time"}},
		{"response that is no DER", tableOCSPResponses, "ab\x00\x03", record(ocspRecord{thisUpdate: ocspAt, der: []byte("not DER")}), false,
			Finding{Bucket: "ocsp-responses", Key: `issuer "ab" serial 03`, Problem: "not one DER SEQUENCE"}},
		{"response key without a serial", tableOCSPResponses, "ab\x00", record(ocspRecord{thisUpdate: ocspAt, der: []byte{0x30, 0x00}}), false,
			Finding{Bucket: "ocsp-responses", Key: "key 616200", Problem: "malformed key"}},
	}
	forEachEngine(t, func(t *testing.T, e engine) {
		healthy := func(t *testing.T) string {
			t.Helper()
			where := e.create(t)
			s := e.open(t, where)
			update(t, s, func(tx *Tx) error {
				return errors.Join(tx.PutOCSPResponse(testOCSPResponse("ab", []byte{1}, 1, ocspAt), ocspAt.Add(time.Hour)),
					tx.MarkOCSPDue("ab", []byte{2}, ocspAt), tx.PutOCSPResponse(testOCSPResponse("cd", []byte{1}, 1, ocspAt), time.Time{}))
			})
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return where
		}
		if r, err := verifyAt(e, healthy(t)); err != nil || !r.OK() || r.OCSPResponses != 3 || r.OCSPDue != 2 {
			t.Fatalf("healthy store: %+v, %v", r, err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				where := healthy(t)
				e.edit(t, where, func(r records) error {
					if tc.delete {
						return r.delete(tc.table, []byte(tc.key))
					}
					return r.put(tc.table, []byte(tc.key), []byte(tc.val))
				})
				r, err := verifyAt(e, where)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(r.Findings, func(f Finding) bool {
					return f.Bucket == tc.want.Bucket && (tc.want.Key == "" || f.Key == tc.want.Key) && strings.Contains(f.Problem, tc.want.Problem)
				}) {
					t.Errorf("findings %v; want one like %v", r.Findings, tc.want)
				}
			})
		}
	})
}
