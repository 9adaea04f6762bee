package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"signerd/store/pgtest"
)

// testLease keeps the waits of these tests short.
const testLease = 600 * time.Millisecond

func openNode(t *testing.T, dsn, node string) *Store {
	t.Helper()
	s, err := OpenPostgres(dsn, PostgresOptions{Node: node, NodeLease: testLease})
	if err != nil {
		t.Fatalf("open as node %q: %v", node, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendEvents(t *testing.T, s *Store, n int, action string) {
	t.Helper()
	for i := range n {
		update(t, s, func(tx *Tx) error {
			_, err := tx.Append(Event{Actor: System, Action: action, Object: fmt.Sprint(i), Outcome: OutcomeOK})
			return err
		})
	}
}

func TestNodesKeepTheirOwnChains(t *testing.T) {
	dsn := newPostgresDatabase(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		wg.Go(func() { appendEvents(t, s, 20, "by."+s.Node()) })
	}
	wg.Wait()
	for _, s := range []*Store{a, b} {
		view(t, s, func(tx *Tx) error {
			seq, _, err := tx.AuditHead()
			if err != nil || seq != 20 {
				t.Errorf("node %s: head %d, %v; want 20", s.Node(), seq, err)
			}
			if err := tx.VerifyAuditChain(); err != nil {
				t.Errorf("node %s: %v", s.Node(), err)
			}
			return tx.Events(1, func(e Event, _ []byte) error {
				if e.Action != "by."+s.Node() {
					t.Errorf("node %s's chain holds event %d %q", s.Node(), e.Seq, e.Action)
				}
				return nil
			})
		})
	}
	view(t, a, func(tx *Tx) error {
		nodes, err := tx.AuditChains()
		if !slices.Equal(nodes, []string{"a", "b"}) {
			t.Errorf("chains %q, %v; want a and b", nodes, err)
		}
		seq, _, err := tx.Chain("b").AuditHead()
		if seq != 20 {
			t.Errorf("node b's head read from a: %d, %v", seq, err)
		}
		if _, err := tx.Chain("b").Append(Event{Action: "x"}); err == nil {
			t.Error("appended to another node's chain")
		}
		return nil
	})
	r, err := VerifyPostgres(t.Context(), dsn)
	if err != nil || !r.OK() || len(r.Chains) != 2 || r.Chains[0].Events != 20 || r.Chains[1].AuditHead != 20 {
		t.Fatalf("verify: %+v, %v", r, err)
	}
	// A key of no chain is a finding, and counted as no chain's event.
	pgtest.Shared(t).Exec(t, pgtest.DatabaseName(t, dsn), `INSERT INTO audit (k, v) VALUES ('\x2a01'::bytea, '{}'::bytea)`)
	r, err = VerifyPostgres(t.Context(), dsn)
	if err != nil || r.OK() || r.Events != 0 || len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Problem, "no audit chain's") {
		t.Fatalf("verify with a stray audit key: events %d, findings %+v, %v", r.Events, r.Findings, err)
	}
}

func TestNodeFindsOnlyItsOwnRequestsInFlight(t *testing.T) {
	dsn := newPostgresDatabase(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	for _, s := range []*Store{a, b} {
		update(t, s, func(tx *Tx) error {
			return tx.PutRequest(&Request{ID: "req-" + s.Node(), State: RequestSigning, Serial: []byte(s.Node())})
		})
	}
	for _, s := range []*Store{a, b} {
		view(t, s, func(tx *Tx) error {
			in, err := tx.InFlight()
			if err != nil || len(in) != 1 || in[0].ID != "req-"+s.Node() {
				t.Errorf("node %s in flight: %v, %v", s.Node(), in, err)
			}
			return nil
		})
	}
}

func TestNodeNameIsHeldByOneProcess(t *testing.T) {
	dsn := newPostgresDatabase(t)
	first := openNode(t, dsn, "a")
	if first.Claim().Generation != 1 {
		t.Errorf("first claim: %+v", first.Claim())
	}
	if s, err := OpenPostgres(dsn, PostgresOptions{Node: "a", NodeLease: testLease}); !errors.Is(err, ErrNodeInUse) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("second process as node a: %v; want ErrNodeInUse", err)
	}
	// The unnamed node has the database to itself.
	if s, err := OpenPostgres(dsn, PostgresOptions{}); err == nil || !strings.Contains(err.Error(), "in use") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("unnamed signerd beside node a: %v; want refused", err)
	}
	appendEvents(t, first, 1, "still.writes")
	first.Close()
	start := time.Now()
	next := openNode(t, dsn, "a")
	if waited := time.Since(start); waited >= testLease {
		t.Errorf("a released name was taken after %v: want at once", waited)
	}
	if c := next.Claim(); c.Generation != 2 || c.TakenFrom != "" {
		t.Errorf("claim after a release: %+v; want generation 2, taken from nobody", c)
	}
	appendEvents(t, next, 1, "next.writes")
	view(t, next, func(tx *Tx) error {
		if seq, _, _ := tx.AuditHead(); seq != 2 {
			t.Errorf("node a's chain after the handover ends at %d, want 2", seq)
		}
		return nil
	})
}

// A process configured with a shorter lease than the holder's watches
// for the holder's: it finds the name in use rather than taking it over
// between two of the holder's renewals.
func TestNodeWatchesForTheHoldersLease(t *testing.T) {
	dsn := newPostgresDatabase(t)
	holder, err := OpenPostgres(dsn, PostgresOptions{Node: "a", NodeLease: 10 * testLease})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	// The holder renews after a third of its lease, long after this
	// process's own lease would have ended.
	if s, err := OpenPostgres(dsn, PostgresOptions{Node: "a", NodeLease: testLease}); !errors.Is(err, ErrNodeInUse) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("a process with a shorter lease than the holder's: %v; want ErrNodeInUse", err)
	}
	appendEvents(t, holder, 1, "still.writes")
}

