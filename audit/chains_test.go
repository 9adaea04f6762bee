package audit_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/audit"
	"signerd/hsm"
)

// nodeKey is a node's audit key, certified by the CA's issuing CA.
type nodeKey struct {
	priv *sm2.PrivateKey
	key  audit.Key
}

func (k nodeKey) sign(msg []byte) ([]byte, error) {
	return k.priv.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
}

// nodeKey is node's audit key, certified under the CA's issuing CA with
// a certificate naming node (none for ""), as signerd certifies them.
// Keys are made once per CA and node; the unnamed chain's is the CA's
// audit key.
func (ca *softCA) nodeKey(t testing.TB, node string) nodeKey {
	t.Helper()
	if node == "" {
		return nodeKey{priv: ca.auditKey, key: ca.key}
	}
	if k, ok := ca.nodeKeys[node]; ok {
		return k
	}
	priv, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k := ca.certify(t, priv, audit.KeySubject(node, hsm.KeyID(&priv.PublicKey)))
	if ca.nodeKeys == nil {
		ca.nodeKeys = map[string]nodeKey{}
	}
	ca.nodeKeys[node] = k
	return k
}

// certify has the CA's issuing CA certify priv as an audit key whose
// certificate has the common name cn.
func (ca *softCA) certify(t testing.TB, priv *sm2.PrivateKey, cn string) nodeKey {
	t.Helper()
	ca.serial++
	id := hsm.KeyID(&priv.PublicKey)
	der, err := smx509.CreateCertificate(rand.Reader, &smx509.Certificate{SerialNumber: big.NewInt(100 + ca.serial),
		Subject:   pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), KeyUsage: audit.KeyUsage, SubjectKeyId: id},
		ca.iss, priv.Public(), ca.issKey)
	if err != nil {
		t.Fatal(err)
	}
	return nodeKey{priv: priv, key: audit.Key{KeyID: id, Certificate: der, Issuer: ca.iss.Raw}}
}

// softNode is a chain of a bundle: its node, its length, the key sealing
// it (nil: the node's own), and why it is omitted, if it is.
type softNode struct {
	node    string
	n       int
	sealer  *nodeKey
	omitted string
}

// chainsBundle writes a bundle of format v2 of the chains, exported at
// the time at by the first chain's node, whose audit key signs it.
func (ca *softCA) chainsBundle(t testing.TB, at time.Time, chains ...softNode) []byte {
	t.Helper()
	return ca.chainsBundleBy(t, at, ca.nodeKey(t, chains[0].node), chains...)
}

// chainsBundleBy is chainsBundle with every header signed by exporter.
// Each header certifies the exporter's key and its chain's sealer, if
// the sealer's key has a certificate.
func (ca *softCA) chainsBundleBy(t testing.TB, at time.Time, exporter nodeKey, chains ...softNode) []byte {
	t.Helper()
	var list []audit.Chain
	for _, c := range chains {
		list = append(list, audit.Chain{Node: c.node, Omitted: c.omitted})
	}
	var buf bytes.Buffer
	var w *audit.Writer
	section := 0
	for _, c := range chains {
		if c.omitted != "" {
			continue
		}
		section++
		sealer := ca.nodeKey(t, c.node)
		if c.sealer != nil {
			sealer = *c.sealer
		}
		stored, head := softChain(t, c.n, sealer.key.KeyID, sealer.sign)
		h := audit.Header{ExportedAt: at, Node: c.node, Section: section, First: 1, Last: uint64(c.n), Head: head,
			Keys: []audit.Key{exporter.key}, Chains: list, Unsealed: 2}
		if sealer.key.Certificate != nil && !bytes.Equal(sealer.key.Certificate, exporter.key.Certificate) {
			h.Keys = append(h.Keys, sealer.key)
		}
		var err error
		if w == nil {
			w, err = audit.NewWriter(&buf, h, exporter.key.KeyID, exporter.sign)
		} else {
			err = w.Section(h)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range stored {
			if err := w.Event(raw); err != nil {
				t.Fatal(err)
			}
		}
	}
	return buf.Bytes()
}

// sections splits a bundle into its sections' lines (each line with its
// newline), a section starting at each header line.
func sections(b []byte) [][][]byte {
	var out [][][]byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if bytes.HasPrefix(l, []byte(`{"header":`)) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], l)
	}
	return out
}

