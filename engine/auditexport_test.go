package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"signerd/api"
	"signerd/audit"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

var auditor = store.Actor{UID: 1003, GID: 1003, PID: 42, Role: "auditor"}

// exportRun issues and revokes through an engine sealing every 4 events,
// on a store of se, and returns it with the store, the CA and a full
// export.
func exportRun(t *testing.T, se enginetest.StoreEngine) (*engine.Engine, *store.Store, *enginetest.CA, []byte) {
	t.Helper()
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: auditKey(t, ca), SealEvery: 4, SealInterval: time.Hour})
	for i := range 6 {
		_, csr := enginetest.NewCSR(t)
		c, err := e.Issue(context.Background(), ra, engine.Request{ID: fmt.Sprintf("export-%d", i), Profile: "person-sign",
			Subject: engine.Subject{CommonName: "张三"}, CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := e.Revoke(ra, c.Serial, 1); err != nil {
				t.Fatal(err)
			}
		}
		waitSealed(t, st)
	}
	var buf bytes.Buffer
	if _, err := e.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf); err != nil {
		t.Fatal(err)
	}
	return e, st, ca, buf.Bytes()
}

// waitSealed waits until the sealer has caught up (fewer than SealEvery
// events unsealed), so the log holds seals in its middle.
func waitSealed(t *testing.T, st *store.Store) {
	t.Helper()
	for range 200 {
		evs := events(t, st)
		n := 0
		for i := len(evs) - 1; i >= 0 && evs[i].Seal == nil; i-- {
			n++
		}
		if n < 4 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the sealer did not seal")
}

// TestAuditExport runs on each store engine.
func TestAuditExport(t *testing.T) { onEachStore(t, testAuditExport) }

func testAuditExport(t *testing.T, se enginetest.StoreEngine) {
	e, st, ca, bundle := exportRun(t, se)

	rep := audit.Verify(bundle, audit.Options{Root: ca.Root})
	if !rep.OK() || !rep.Anchored {
		t.Fatalf("bundle from a real run: anchored %v, problems %v", rep.Anchored, rep.Problems)
	}
	// The unnamed chain alone: one section, in the format bundles had
	// before nodes, so verifiers of that format read it.
	header, _, _ := bytes.Cut(bundle, []byte("\n"))
	if rep.Header.Format != audit.Format || len(rep.Sections) != 1 || bytes.Contains(header, []byte(`"node"`)) ||
		bytes.Contains(header, []byte(`"chains"`)) || bytes.Count(bundle, []byte(`{"header":`)) != 1 {
		t.Fatalf("bundle of the unnamed chain: format %q, %d sections, header %s", rep.Header.Format, len(rep.Sections), header)
	}
	all := events(t, st)
	last := rep.Events[len(rep.Events)-1].Event
	if rep.Header.First != 1 || last.Action != "audit.seal" || !strings.HasPrefix(last.Reason, "audit export") || rep.Seals < 3 {
		t.Fatalf("bundle %d..%d, %d seals, ends with %+v", rep.Header.First, rep.Header.Last, rep.Seals, last)
	}
	// The export is audited after its seal, with the bundle's hash.
	exp := all[len(all)-1]
	sum := sm3.Sum(bundle)
	if exp.Action != "audit.export" || exp.Actor.UID != auditor.UID || !strings.Contains(exp.Detail, fmt.Sprintf("%x", sum)) ||
		exp.Object != fmt.Sprintf("events 1-%d", last.Seq) {
		t.Fatalf("export event %+v", exp)
	}
	// The audit key's certificate is an ordinary record of the store (out
	// of the RA's reach), and OpenSSL accepts it under the root.
	if len(rep.Keys) != 1 {
		t.Fatalf("%d audit keys", len(rep.Keys))
	}
	var c *store.Certificate
	err := st.View(func(tx *store.Tx) error {
		var err error
		c, err = tx.Certificate(rep.Keys[0].SerialNumber.Bytes())
		return err
	})
	if err != nil || c.Profile != "signerd-audit-key" {
		t.Fatalf("audit key certificate record %+v, %v", c, err)
	}
	if _, err := e.Status(c.Serial); engine.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("status of the audit key's certificate: %v, want not_found", err)
	}
	ca.OpenSSLVerify(t, rep.Keys[0].Raw)

	// Another root does not anchor it.
	if rep := audit.Verify(bundle, audit.Options{Root: enginetest.SoftwareRoot(t)}); rep.OK() || rep.Anchored {
		t.Fatalf("bundle anchored under another root: %v", rep.Problems)
	}

	t.Run("window", func(t *testing.T) {
		// From the middle of the log: the bundle reaches back to a seal.
		mid := all[len(all)/2]
		var buf bytes.Buffer
		x, err := e.ExportAudit(context.Background(), auditor, mid.Time, time.Time{}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		rep := audit.Verify(buf.Bytes(), audit.Options{Root: ca.Root})
		first := rep.Events[0].Event
		if !rep.OK() || first.Seal == nil || first.Seq > mid.Seq || x.First != first.Seq || first.Seq == 1 {
			t.Fatalf("window from event %d: bundle from %+v, problems %v", mid.Seq, first, rep.Problems)
		}
		// Until a time before the export: the bundle ends at the first
		// seal after it, not at the export.
		buf.Reset()
		if _, err := e.ExportAudit(context.Background(), auditor, time.Time{}, all[3].Time, &buf); err != nil {
			t.Fatal(err)
		}
		rep = audit.Verify(buf.Bytes(), audit.Options{Root: ca.Root})
		end := rep.Events[len(rep.Events)-1].Event
		if !rep.OK() || end.Seal == nil || end.Seq >= last.Seq || end.Time.Before(all[3].Time) {
			t.Fatalf("window until event 4: bundle ends with %+v, problems %v", end, rep.Problems)
		}
		if _, err := e.ExportAudit(context.Background(), auditor, mid.Time, all[0].Time, &buf); engine.CodeOf(err) != api.CodeBadRequest {
			t.Fatalf("until before since: %v", err)
		}
	})
}

// TestAuditExportTampering checks the bundle alone: one engine's will do.
func TestAuditExportTampering(t *testing.T) {
	_, _, ca, bundle := exportRun(t, enginetest.BoltStore)
	lines := bytes.SplitAfter(bytes.TrimSuffix(bundle, []byte("\n")), []byte("\n"))
	seqOf := make([]uint64, len(lines)) // event on each line; 0 for the header
	rep := audit.Verify(bundle, audit.Options{Root: ca.Root})
	for i, r := range rep.Events {
		seqOf[i+1] = r.Event.Seq
	}
	join := func(ls [][]byte) []byte { return bytes.Join(ls, nil) }
	without := func(i int) []byte { return join(append(append([][]byte{}, lines[:i]...), lines[i+1:]...)) }
	// check wants the bundle refused with the first bad event want (0: a
	// problem with the header, line 1).
	check := func(t *testing.T, name string, b []byte, want uint64) {
		t.Helper()
		rep := audit.Verify(b, audit.Options{Root: ca.Root})
		got, named := rep.FirstBad()
		switch {
		case rep.OK():
			t.Fatalf("%s: verifies", name)
		case want == 0 && (rep.Problems[0].Line != 1 || rep.Problems[0].Seq != 0):
			t.Fatalf("%s: want a header problem first, got %v", name, rep.Problems)
		case want != 0 && (!named || got != want):
			t.Fatalf("%s: first bad event %d (named %v), want %d: %v", name, got, named, want, rep.Problems)
		}
	}

	t.Run("every byte flipped", func(t *testing.T) {
		// Each byte is flipped in turn (its low bit; a newline becomes a
		// control character); each must be caught, and blamed on the
		// event whose line it is on (the header's, for line 1).
		off := 0
		for i, l := range lines {
			for j := range l {
				b := bytes.Clone(bundle)
				b[off+j] ^= 0x01
				check(t, fmt.Sprintf("byte %d of line %d", j, i+1), b, seqOf[i])
			}
			off += len(l)
		}
	})
	t.Run("event deleted", func(t *testing.T) {
		for i := 1; i < len(lines); i++ {
			check(t, fmt.Sprintf("line %d removed", i+1), without(i), seqOf[i])
		}
	})
	t.Run("event inserted", func(t *testing.T) {
		for i := 2; i < len(lines); i++ {
			// A copy of an earlier event, and a copy of the next one.
			// Two equal events side by side cannot tell which is the
			// copy; the first of them is named.
			for _, dup := range []int{i - 1, i} {
				ls := append(append(append([][]byte{}, lines[:i]...), lines[dup]), lines[i:]...)
				check(t, fmt.Sprintf("line %d inserted before line %d", dup+1, i+1), join(ls), seqOf[dup])
			}
		}
	})
	t.Run("events swapped", func(t *testing.T) {
		for i := 1; i+1 < len(lines); i++ {
			ls := append([][]byte{}, lines...)
			ls[i], ls[i+1] = ls[i+1], ls[i]
			check(t, fmt.Sprintf("lines %d and %d swapped", i+1, i+2), join(ls), seqOf[i])
		}
	})
	t.Run("truncated after a seal", func(t *testing.T) {
		// Cut after every seal but the last: the bundle still ends on a
		// signed seal, but not the one it was exported through.
		for i := 1; i+1 < len(lines); i++ {
			if !bytes.Contains(lines[i], []byte(`"action":"audit.seal"`)) {
				continue
			}
			check(t, fmt.Sprintf("cut after line %d", i+1), join(lines[:i+1]), seqOf[i]+1)
		}
		// The header alone.
		check(t, "header only", lines[0], 0)
	})
}
