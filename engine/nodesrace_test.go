package engine_test

import (
	"context"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// heldAtA is two nodes, a and b, on one database; a's issuer signs only
// once released.
func heldAtA(t *testing.T) (a, b *engine.Engine, release func(), st *store.Store, held *gatedSigner) {
	t.Helper()
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStore(t)
	held = &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{})}
	iss, err := issuance.NewIssuer(ca.Cert, held)
	if err != nil {
		t.Fatal(err)
	}
	stB := openNodeStore(t, at, "b")
	a = ca.Engine(t, openNodeStore(t, at, "a"), engine.Config{Issuers: []*issuance.Issuer{iss}})
	b = ca.Engine(t, stB, engine.Config{})
	return a, b, releaseOnce(t, held), stB, held
}

// TestKeyUseAcrossNodes: a key being certified for signing at node a (held
// at a's HSM, so recorded only as a request in flight) is not certified
// for encryption at node b: the keys being signed are every node's, as
// one node's are (TestKeyUseCheckedWhereTheRequestIsReserved).
func TestKeyUseAcrossNodes(t *testing.T) {
	a, b, release, st, held := heldAtA(t)
	sign, enc := signingAndEncryption(t, mustSM2(t), "across")
	atA := make(chan error, 1)
	go func() { _, err := a.Issue(context.Background(), ra, sign); atA <- err }()
	<-held.entered // a's request is reserved and at the HSM
	_, errB := b.Issue(context.Background(), ra, enc)
	release()
	errA := <-atA
	if errA == nil && errB == nil {
		t.Errorf("one key certified for signing at node a and for encryption at node b: want key_reused for one of them")
	}
	checkOneUsePerKey(t, st)
}

// TestLatestCRLAcrossNodes: node a takes a CRL number and waits at its
// HSM; node b takes a larger one, signs and records its CRL; then a
// records its own. The CRL every node serves as the latest stays b's: one
// engine serialises SignCRL (crlMu), nodes do not, so the record keeps
// the larger number.
func TestLatestCRLAcrossNodes(t *testing.T) {
	a, b, release, _, held := heldAtA(t)
	atA := make(chan error, 1)
	go func() { _, err := a.SignCRL(context.Background(), ra, engine.CRLName{}); atA <- err }()
	<-held.entered // a's number is taken, its CRL at the HSM
	derB, err := b.SignCRL(context.Background(), ra, engine.CRLName{})
	if err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-atA; err != nil {
		t.Fatal(err)
	}
	latest, err := b.LatestCRL(engine.CRLName{})
	if err != nil {
		t.Fatal(err)
	}
	number := func(der []byte) string {
		rl, err := smx509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return rl.Number.String()
	}
	nb, nl := number(derB), number(latest)
	if len(nl) < len(nb) || (len(nl) == len(nb) && nl < nb) {
		t.Errorf("latest CRL served is number %s, after node b published number %s: CRL numbers went down", nl, nb)
	}
}
