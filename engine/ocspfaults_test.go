package engine_test

// Regressions from the review of OCSP pre-signing: each test failed
// before the fix it names.

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"sync/atomic"

	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/publish"
	"signerd/revocation"
	"signerd/store"
)

// countingHandler counts log records by message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// failingSigner is the responder key with an HSM that refuses to sign.
type failingSigner struct{ issuance.Signer }

func (failingSigner) SignDigest(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("CKR_DEVICE_ERROR (injected)")
}

func ocspEngineWith(t *testing.T, clk *settableClock, ocfg engine.OCSP, wrap func(issuance.Signer) issuance.Signer) (*engine.Engine, *enginetest.CA, string, *countingHandler) {
	t.Helper()
	ca := enginetest.NewCA(t)
	k, err := ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "ocsp-responder", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.KeySigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		signer = wrap(signer)
	}
	ocfg.ResponderKey = signer
	dir := t.TempDir()
	pub, err := publish.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{n: map[string]int{}}
	e := ca.Engine(t, enginetest.OpenStore(t), engine.Config{Now: clk.read, Publish: pub, Log: slog.New(h), OCSP: ocfg})
	e.StartOCSP()
	return e, ca, dir, h
}

// TestOCSPPublicationFailureRepublished: a revocation whose publication
// failed once is made and published again within seconds (a batch is
// published before it is recorded, and recorded due soon if it could not
// be), not at the response's refresh.
func TestOCSPPublicationFailureRepublished(t *testing.T) {
	clk, now := clockNow()
	e, ca, dir, _ := ocspEngineWith(t, clk, engine.OCSP{Validity: time.Hour, ResponderValidity: 48 * time.Hour, Poll: 20 * time.Millisecond}, nil)
	c := issue(t, e, request(t, "ocsp-r-1"))
	good := waitResponse(t, e, c.Serial, func(*store.OCSPResponse) bool { return true })
	issuerDir := filepath.Join(dir, "ocsp", ca.Issuer.ID())
	file := filepath.Join(issuerDir, strings.ToLower(store.HexSerial(c.Serial))+".der")
	waitFor(t, "publication of good", func() bool { b, _ := os.ReadFile(file); return bytes.Equal(b, good.DER) })

	// A transient publication failure (disk full, share unmounted...):
	// the issuer directory is briefly not a directory.
	if err := os.Rename(issuerDir, issuerDir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(issuerDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk.set(now.Add(time.Minute))
	if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	revoked := waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return !bytes.Equal(r.DER, good.DER) })
	os.Remove(issuerDir)
	if err := os.Rename(issuerDir+".away", issuerDir); err != nil {
		t.Fatal(err)
	}
	// 25 minutes on (refresh is at 30), with many polls in between.
	for m := 2; m <= 25; m++ {
		clk.set(now.Add(time.Duration(m) * time.Minute))
		time.Sleep(40 * time.Millisecond)
	}
	got, _ := os.ReadFile(file)
	if bytes.Equal(got, good.DER) || !strings.Contains(ocspText(t, ca, got, c.DER), "Cert Status: revoked") {
		t.Errorf("the store holds the revoked response (thisUpdate %v) but the directory does not serve one", revoked.ThisUpdate)
	}
}

// TestOCSPFailedSigningWaits: a response whose signing failed waits
// ocspRetry before it is tried again; the loop does not spin.
func TestOCSPFailedSigningWaits(t *testing.T) {
	clk, _ := clockNow()
	e, _, _, h := ocspEngineWith(t, clk, engine.OCSP{Validity: time.Hour, ResponderValidity: 48 * time.Hour, Poll: time.Second},
		func(s issuance.Signer) issuance.Signer { return failingSigner{s} })
	issue(t, e, request(t, "ocsp-r-2"))
	time.Sleep(2 * time.Second)
	n := h.count("OCSP responses not signed; retried")
	t.Logf("failed batches in 2s with poll 1s and retry 10s: %d", n)
	if n > 3 {
		t.Errorf("failed responses retried %d times in 2s: the 10s retry delay is not applied (hot loop)", n)
	}
}

// TestOCSPResponderNearIssuerEnd: near the issuing CA's end, where no
// new responder certificate could last longer than the current one, no
// certificate is minted after another.
func TestOCSPResponderNearIssuerEnd(t *testing.T) {
	ca := enginetest.NewCA(t)
	clk := new(settableClock)
	clk.set(ca.Cert.NotAfter.Add(-40 * time.Hour).Truncate(time.Second))
	_ = ca
	e, _, _, h := ocspEngineWithOn(t, ca, clk, engine.OCSP{Validity: 24 * time.Hour, ResponderValidity: 96 * time.Hour, Poll: time.Second})
	_ = e
	time.Sleep(3 * time.Second)
	n := h.count("OCSP responder certified")
	t.Logf("responder certificates in 3s: %d", n)
	if n > 1 {
		t.Errorf("%d responder certificates certified in 3s", n)
	}
}

