package engine_test

import (
	"context"
	"testing"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

const codeKeyCompromised = api.Code("key_compromised")

// TestCompromisedKeyIsNeverCertifiedAgain: once a certificate is revoked
// for keyCompromise, no request gets a certificate for its key (a new
// issue, a renewal to it, an extension of another certificate for it),
// including one being signed when the revocation lands, and a restart on a
// store whose compromised-keys index is missing rebuilds it. It runs on
// each store engine.
func TestCompromisedKeyIsNeverCertifiedAgain(t *testing.T) {
	onEachStore(t, testCompromisedKeyIsNeverCertifiedAgain)
}

func testCompromisedKeyIsNeverCertifiedAgain(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	g := &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{})}
	iss, err := issuance.NewIssuer(ca.Cert, g)
	if err != nil {
		t.Fatal(err)
	}
	at := se.New(t)
	st := at.Open(t)
	e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}})
	signOne := func() { go func() { g.release <- struct{}{} }() }
	issueFor := func(id string, key any) *store.Certificate {
		t.Helper()
		signOne()
		return issue(t, e, engine.Request{ID: id, Profile: "device-sign", Subject: engine.Subject{CommonName: id}, CSR: csrWith(t, key)})
	}
	key, _ := enginetest.NewCSR(t)
	first := issueFor("first", key)
	second := issueFor("second", key) // the same key, outside first's line
	otherKey, _ := enginetest.NewCSR(t)
	other := issueFor("other", otherKey)

	// Being signed when the key is revoked.
	done := make(chan error, 1)
	go func() {
		_, err := e.Issue(context.Background(), ra, engine.Request{ID: "in-flight", Profile: "device-sign",
			Subject: engine.Subject{CommonName: "in-flight"}, CSR: csrWith(t, key)})
		done <- err
	}()
	waitPrepared(t, st, "in-flight")
	if _, err := e.Revoke(ra, first.Serial, keyCompromise); err != nil {
		t.Fatal(err)
	}
	signOne()
	if err := <-done; engine.CodeOf(err) != codeKeyCompromised {
		t.Fatalf("issuance signed while its key was revoked for keyCompromise: %v, want %s", err, codeKeyCompromised)
	}

	refusals := func(e *engine.Engine) {
		t.Helper()
		for name, c := range map[string]struct {
			do   func() error
			want api.Code
		}{
			"issue": {func() error {
				_, err := e.Issue(context.Background(), ra, engine.Request{ID: "again", Profile: "device-sign",
					Subject: engine.Subject{CommonName: "again"}, CSR: csrWith(t, key)})
				return err
			}, codeKeyCompromised},
			"renew to the key": {func() error {
				_, err := e.Renew(context.Background(), ra, other.Serial, engine.Request{ID: "renew-to-it", Profile: "device-sign",
					Subject: engine.Subject{CommonName: "other"}, CSR: csrWith(t, key)})
				return err
			}, codeKeyCompromised},
			// second was revoked with the key (see
			// TestKeyCompromiseReachesEveryCertificateOfTheKey).
			"extend another certificate for the key": {func() error {
				_, err := e.Extend(context.Background(), ra, "extend-it", second.Serial, 30)
				return err
			}, api.CodeInvalidState},
		} {
			if err := c.do(); engine.CodeOf(err) != c.want {
				t.Errorf("%s: %v, want %s", name, err, c.want)
			}
		}
	}
	refusals(e)
	if rec, err := e.Status(other.Serial); err != nil || rec.Status != store.StatusGood {
		t.Errorf("certificate of another key: %+v, %v", rec, err)
	}

	// A store without the index (as an earlier signerd wrote it).
	e.Close()
	st.Close()
	at.DropTable(t, "compromised-keys")
	refusals(ca.Engine(t, at.Open(t), engine.Config{}))
}
