package engine_test

import (
	"context"
	"strings"
	"testing"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// openNodeStore opens the database at as node name.
func openNodeStore(t *testing.T, at *enginetest.StoreAt, name string) *store.Store {
	t.Helper()
	st, err := store.OpenPostgres(at.DSN, store.PostgresOptions{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestRequestBeingSignedAtAnotherNode: a request id sent to node b while
// node a signs it is answered request_in_progress (retryable) naming node
// a; once a has recorded it, b answers the certificate a issued.
func TestRequestBeingSignedAtAnotherNode(t *testing.T) {
	ca := enginetest.NewCA(t)
	at := enginetest.NewPostgresStore(t)
	held := &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{})}
	iss, err := issuance.NewIssuer(ca.Cert, held)
	if err != nil {
		t.Fatal(err)
	}
	a := ca.Engine(t, openNodeStore(t, at, "a"), engine.Config{Issuers: []*issuance.Issuer{iss}})
	b := ca.Engine(t, openNodeStore(t, at, "b"), engine.Config{})

	req := request(t, "signed-at-a")
	type result struct {
		c   *store.Certificate
		err error
	}
	atA := make(chan result, 1)
	go func() {
		c, err := a.Issue(context.Background(), ra, req)
		atA <- result{c, err}
	}()
	<-held.entered
	_, err = b.Issue(context.Background(), ra, req)
	if engine.CodeOf(err) != api.CodeInProgress || !engine.CodeOf(err).Retryable() || !strings.Contains(err.Error(), "being signed by node a") {
		t.Errorf("the request at b while a signs it: %v; want request_in_progress naming node a", err)
	}
	close(held.release)
	first := <-atA
	if first.err != nil {
		t.Fatal(first.err)
	}
	c, err := b.Issue(context.Background(), ra, req)
	if err != nil || c.RequestID != req.ID || string(c.DER) != string(first.c.DER) {
		t.Fatalf("the request at b after a issued it: %v; want a's certificate", err)
	}
}