func ocspEngineWithOn(t *testing.T, ca *enginetest.CA, clk *settableClock, ocfg engine.OCSP) (*engine.Engine, *enginetest.CA, string, *countingHandler) {
	t.Helper()
	k, err := ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "ocsp-responder", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := issuance.KeySigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	ocfg.ResponderKey = signer
	dir := t.TempDir()
	pub, err := publish.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{n: map[string]int{}}
	e := ca.Engine(t, enginetest.OpenStore(t), engine.Config{Now: clk.read, Publish: pub, Log: slog.New(h), OCSP: ocfg})
	e.StartOCSP()
	return e, ca, dir, h
}

// TestOCSPFailingEntriesStarveNothing: entries that fail for good (a
// certificate of an issuing key no longer configured) are put off, and
// do not hold up others' responses, with a batch of one.
func TestOCSPFailingEntriesStarveNothing(t *testing.T) {
	clk, now := clockNow()
	at := enginetest.NewBoltStore(t)
	ca := enginetest.NewCA(t)
	oldIss := secondIssuer(t, ca)
	ocfg := engine.OCSP{Validity: time.Hour, Poll: 20 * time.Millisecond, Batch: 1}
	st1 := at.Open(t)
	e1 := ca.Engine(t, st1, engine.Config{Now: clk.read, OCSP: ocfg, Issuers: []*issuance.Issuer{oldIss}})
	e1.StartOCSP()
	x := issue(t, e1, request(t, "ocsp-r-old"))
	waitResponse(t, e1, x.Serial, func(*store.OCSPResponse) bool { return true })
	e1.Close()
	st1.Close()

	clk.set(now.Add(31 * time.Minute)) // x is due for its refresh
	e2 := ca.Engine(t, at.Open(t), engine.Config{Now: clk.read, OCSP: ocfg})
	e2.StartOCSP()
	y := issue(t, e2, request(t, "ocsp-r-new"))
	time.Sleep(time.Second)
	if r, _ := e2.OCSPResponse("", y.Serial); r == nil {
		t.Errorf("certificate issued by the active key has no response after 1s: the due queue is blocked by %x", x.Serial)
	}
}

// secondIssuer is another issuing key of ca's root, in ca's token.
func secondIssuer(t *testing.T, ca *enginetest.CA) *issuance.Issuer {
	t.Helper()
	ctx := context.Background()
	rootKey, err := ca.Module.FindKey(ctx, enginetest.RootLabel)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rootKey.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ca.Module.GenerateKey(ctx, hsm.KeySpec{Label: "issuing-old", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "signerd Old Issuing CA", Organization: []string{"signerd"}, Country: []string{"CN"}},
		NotBefore: ca.Cert.NotBefore, NotAfter: ca.Cert.NotAfter, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: hsm.KeyID(k.Public)}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, ca.Root, k.Public, rs)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return enginetest.MustIssuer(t, cert, k)
}

// gatedResponder holds the responder key's signatures while armed, until
// released: a refresh caught between its reading and its recording.
type gatedResponder struct {
	issuance.Signer
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedResponder) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Signer.SignDigest(ctx, e)
}

// TestOCSPRevocationDuringSigning: a certificate revoked while its good
// response is being signed gets a revoked response: the good one, no
// longer true, is neither recorded (which would put the response off to
// its next refresh) nor published.
func TestOCSPRevocationDuringSigning(t *testing.T) {
	clk, now := clockNow()
	gate := &gatedResponder{entered: make(chan struct{}), release: make(chan struct{})}
	e, ca, dir, _ := ocspEngineWith(t, clk, engine.OCSP{Validity: time.Hour, ResponderValidity: 48 * time.Hour, Poll: 20 * time.Millisecond},
		func(s issuance.Signer) issuance.Signer { gate.Signer = s; return gate })
	c := issue(t, e, request(t, "ocsp-during"))
	good := waitResponse(t, e, c.Serial, func(*store.OCSPResponse) bool { return true })
	gate.armed.Store(true)
	clk.set(now.Add(31 * time.Minute)) // the refresh is due
	<-gate.entered
	if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	r := waitResponse(t, e, c.Serial, func(r *store.OCSPResponse) bool { return r.ThisUpdate.After(good.ThisUpdate) })
	if out := ocspText(t, ca, r.DER, c.DER); !strings.Contains(out, "Cert Status: revoked") {
		t.Fatalf("the response made after the revocation:\n%s", out)
	}
	file := filepath.Join(dir, "ocsp", ca.Issuer.ID(), strings.ToLower(store.HexSerial(c.Serial))+".der")
	waitFor(t, "the revoked response published", func() bool { got, _ := os.ReadFile(file); return bytes.Equal(got, r.DER) })
}