// A process frozen while another takes its name over writes nothing
// more when it resumes. The freeze is the end of its renewals (signerd's
// own tests freeze a real process with SIGSTOP).
func TestFrozenNodeIsFencedAfterTakeover(t *testing.T) {
	dsn := newPostgresDatabase(t)
	frozen := openNode(t, dsn, "a")
	appendEvents(t, frozen, 3, "before.freeze")
	freezeRenewals(frozen)
	taker := openNode(t, dsn, "a")
	if c := taker.Claim(); c.Generation != 2 || c.TakenFrom == "" {
		t.Errorf("takeover claim: %+v; want generation 2 taken from the frozen holder", c)
	}
	appendEvents(t, taker, 2, "after.takeover")
	for i := range 2 {
		err := frozen.Update(func(tx *Tx) error {
			_, err := tx.Append(Event{Action: "from.the.frozen"})
			return err
		})
		if !errors.Is(err, ErrNodeTakenOver) || !errors.Is(err, ErrWrite) {
			t.Fatalf("write %d by the resumed holder: %v; want ErrNodeTakenOver", i, err)
		}
	}
	view(t, taker, func(tx *Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			t.Error(err)
		}
		return tx.Events(1, func(e Event, _ []byte) error {
			if e.Action == "from.the.frozen" {
				t.Errorf("event %d written by the fenced process", e.Seq)
			}
			return nil
		})
	})
	// Closing the fenced store does not release the taker's name.
	frozen.Close()
	appendEvents(t, taker, 1, "after.close")
}

func TestNodeNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"node-1", true}, {"x23456789012345678901234567890ab", true},
		{"", false}, {"1a", false}, {"A", false}, {"a/b", false}, {"a@b", false}, {"a b", false},
		{"x23456789012345678901234567890abc", false},
	} {
		if err := ValidNodeName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidNodeName(%q) = %v", tc.name, err)
		}
	}
}

func TestChainKeys(t *testing.T) {
	for _, c := range []chain{{}, {"a"}, {"node-7"}} {
		k := c.eventKey(258)
		if got, ok := chainOfEventKey(k); !ok || got != c {
			t.Errorf("%s: key %x read as %v, %v", c, k, got, ok)
		}
		if seq, ok := c.seqOf(k); !ok || seq != 258 {
			t.Errorf("%s: key %x: seq %d, %v", c, k, seq, ok)
		}
		for _, other := range []chain{{}, {"a"}, {"ab"}} {
			if other != c && strings.HasPrefix(string(k), string(other.eventPrefix())) {
				t.Errorf("%s's key %x is under %s's prefix", c, k, other)
			}
		}
	}
	for _, k := range []string{"\x01\x00\x00\x00\x00\x00\x00\x01", "@a\x00\x00\x00\x00\x00\x00\x00\x01", "@A/\x00\x00\x00\x00\x00\x00\x00\x01", "@a/\x00\x01"} {
		if c, ok := chainOfEventKey([]byte(k)); ok {
			t.Errorf("key %q read as %s's", k, c)
		}
	}
}

