package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// signingAndEncryption are two requests for one key with different uses:
// a holder's CSR on a signing profile and the same key sent as the KMC's
// on an encryption profile.
func signingAndEncryption(t *testing.T, key *sm2.PrivateKey, prefix string) (sign, enc engine.Request) {
	t.Helper()
	subject := engine.Subject{CommonName: prefix}
	return engine.Request{ID: prefix + "-sign", Profile: "person-sign", Subject: subject, CSR: csrWith(t, key)},
		engine.Request{ID: prefix + "-enc", Profile: "person-enc", Subject: subject, PublicKey: spki(t, &key.PublicKey)}
}

// checkOneUsePerKey asserts over every certificate the store holds that
// no key is certified with two different keyUsages.
func checkOneUsePerKey(t *testing.T, st *store.Store) {
	t.Helper()
	uses := map[string]map[smx509.KeyUsage][]string{}
	if err := st.View(func(tx *store.Tx) error {
		return tx.Certificates(func(c *store.Certificate) error {
			x, err := smx509.ParseCertificate(c.DER)
			if err != nil {
				return err
			}
			k := string(x.RawSubjectPublicKeyInfo)
			if uses[k] == nil {
				uses[k] = map[smx509.KeyUsage][]string{}
			}
			uses[k][x.KeyUsage] = append(uses[k][x.KeyUsage], c.RequestID)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for _, u := range uses {
		if len(u) > 1 {
			t.Errorf("one key certified for %d uses: %v", len(u), u)
		}
	}
}

// TestKeyUseCheckedWhereTheRequestIsReserved: the one-key-one-use check
// runs again in the transaction that reserves the serial, against the
// certificates recorded and the requests being signed. A request whose
// key another request is certifying for another use is refused key_reused
// before the HSM signs, whether that other request is still at the HSM
// (an earlier batch) or in the same batch.
func TestKeyUseCheckedWhereTheRequestIsReserved(t *testing.T) {
	t.Run("earlier batch at the HSM", func(t *testing.T) {
		batches := make(chan int, 16)
		e, g, st := gatedEngineWith(t, engine.Config{QueueSize: 16, BatchSize: 4, Metrics: batchMetrics(batches)})
		release := releaseOnce(t, g)
		key := mustSM2(t)
		sign, enc := signingAndEncryption(t, key, "held")
		first := make(chan error, 1)
		go func() { _, err := e.Issue(context.Background(), ra, sign); first <- err }()
		<-batches
		waitPrepared(t, st, sign.ID) // and held at the HSM
		second := make(chan error, 1)
		go func() { _, err := e.Issue(context.Background(), ra, enc); second <- err }()
		// The second request passed the early check (nothing is recorded
		// for the key yet) and is in the prepare stage.
		<-batches
		release()
		if err := <-second; engine.CodeOf(err) != api.CodeKeyReused {
			t.Errorf("encryption request for a key being certified for signing when it was reserved: %v, want %s", err, api.CodeKeyReused)
		}
		if err := <-first; err != nil {
			t.Errorf("the signing request: %v", err)
		}
		if n := g.calls.Load(); n != 1 {
			t.Errorf("the HSM signed %d certificates, want 1", n)
		}
		st.View(func(tx *store.Tx) error {
			if r, err := tx.Request(enc.ID); err == nil {
				t.Errorf("the refused request was recorded (%s, serial %x): it reached the reservation", r.State, r.Serial)
			}
			return nil
		})
		checkOneUsePerKey(t, st)
		// Sent again it is still refused, now by the recorded certificate.
		if _, err := e.Issue(context.Background(), ra, enc); engine.CodeOf(err) != api.CodeKeyReused {
			t.Errorf("the refused request again: %v, want %s", err, api.CodeKeyReused)
		}
	})
	t.Run("same batch", func(t *testing.T) {
		e, g, st := gatedEngine(t, 16, 4, 0)
		release := releaseOnce(t, g)
		done := make(chan error, 4)
		submit := func(req engine.Request) {
			go func() { _, err := e.Issue(context.Background(), ra, req); done <- err }()
		}
		// One batch held at the HSM, the next prepared behind it: what is
		// queued now is taken as one batch.
		submit(request(t, "blocker-1"))
		<-g.entered
		submit(request(t, "blocker-2"))
		waitPrepared(t, st, "blocker-2")
		sign, enc := signingAndEncryption(t, mustSM2(t), "together")
		submit(sign)
		submit(enc)
		waitDepth(t, e, 2)
		release()
		var ok, reused int
		for range 4 {
			switch err := <-done; {
			case err == nil:
				ok++
			case engine.CodeOf(err) == api.CodeKeyReused:
				reused++
			default:
				t.Errorf("unexpected answer: %v", err)
			}
		}
		if ok != 3 || reused != 1 {
			t.Errorf("%d issued and %d refused key_reused; want 3 (two blockers, one of the pair) and 1", ok, reused)
		}
		checkOneUsePerKey(t, st)
	})
}

// gatedEngineWith is gatedEngine with cfg (its Issuers replaced).
func gatedEngineWith(t *testing.T, cfg engine.Config) (*engine.Engine, *gatedSigner, *store.Store) {
	t.Helper()
	ca := enginetest.NewCA(t)
	g := &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{})}
	iss, err := issuance.NewIssuer(ca.Cert, g)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Issuers = []*issuance.Issuer{iss}
	st := enginetest.OpenStore(t)
	return ca.Engine(t, st, cfg), g, st
}

// releaseOnce lets every signature of g through from the call on; it is
// also called at cleanup, before the engine drains, so a failed test does
// not leave the queue waiting on the HSM.
func releaseOnce(t *testing.T, g *gatedSigner) func() {
	t.Helper()
	var once sync.Once
	release := func() { once.Do(func() { close(g.release) }) }
	t.Cleanup(release)
	return release
}

// batchMetrics reports each batch the prepare stage takes on batches.
type batchMetrics chan int

func (m batchMetrics) Batch(n int)                    { m <- n }
func (m batchMetrics) Signature(time.Duration, error) {}

// TestRacingKeyUses races, round after round, a signing request and an
// encryption request for one new key (with other requests around them, so
// batch boundaries fall anywhere) through the real queue, SoftHSM2 and
// bbolt: exactly one of the pair issues, the other gets key_reused, and no
// key ends up certified for two uses.
func TestRacingKeyUses(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{BatchSize: 3})
	const rounds = 25
	for round := range rounds {
		sign, enc := signingAndEncryption(t, mustSM2(t), fmt.Sprintf("race-%d", round))
		reqs := []engine.Request{sign, enc}
		for i := range rand.IntN(3) {
			reqs = append(reqs, request(t, fmt.Sprintf("race-%d-other-%d", round, i)))
		}
		rand.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		errs := map[string]error{}
		for _, req := range reqs {
			wg.Go(func() {
				<-start
				_, err := e.Issue(context.Background(), ra, req)
				mu.Lock()
				errs[req.ID] = err
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		issued := 0
		for id, err := range errs {
			switch {
			case err == nil && (id == sign.ID || id == enc.ID):
				issued++
			case err != nil && (id != sign.ID && id != enc.ID || engine.CodeOf(err) != api.CodeKeyReused):
				t.Errorf("round %d: %s: %v", round, id, err)
			}
		}
		if issued != 1 {
			t.Errorf("round %d: %d of the two requests for one key with different uses issued, want 1", round, issued)
		}
		checkOneUsePerKey(t, st)
		if t.Failed() {
			return // later rounds would repeat what this one found
		}
	}
}

// TestKeyUsesAcrossASharedCommit holds a signing request for key K at the
// HSM, a blocker reserved behind it, and an encryption request for K in
// the queue. When the HSM signs, the first's record and the third's
// reservation share one transaction, record first: if the first was
// signed, the third is refused key_reused; if its signature failed (its
// serial burned in that same transaction), the third is issued.
func TestKeyUsesAcrossASharedCommit(t *testing.T) {
	for _, se := range enginetest.Stores {
		for _, failFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fail_first=%v", se.Name, failFirst), func(t *testing.T) {
				var shared atomic.Int32
				engine.SetCommitHooks(nil, func(b int) {
					if b > 1 {
						shared.Add(1)
					}
				})
				t.Cleanup(func() { engine.SetCommitHooks(nil, nil) })
				ca := enginetest.NewCA(t)
				g := &gatedSigner{Signer: ca.Signer, entered: make(chan struct{}, 1), release: make(chan struct{})}
				if failFirst {
					g.failNth = 1
				}
				iss, err := issuance.NewIssuer(ca.Cert, g)
				if err != nil {
					t.Fatal(err)
				}
				st := se.Open(t)
				e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}, QueueSize: 8, BatchSize: 1})
				release := releaseOnce(t, g)
				sign, enc := signingAndEncryption(t, mustSM2(t), "k")
				type res struct {
					id  string
					err error
				}
				out := make(chan res, 3)
				submit := func(r engine.Request) {
					go func() { _, err := e.Issue(context.Background(), ra, r); out <- res{r.ID, err} }()
				}
				submit(sign)
				<-g.entered
				submit(request(t, "blocker"))
				waitPrepared(t, st, "blocker")
				submit(enc)
				waitDepth(t, e, 1)
				release()
				got := map[string]error{}
				for range 3 {
					r := <-out
					got[r.id] = r.err
				}
				if shared.Load() == 0 {
					t.Fatal("no transaction recorded one batch and reserved another")
				}
				if failFirst {
					if got[enc.ID] != nil {
						t.Errorf("enc after the signing attempt was burned: %v, want issued", got[enc.ID])
					}
				} else if engine.CodeOf(got[enc.ID]) != api.CodeKeyReused {
					t.Errorf("enc: %v, want %s", got[enc.ID], api.CodeKeyReused)
				}
				checkOneUsePerKey(t, st)
				st.View(func(tx *store.Tx) error { return tx.VerifyAuditChain() })
			})
		}
	}
}
