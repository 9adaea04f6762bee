package audit_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/audit"
	"signerd/store"
)

// softCA is a root, an issuing CA and a certified audit key, all software
// keys: enough to write bundles without an HSM, for the verifier's own
// edge cases and its fuzz target. Bundles from a real signerd are tested
// in package engine.
type softCA struct {
	root     *smx509.Certificate
	key      audit.Key
	auditKey *sm2.PrivateKey
	// issKey and iss are the issuing CA's, to certify more audit keys.
	issKey *sm2.PrivateKey
	iss    *smx509.Certificate
	// nodeKeys are the named nodes' audit keys (nodeKey), serial the
	// count of certificates certify issued.
	nodeKeys map[string]nodeKey
	serial   int64
}

// newSoftCA is a sound softCA: every certificate valid from an hour ago
// for years, each naming its issuer.
func newSoftCA(t testing.TB) *softCA {
	t.Helper()
	return newShapedCA(t, soundShape)
}

func (ca *softCA) sign(msg []byte) ([]byte, error) {
	return ca.auditKey.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
}

// bundle writes a log of n events, sealed after every third and at the
// end, as a bundle.
func (ca *softCA) bundle(t testing.TB, n int) []byte {
	t.Helper()
	stored, head := softChain(t, n, ca.key.KeyID, ca.sign)
	var buf bytes.Buffer
	w, err := audit.NewWriter(&buf, audit.Header{First: 1, Last: uint64(n), Head: head, Keys: []audit.Key{ca.key}}, ca.key.KeyID, ca.sign)
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

// softChain is a chain of n events, sealed after every third and at the
// end by sign, the audit key keyID: the events as stored, and the chain
// hash of the last.
func softChain(t testing.TB, n int, keyID []byte, sign func([]byte) ([]byte, error)) ([][]byte, []byte) {
	t.Helper()
	var stored [][]byte
	prev := store.Genesis()
	for seq := uint64(1); seq <= uint64(n); seq++ {
		e := store.Event{Seq: seq, Time: time.Now().UTC(), Actor: store.System, Action: "certificate.issue", Outcome: "ok", Prev: prev}
		if seq%3 == 0 || seq == uint64(n) {
			sig, err := sign(store.SealMessage(seq, prev))
			if err != nil {
				t.Fatal(err)
			}
			e.Action, e.Seal = "audit.seal", &store.Seal{KeyID: keyID, Signature: sig}
		}
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, raw)
		prev = store.ChainHash(raw)
	}
	return stored, prev
}

func TestVerifyEdgeCases(t *testing.T) {
	ca := newSoftCA(t)
	good := ca.bundle(t, 7)
	if rep := audit.Verify(good, audit.Options{Root: ca.root}); !rep.OK() || !rep.Anchored || rep.Seals != 3 || len(rep.Events) != 7 {
		t.Fatalf("good bundle: %+v", rep)
	}
	if rep := audit.Verify(good, audit.Options{}); rep.OK() || !rep.Consistent() || rep.Anchored {
		t.Fatalf("without a root: ok %v, consistent %v, anchored %v", rep.OK(), rep.Consistent(), rep.Anchored)
	}
	lines := strings.SplitAfter(string(good), "\n")
	tests := []struct {
		name, bundle, want string
	}{
		{"empty", "", "empty bundle"},
		{"a newline", "\n", "header"},
		{"garbage", "not json\n", "header"},
		{"header only", lines[0], "holds no events"},
		{"no final newline", strings.TrimSuffix(string(good), "\n"), "does not end with a newline"},
		{"a second header", lines[0] + string(good), "holds event"},
		{"header with an extra field", strings.Replace(string(good), `"header":{`, `"header":{"extra":1,`, 1), "unknown field"},
		{"header re-encoded", strings.Replace(string(good), `"key_id":"`, `"key_id" : "`, 1), "not in the form"},
		{"another CA's bundle", string(newSoftCA(t).bundle(t, 7)), "does not chain"},
	}
	for _, tt := range tests {
		rep := audit.Verify([]byte(tt.bundle), audit.Options{Root: ca.root})
		found := false
		for _, p := range rep.Problems {
			found = found || strings.Contains(p.Message, tt.want)
		}
		if rep.OK() || !found {
			t.Errorf("%s: want a problem with %q, got %v", tt.name, tt.want, rep.Problems)
		}
	}
}