// freezeRenewals stops s's renewals as a frozen process's stop, leaving
// its claim in place.
func freezeRenewals(s *Store) {
	close(s.node.stop)
	<-s.node.done
	s.node.once.Do(func() {}) // Close must not release what it no longer renews
}

// The index marks follow whichever node wrote last: alternating nodes do
// not make each other rebuild the indexes.
func TestIndexMarksAcrossNodes(t *testing.T) {
	dsn := newPostgresDatabase(t)
	a, b := openNode(t, dsn, "a"), openNode(t, dsn, "b")
	for i, s := range []*Store{a, b, a, b} {
		update(t, s, func(tx *Tx) error {
			if err := tx.PutCertificate(&Certificate{Serial: []byte{byte(i + 1)}, DER: []byte("der"), Issuer: "ab", Status: StatusGood}); err != nil {
				return err
			}
			tx.NoteCompromisedKeysWhole()
			_, err := tx.Append(Event{Action: "certificate.issue"})
			return err
		})
		for _, reader := range []*Store{a, b} {
			view(t, reader, func(tx *Tx) error {
				for _, mark := range [][]byte{keyKeyIndexAtHead, keyCompromisedAtHead} {
					if current, err := markCurrent(tx, mark); err != nil || !current {
						t.Errorf("after write %d by %s, %s reads mark %s as current=%v, %v", i, s.Node(), reader.Node(), mark, current, err)
					}
				}
				return nil
			})
		}
	}
	// The chain a mark names moving without it (a writer that kept no
	// index) makes it stale.
	raw := mustGet(t, b, tableMeta, keyKeyIndexAtHead)
	named := markChain(raw).node
	if named != "a" && named != "b" {
		t.Fatalf("mark %q names %q, not a node that wrote", raw, named)
	}
	if err := b.b.update(func(r records) error {
		_, err := (&Tx{r: r, chain: chain{named}}).Append(Event{Action: "kept.no.index"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Seen from the node it names (a mark naming another node's chain
	// is taken as current: every writer of a store with nodes keeps the
	// indexes).
	owner := map[string]*Store{"a": a, "b": b}[named]
	view(t, owner, func(tx *Tx) error {
		if current, err := markCurrent(tx, keyKeyIndexAtHead); err != nil || current {
			t.Errorf("mark after its chain moved without it: current=%v, %v", current, err)
		}
		return nil
	})
}

func mustGet(t *testing.T, s *Store, table string, key []byte) (v []byte) {
	t.Helper()
	view(t, s, func(tx *Tx) (err error) {
		v, err = tx.r.get(table, key)
		return err
	})
	return v
}

// The operators' views read every node's events and claims.
func TestPostgresViewsShowNodes(t *testing.T) {
	dsn := newPostgresDatabase(t)
	a := openNode(t, dsn, "node-a")
	appendEvents(t, a, 3, "by.a")
	server := pgtest.Shared(t)
	server.Exec(t, pgtest.DatabaseName(t, dsn),
		`DO $$ BEGIN
		IF (SELECT count(*) FROM audit_events WHERE node = 'node-a' AND seq BETWEEN 1 AND 3 AND event->>'action' = 'by.a') <> 3
		THEN RAISE 'audit_events does not show node-a''s events: %', (SELECT json_agg(audit_events) FROM audit_events); END IF;
		IF (SELECT (claim->>'generation')::int FROM node_claims WHERE node = 'node-a') IS DISTINCT FROM 1
		THEN RAISE 'node_claims does not show node-a''s claim'; END IF;
		END $$`)
}

// TestNodeClaimRace: several processes start at once with one node name,
// on a name never claimed and on one released: exactly one holds it.
func TestNodeClaimRace(t *testing.T) {
	for _, released := range []bool{false, true} {
		dsn := newPostgresDatabase(t)
		if released {
			openNode(t, dsn, "a").Close()
		}
		const n = 4
		var wg sync.WaitGroup
		stores := make([]*Store, n)
		for i := range n {
			wg.Go(func() {
				s, err := OpenPostgres(dsn, PostgresOptions{Node: "a", NodeLease: testLease})
				if err == nil {
					stores[i] = s
				}
			})
		}
		wg.Wait()
		held := 0
		for _, s := range stores {
			if s != nil {
				held++
				defer s.Close()
			}
		}
		if held != 1 {
			t.Errorf("released %v: %d of %d processes hold node a, want 1", released, held, n)
		}
	}
}
