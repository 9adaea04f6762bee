package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"signerd/audit"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestAuditExportOfNodes: three nodes share one PostgreSQL store, each
// with its own token holding the CA's issuing key (copies of one token,
// as restored key backups give). Nodes a and b issue and seal, each with
// its own audit key; node c issues without ever sealing. An export from a
// holds a's chain up to its export seal and b's up to b's last seal, with
// b's unsealed events counted, names c's chain as not included and why,
// and verifies against the root; b's section is b's chain byte for byte.
// An event of b's chain edited in the database makes the next export
// from a fail verification, naming node b and that event.
func TestAuditExportOfNodes(t *testing.T) {
	cas := enginetest.NewNodeCAs(t, 3)
	db := enginetest.NewPostgresStore(t)
	cfg := func(ca *enginetest.CA) engine.Config {
		return engine.Config{AuditKey: auditKey(t, ca), SealEvery: 4, SealInterval: time.Hour}
	}
	atB := db.Node("b")
	stA, stB, stC := db.Node("a").Open(t), atB.Open(t), db.Node("c").Open(t)
	ea, eb := cas[0].Engine(t, stA, cfg(cas[0])), cas[1].Engine(t, stB, cfg(cas[1]))
	ec := cas[2].Engine(t, stC, engine.Config{}) // no audit key: it never seals

	for i := range 6 {
		for _, n := range []struct {
			name string
			e    *engine.Engine
			st   *store.Store
		}{{"a", ea, stA}, {"b", eb, stB}} {
			c := issue(t, n.e, request(t, fmt.Sprintf("%s-%d", n.name, i)))
			if i%2 == 0 {
				if _, err := n.e.Revoke(ra, c.Serial, 1); err != nil {
					t.Fatal(err)
				}
			}
			waitSealed(t, n.st)
		}
	}
	issue(t, ec, request(t, "c-0"))
	// An event b has not sealed yet: its section must stop before it.
	if err := eb.Audit(store.Event{Actor: store.System, Action: "test.unsealed", Outcome: store.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	bSeal, bHead := lastSealAndHead(t, stB)
	_, cHead := lastSealAndHead(t, stC)

	var buf bytes.Buffer
	x, err := ea.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	bundle := buf.Bytes()
	rep := audit.Verify(bundle, audit.Options{Root: cas[0].Root})
	if !rep.OK() {
		t.Fatalf("bundle of nodes a and b: %v", rep.Problems)
	}
	if rep.Header.Format != audit.FormatChains || len(rep.Sections) != 2 || rep.Sections[0].Node != "a" || rep.Sections[1].Node != "b" {
		t.Fatalf("format %q, sections %+v", rep.Header.Format, rep.Sections)
	}
	a, b := rep.Sections[0].Header, rep.Sections[1].Header
	aEvents := events(t, stA)
	if a.First != 1 || a.Last != x.Last || !strings.HasPrefix(aEvents[a.Last-1].Reason, "audit export") {
		t.Fatalf("a's section %d-%d, the export's seal %+v", a.First, a.Last, aEvents[a.Last-1])
	}
	if b.First != 1 || b.Last != bSeal || b.Unsealed != bHead-bSeal || b.Unsealed == 0 || rep.Sections[1].Seals < 2 {
		t.Fatalf("b's section %d-%d with %d unsealed after and %d seals; b's last seal %d, head %d",
			b.First, b.Last, b.Unsealed, rep.Sections[1].Seals, bSeal, bHead)
	}
	// Each node's seals are by its own key; both keys are certified in
	// b's header, whose signer is a's.
	if len(rep.Keys) != 2 || len(b.Keys) != 2 || len(a.Keys) != 1 {
		t.Fatalf("%d keys in all, %d in a's header, %d in b's", len(rep.Keys), len(a.Keys), len(b.Keys))
	}
	if len(rep.Omitted) != 1 || rep.Omitted[0].Node != "c" || !strings.Contains(rep.Omitted[0].Omitted, "never sealed") ||
		!strings.Contains(rep.Omitted[0].Omitted, fmt.Sprintf("%d events", cHead)) {
		t.Fatalf("omitted %+v, want node c's chain, never sealed, with its %d events", rep.Omitted, cHead)
	}
	var bLines [][]byte
	for _, line := range bytes.Split(bundle, []byte("\n"))[rep.Sections[1].Line:] {
		if len(line) > 0 {
			bLines = append(bLines, line)
		}
	}
	if stored := storedEvents(t, stB, "b", b.Last); !slices.EqualFunc(bLines, stored, bytes.Equal) {
		t.Fatalf("b's section holds %d lines, not b's %d stored events through %d", len(bLines), len(stored), b.Last)
	}
	exp := events(t, stA)[len(events(t, stA))-1]
	if exp.Action != "audit.export" || !strings.Contains(exp.Detail, fmt.Sprintf("node b events 1-%d (%d unsealed after)", b.Last, b.Unsealed)) ||
		!strings.Contains(exp.Detail, "node c not included (never sealed") {
		t.Fatalf("export event %+v", exp)
	}

	t.Run("window", func(t *testing.T) {
		// From the middle of b's chain: each section reaches back to a
		// seal before it.
		mid := events(t, stB)[int(bSeal)/2]
		var buf bytes.Buffer
		if _, err := ea.ExportAudit(context.Background(), auditor, mid.Time, time.Time{}, &buf); err != nil {
			t.Fatal(err)
		}
		rep := audit.Verify(buf.Bytes(), audit.Options{Root: cas[0].Root})
		if !rep.OK() || len(rep.Sections) != 2 {
			t.Fatalf("window from b's event %d: %d sections, %v", mid.Seq, len(rep.Sections), rep.Problems)
		}
		if b := rep.Sections[1].Header; b.First == 1 || b.First > mid.Seq || b.Last != bSeal {
			t.Fatalf("window from b's event %d: b's section %d-%d", mid.Seq, b.First, b.Last)
		}
	})

	t.Run("b's event edited", func(t *testing.T) {
		const edited = 5
		atB.EditNodeAuditEvent(t, "b", edited, func(v []byte) []byte {
			return bytes.Replace(v, []byte(`"outcome":"ok"`), []byte(`"outcome":"OK"`), 1)
		})
		var buf bytes.Buffer
		if _, err := ea.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf); err != nil {
			t.Fatal(err)
		}
		rep := audit.Verify(buf.Bytes(), audit.Options{Root: cas[0].Root})
		node, seq, named := rep.FirstBadEvent()
		if rep.OK() || !named || node != "b" || seq != edited {
			t.Fatalf("first bad event %q %d (named %v), want node b's %d: %v", node, seq, named, edited, rep.Problems)
		}
		for _, p := range rep.Problems {
			if p.Node != "b" || !strings.HasPrefix(p.String(), fmt.Sprintf("node b: event %d ", edited)) {
				t.Fatalf("problem %q, want one of node b's event %d", p, edited)
			}
		}
		if _, bad := rep.FirstBadIn(rep.Sections[0]); bad {
			t.Fatalf("a's chain blamed: %v", rep.Problems)
		}
	})
}

// lastSealAndHead are the sequence numbers of the last seal (0 if none)
// and the last event of st's own chain.
func lastSealAndHead(t *testing.T, st *store.Store) (seal, head uint64) {
	t.Helper()
	if err := st.View(func(tx *store.Tx) error {
		var err error
		if head, _, err = tx.AuditHead(); err != nil {
			return err
		}
		last, err := tx.LastSeal()
		if last != nil {
			seal = last.Seq
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return seal, head
}

// storedEvents are the stored bytes of node's events 1 to through.
func storedEvents(t *testing.T, st *store.Store, node string, through uint64) [][]byte {
	t.Helper()
	var out [][]byte
	if err := st.View(func(tx *store.Tx) error {
		return tx.Chain(node).Events(1, func(ev store.Event, b []byte) error {
			if ev.Seq <= through {
				out = append(out, bytes.Clone(b))
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