var update = flag.Bool("update", false, "write testdata's verifier fixtures afresh")

// fixtures are a root and two bundles it anchors (1 and 5 events), kept in
// testdata so that every fuzzing process knows the same ones. Workers fuzz
// inputs the coordinator hands them; with a CA made afresh in each process
// no handed bundle chained to a worker's root, so not one input in a run
// was anchored and "nothing else verifies" was never put to the test.
// Written by
// go test ./audit -run TestFixturesVerify -args -update
func fixtures(t testing.TB) (*smx509.Certificate, [][]byte) {
	t.Helper()
	const rootPath = "testdata/root.pem"
	bundlePaths := []string{"testdata/bundle-1.jsonl", "testdata/bundle-5.jsonl"}
	if *update {
		ca := newSoftCA(t)
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rootPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		for i, n := range []int{1, 5} {
			if err := os.WriteFile(bundlePaths[i], ca.bundle(t, n), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	raw, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s: no PEM", rootPath)
	}
	root, err := smx509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", rootPath, err)
	}
	var bundles [][]byte
	for _, p := range bundlePaths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bundles = append(bundles, b)
	}
	return root, bundles
}

// chainsFixture is a root of its own and a bundle of format v2 it
// anchors: nodes a and b, each sealing with its own key, and node c
// omitted. The v1 fixtures stay as they were written before bundles had
// sections, so that they show old bundles still verify.
func chainsFixture(t testing.TB) (*smx509.Certificate, []byte) {
	t.Helper()
	const rootPath, bundlePath = "testdata/chains-root.pem", "testdata/bundle-chains.jsonl"
	if *update {
		ca := newSoftCA(t)
		b := ca.chainsBundle(t, time.Now().UTC(), softNode{node: "a", n: 4}, softNode{node: "b", n: 2},
			softNode{node: "c", omitted: "never sealed: none of its 1 events is vouched for by a seal yet"})
		if err := os.WriteFile(rootPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bundlePath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s: no PEM", rootPath)
	}
	root, err := smx509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", rootPath, err)
	}
	b, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	return root, b
}

func TestFixturesVerify(t *testing.T) {
	root, bundles := fixtures(t)
	for i, b := range bundles {
		if rep := audit.Verify(b, audit.Options{Root: root}); !rep.OK() || !rep.Anchored || rep.Seals == 0 {
			t.Errorf("fixture bundle %d: ok %v, anchored %v, %d seals: %v", i, rep.OK(), rep.Anchored, rep.Seals, rep.Problems)
		}
	}
	croot, chains := chainsFixture(t)
	if rep := audit.Verify(chains, audit.Options{Root: croot}); !rep.OK() || len(rep.Sections) != 2 || len(rep.Omitted) != 1 {
		t.Errorf("fixture bundle of chains: ok %v, %d sections, %d omitted: %v", rep.OK(), len(rep.Sections), len(rep.Omitted), rep.Problems)
	}
}

// FuzzVerify: no input makes the verifier panic, and none but the
// bundles signerd wrote passes, under either fixture root.
func FuzzVerify(f *testing.F) {
	root, valid := fixtures(f)
	croot, chains := chainsFixture(f)
	valid = append(valid, chains)
	for _, b := range valid {
		f.Add(b)
	}
	f.Add([]byte("{}\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, r := range []*smx509.Certificate{root, croot} {
			rep := audit.Verify(b, audit.Options{Root: r})
			if !rep.OK() {
				continue
			}
			if !slices.ContainsFunc(valid, func(v []byte) bool { return bytes.Equal(b, v) }) {
				t.Fatalf("a bundle signerd did not write verifies:\n%q", b)
			}
		}
	})
}
