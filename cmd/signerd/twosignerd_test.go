package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyNewestObject copies the token's most recently written object file
// under a new name, as a token folder restored beside a copy of itself
// would hold it. After signerd's clean stop that object is the audit
// anchor, just rewritten by the shutdown seal.
func copyNewestObject(t *testing.T, tokenDir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(tokenDir, "*", "*.object"))
	if err != nil {
		t.Fatal(err)
	}
	var newest string
	var at time.Time
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) != "token.object" && fi.ModTime().After(at) {
			newest, at = f, fi.ModTime()
		}
	}
	raw, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(filepath.Dir(newest), "0c0c0c0c-0c0c-0c0c-0c0c-0c0c0c0c0c0c.object")
	if err := os.WriteFile(copied, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDuplicateAnchorsNeedAnAcknowledgement: two audit anchors of one
// generation in the token (what two signerd on one token can leave, or a
// token restored beside a copy) refuse the start with a message that says
// what happened and what to do; an acknowledged start gets past it,
// records it, and leaves one anchor, so the next start needs nothing.
func TestDuplicateAnchorsNeedAnAcknowledgement(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	copyNewestObject(t, d.ca.Token.Dir)
	out, code := refusedStart(t, d)
	if code != 1 || !strings.Contains(out, "two audit anchors of one generation") || !strings.Contains(out, "two signerd ran on this token") ||
		!strings.Contains(out, "--acknowledge-audit-break") {
		t.Fatalf("start on duplicate anchors: exit %d\n%s", code, out)
	}
	d.args = []string{"--acknowledge-audit-break", "two signerd found on the token; this store kept"}
	d.start(t)
	if err := d.stop(t); err != nil {
		t.Fatalf("acknowledged start: %v\n%s", err, d.log)
	}
	d.args = nil
	d.start(t)
	acknowledged := false
	for _, ev := range d.exportAudit(t) {
		if ev.Action == "audit.break.acknowledged" && strings.Contains(ev.Reason, "two audit anchors of one generation") {
			acknowledged = true
		}
	}
	if !acknowledged {
		t.Error("no audit.break.acknowledged event names the duplicate anchors")
	}
}

// TestSecondSignerdOnTheTokenIsNoticed: two signerd on one token, each on
// its own copy of the store. When one seals after the other moved the
// anchor, it does not write over it: it logs and audits that the anchor
// moved under it.
func TestSecondSignerdOnTheTokenIsNoticed(t *testing.T) {
	a := newDaemonProc(t, "")
	a.start(t)
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	b := &daemonProc{ca: a.ca, dir: a.dir, socket: filepath.Join(a.dir, "b.sock"), store: filepath.Join(a.dir, "b.db"),
		config: filepath.Join(a.dir, "b.yaml")}
	raw, err := os.ReadFile(a.store)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.store, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(bytes.Replace(cfg, []byte(a.socket), []byte(b.socket), 1), []byte(a.store), []byte(b.store), 1)
	if err := os.WriteFile(b.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	b.start(t)
	a.exportAudit(t) // seals, and moves the anchor
	b.exportAudit(t) // seals over an anchor that moved under it
	found := false
	for _, ev := range b.exportAudit(t) {
		if ev.Action == "audit.anchor" && ev.Outcome == "failed" && strings.Contains(ev.Reason, "moved under this signerd") {
			found = true
		}
	}
	if err := b.stop(t); err != nil { // its log is read once it has stopped writing it
		t.Fatal(err)
	}
	if !found || !strings.Contains(b.log.String(), "another signerd is sealing on this token") {
		t.Fatalf("the second signerd did not notice the first: audit.anchor event %v\n%s", found, b.log)
	}
}
