package audit_test

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"signerd/audit"
	"signerd/hsm"
)

// bundleBy writes a v1 bundle of a chain of n events sealed and signed by
// k.
func (ca *softCA) bundleBy(t testing.TB, n int, k nodeKey) []byte {
	t.Helper()
	stored, head := softChain(t, n, k.key.KeyID, k.sign)
	var buf bytes.Buffer
	w, err := audit.NewWriter(&buf, audit.Header{First: 1, Last: uint64(n), Head: head, Keys: []audit.Key{k.key}}, k.key.KeyID, k.sign)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range stored {
		if err := w.Event(raw); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestVerifySealsByTheirNodesKey: a seal counts only in the chain of the
// node its key's certificate names (the unnamed chain: a key naming no
// node), and an export's headers are signed by the key of the node whose
// chain comes first. One key certified for two chains (a signerd without
// a name that became node a on the same HSM) seals both.
func TestVerifySealsByTheirNodesKey(t *testing.T) {
	ca := newSoftCA(t)
	at := time.Now().UTC()
	keyA, keyB, unnamedKey := ca.nodeKey(t, "a"), ca.nodeKey(t, "b"), ca.nodeKey(t, "")
	// The unnamed chain's key, certified again for node a.
	upgraded := ca.certify(t, ca.auditKey, audit.KeySubject("a", ca.key.KeyID))
	oddCN := func(cn string) *nodeKey {
		priv, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k := ca.certify(t, priv, cn)
		return &k
	}
	badName := oddCN(audit.KeySubjectPrefix + " B " + strings.Repeat("0", 16))

	tests := []struct {
		name   string
		bundle []byte
		node   string // the node whose chain holds the first bad event
		seq    uint64 // the first bad event; 0: the bundle verifies OK
		want   string
	}{
		{"each chain sealed by its node's key", ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5}), "", 0, ""},
		{"b sealed by a's key, the exporter's", ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5, sealer: &keyA}),
			"b", 3, "certified for node a, not for node b"},
		{"b sealed by c's key, certified beside it", ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5, sealer: ptr(ca.nodeKey(t, "c"))}),
			"b", 3, "certified for node c, not for node b"},
		{"b sealed by the unnamed chain's key", ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5, sealer: &unnamedKey}),
			"b", 3, "certified for unnamed chain, not for node b"},
		{"the unnamed chain sealed by b's key", ca.chainsBundle(t, at, softNode{node: "a", n: 4}, softNode{node: "", n: 4, sealer: &keyB}),
			"", 3, "certified for node b, not for unnamed chain"},
		{"a v1 bundle sealed by a named node's key", ca.bundleBy(t, 4, keyA), "", 3, "certified for node a, not for unnamed chain"},
		{"headers signed by b's key, a's chain first", ca.chainsBundleBy(t, at, keyB, softNode{node: "a", n: 4}, softNode{node: "b", n: 4}),
			"a", 0, "the bundle starts with node a's chain"},
		{"one key certified for the unnamed chain and node a", ca.chainsBundleBy(t, at, upgraded,
			softNode{node: "a", n: 4, sealer: &upgraded}, softNode{node: "", n: 4, sealer: &unnamedKey}), "", 0, ""},
		{"b's key certified with a name no node has", ca.chainsBundle(t, at, softNode{node: "a", n: 4}, softNode{node: "b", n: 4, sealer: badName}),
			"b", 3, "node name \"B\""},
		{"b's key certified with two names", ca.chainsBundle(t, at, softNode{node: "a", n: 4},
			softNode{node: "b", n: 4, sealer: oddCN(audit.KeySubjectPrefix + " b c " + strings.Repeat("0", 16))}), "b", 3, "more than one node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := audit.Verify(tt.bundle, audit.Options{Root: ca.root})
			if tt.want == "" {
				if !rep.OK() {
					t.Fatalf("does not verify: %v", rep.Problems)
				}
				return
			}
			if rep.OK() {
				t.Fatalf("verifies OK")
			}
			found := false
			for _, p := range rep.Problems {
				found = found || strings.Contains(p.Message, tt.want)
			}
			if !found {
				t.Fatalf("no problem with %q: %v", tt.want, rep.Problems)
			}
			node, seq, named := rep.FirstBadEvent()
			if tt.seq != 0 && (!named || node != tt.node || seq != tt.seq) {
				t.Fatalf("first bad event %q %d (named %v), want %q %d: %v", node, seq, named, tt.node, tt.seq, rep.Problems)
			}
			if tt.seq == 0 && rep.Problems[0].Node != tt.node {
				t.Fatalf("first problem names %q, want %q: %v", rep.Problems[0].Node, tt.node, rep.Problems)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestVerifyChainsNotChecked: a chain the bundle lists as not included
// fails it unless it was never sealed; and a chain the auditor expects
// (Options.Nodes) that the bundle neither holds nor lists fails it,
// naming the node.
func TestVerifyChainsNotChecked(t *testing.T) {
	ca := newSoftCA(t)
	at := time.Now().UTC()
	a, b := softNode{node: "a", n: 4}, softNode{node: "b", n: 4}
	omitted := func(node, why string) softNode { return softNode{node: node, omitted: why} }
	v1 := ca.bundle(t, 4)

	tests := []struct {
		name   string
		bundle []byte
		nodes  []string
		ok     bool
		node   string // named by the problem wanted
		want   string
	}{
		{"every chain held", ca.chainsBundle(t, at, a, b), []string{"a", "b"}, true, "", ""},
		{"b never sealed", ca.chainsBundle(t, at, a, omitted("b", audit.NeverSealed(3))), []string{"a", "b"}, true, "", ""},
		{"b never sealed, no event", ca.chainsBundle(t, at, a, omitted("b", audit.NeverSealed(0))), nil, true, "", ""},
		{"b omitted, its head missing", ca.chainsBundle(t, at, a, omitted("b", "the store holds events of this chain but no head record")), nil, false,
			"b", "node b's chain is not in the bundle, and not because it was never sealed: the store holds events"},
		{"b omitted, its key not certified", ca.chainsBundle(t, at, a, omitted("b", "audit key 01: no certificate")), []string{"b"}, false,
			"b", "not because it was never sealed: audit key 01"},
		{"b omitted with a reason only starting alike", ca.chainsBundle(t, at, a, omitted("b", "never sealed")), nil, false, "b", "not because"},
		{"b expected, not listed", ca.chainsBundle(t, at, a), []string{"a", "b"}, false,
			"b", "node b's chain, expected, is neither in the bundle nor listed as not included"},
		{"the unnamed chain expected, not listed", ca.chainsBundle(t, at, a, b), []string{""}, false, "", "the unnamed chain, expected"},
		{"v1: the unnamed chain expected", v1, []string{""}, true, "", ""},
		{"v1: node a expected", v1, []string{"a"}, false, "a", "node a's chain, expected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := audit.Verify(tt.bundle, audit.Options{Root: ca.root, Nodes: tt.nodes})
			if rep.OK() != tt.ok {
				t.Fatalf("ok %v, want %v: %v", rep.OK(), tt.ok, rep.Problems)
			}
			if tt.want == "" {
				return
			}
			for _, p := range rep.Problems {
				if strings.Contains(p.Message, tt.want) && p.Node == tt.node {
					return
				}
			}
			t.Fatalf("no problem of %s with %q: %v", audit.ChainName(tt.node), tt.want, rep.Problems)
		})
	}
}

// TestKeyNode: the node an audit key certificate names is read back from
// the common name signerd gives it.
func TestKeyNode(t *testing.T) {
	ca := newSoftCA(t)
	id := hsm.KeyID(&ca.auditKey.PublicKey)
	for _, node := range []string{"", "a", "node-7"} {
		k := ca.certify(t, ca.auditKey, audit.KeySubject(node, id))
		rep := audit.Verify(ca.bundleBy(t, 1, k), audit.Options{})
		if len(rep.Keys) != 1 {
			t.Fatalf("%q: %v", node, rep.Problems)
		}
		if got, err := audit.KeyNode(rep.Keys[0]); err != nil || got != node {
			t.Errorf("KeyNode of %q = %q, %v; want %q", rep.Keys[0].Subject.CommonName, got, err, node)
		}
	}
}