// withSignatureOf is the section with its header's signature replaced by
// the one of header line other: a well-formed signature, by the right
// key, over another header.
func withSignatureOf(section [][]byte, other []byte) [][]byte {
	sig := []byte(`"signature":`)
	head, _, _ := bytes.Cut(section[0], sig)
	_, tail, _ := bytes.Cut(other, sig)
	ls := append([][]byte{}, section...)
	ls[0] = append(append(append([]byte{}, head...), sig...), tail...)
	return ls
}

func joinSections(ss ...[][]byte) []byte {
	var b []byte
	for _, s := range ss {
		b = append(b, bytes.Join(s, nil)...)
	}
	return b
}

// TestVerifyChains: a bundle of several chains verifies section by
// section, names the chains it omits, and every tampering with a section,
// or with the set of sections, is reported with the node at fault.
func TestVerifyChains(t *testing.T) {
	ca := newSoftCA(t)
	keyB := ca.nodeKey(t, "b")
	at := time.Now().UTC()
	good := ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5},
		softNode{node: "c", omitted: "never sealed: none of its 3 events is vouched for by a seal yet"})

	rep := audit.Verify(good, audit.Options{Root: ca.root})
	if !rep.OK() || len(rep.Sections) != 2 || rep.Seals != 3+2 || len(rep.Events) != 12 || len(rep.Keys) != 2 {
		t.Fatalf("good bundle: ok %v, %d sections, %d seals, %d events, %d keys: %v",
			rep.OK(), len(rep.Sections), rep.Seals, len(rep.Events), len(rep.Keys), rep.Problems)
	}
	for i, want := range []struct {
		node   string
		events int
	}{{"a", 7}, {"b", 5}} {
		if s := rep.Sections[i]; s.Node != want.node || s.Index != i+1 || s.Events != want.events || s.Header.Unsealed != 2 {
			t.Fatalf("section %d: %+v", i+1, s)
		}
	}
	if len(rep.Omitted) != 1 || rep.Omitted[0].Node != "c" || rep.Events[7].Node != "b" {
		t.Fatalf("omitted %+v; event 8 of the bundle is %q's", rep.Omitted, rep.Events[7].Node)
	}
	if rep := audit.Verify(good, audit.Options{}); rep.OK() || !rep.Consistent() || rep.Anchored {
		t.Fatalf("without a root: ok %v, consistent %v, anchored %v", rep.OK(), rep.Consistent(), rep.Anchored)
	}

	ss := sections(good)
	a, b := ss[0], ss[1]
	other := ca.chainsBundle(t, at.Add(time.Second), softNode{node: "a", n: 7}, softNode{node: "b", n: 5},
		softNode{node: "c", omitted: "never sealed: none of its 3 events is vouched for by a seal yet"})
	bKeyless := ca.chainsBundle(t, at, softNode{node: "a", n: 7}, softNode{node: "b", n: 5, sealer: &nodeKey{priv: keyB.priv, key: audit.Key{KeyID: keyB.key.KeyID}}},
		softNode{node: "c", omitted: "never sealed: none of its 3 events is vouched for by a seal yet"})
	// b's header signed by b's own key, its Keys certifying it.
	bSigned := sections(ca.chainsBundleBy(t, at, keyB, softNode{node: "a", n: 7},
		softNode{node: "b", n: 5}, softNode{node: "c", omitted: "never sealed: none of its 3 events is vouched for by a seal yet"}))[1]
	unnamed := ca.chainsBundle(t, at, softNode{node: "a", n: 4}, softNode{node: "", n: 4})
	flip := func(lines [][]byte, i, at int) [][]byte {
		ls := append([][]byte{}, lines...)
		ls[i] = bytes.Clone(ls[i])
		ls[i][at] ^= 0x01
		return ls
	}

	tests := []struct {
		name   string
		bundle []byte
		node   string // the node the first problem names
		seq    uint64 // the first bad event of that node (0: not checked)
		want   string // in some problem's message
	}{
		{"b's event 2 edited", joinSections(a, flip(b, 2, 10)), "b", 2, "edited"},
		{"b's last event removed", joinSections(a, b[:len(b)-1]), "b", 5, "removed from the end"},
		{"b's section removed", joinSections(a), "b", 0, "holds no such section"},
		{"sections swapped", joinSections(b, a), "b", 0, "holds node b's chain where the bundle lists node a's"},
		{"b's section from another export", joinSections(a, sections(other)[1]), "b", 0, "not the first section's"},
		{"b's section twice", joinSections(a, b, b), "b", 0, "beyond the 2 the bundle lists"},
		{"b's seals by a key its header does not certify", bKeyless, "b", 3, "which the bundle does not certify"},
		{"b's header signed by b's key", joinSections(a, bSigned), "b", 0, "one export's headers are signed by one key"},
		{"a's header edited", joinSections(flip(a, 0, 20), b), "a", 0, "header: "},
		{"a's header with b's header's signature", joinSections(withSignatureOf(a, b[0]), b), "a", 0, "signature does not verify"},
		{"unnamed chain's event edited", joinSections(sections(unnamed)[0], flip(sections(unnamed)[1], 1, 10)), "", 1, "edited"},
		{"a v1 header holding a node", bytes.Replace(ca.bundle(t, 4), []byte(`"first":1`), []byte(`"node":"a","first":1`), 1),
			"", 0, "holds the fields of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := audit.Verify(tt.bundle, audit.Options{Root: ca.root})
			if rep.OK() || rep.Consistent() {
				t.Fatalf("verifies")
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
			prefix := audit.ChainName(tt.node) + ": "
			if strings.Contains(tt.name, "v1") {
				prefix = ""
			}
			if p := rep.Problems[0]; p.Node != tt.node || !strings.HasPrefix(p.String(), prefix) {
				t.Fatalf("first problem %q names node %q, want %q", p, p.Node, tt.node)
			}
		})
	}

	t.Run("every byte flipped", func(t *testing.T) {
		// A flip on an event's line is blamed on that node's event; one
		// on a header's line on that node's header (no event named).
		// Header lines are long with certificates: every 13th byte.
		type where struct {
			node string
			seq  uint64
		}
		var at []where
		for _, r := range rep.Events {
			for len(at) < r.Line-1 {
				at = append(at, where{node: r.Node}) // a header line
			}
			at = append(at, where{r.Node, r.Event.Seq})
		}
		lines := bytes.SplitAfter(good, []byte("\n"))
		off := 0
		for i, l := range lines[:len(at)] {
			step := 1
			if at[i].seq == 0 {
				step = 13
			}
			for j := 0; j < len(l); j += step {
				bad := bytes.Clone(good)
				bad[off+j] ^= 0x01
				rep := audit.Verify(bad, audit.Options{Root: ca.root})
				node, seq, named := rep.FirstBadEvent()
				switch {
				case rep.OK():
					t.Fatalf("byte %d of line %d flipped: verifies", j, i+1)
				case at[i].seq != 0 && (!named || node != at[i].node || seq != at[i].seq):
					t.Fatalf("byte %d of line %d flipped: first bad event %q %d, want %q %d: %v", j, i+1, node, seq, at[i].node, at[i].seq, rep.Problems)
				case at[i].seq == 0 && (rep.Problems[0].Line != i+1):
					t.Fatalf("byte %d of header line %d flipped: first problem %v", j, i+1, rep.Problems[0])
				}
			}
			off += len(l)
		}
	})
}
