package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/revocation"
	"signerd/store"
)

// codeAlreadySuperseded is spelt out rather than named so these tests
// build, and fail, against an engine without the code.
const codeAlreadySuperseded = api.Code("already_superseded")

const keyCompromise = 1

// replaceOp renews (a new key) or extends (the same key) the certificate
// with serial old under request id.
type replaceOp func(e *engine.Engine, id string, old []byte) (*store.Certificate, error)

func extendOp(e *engine.Engine, id string, old []byte) (*store.Certificate, error) {
	return e.Extend(context.Background(), ra, id, old, 30)
}

func renewOp(t *testing.T) replaceOp {
	req := request(t, "renewal") // the CSR is made here, off the racing goroutines
	return func(e *engine.Engine, id string, old []byte) (*store.Certificate, error) {
		req.ID = id
		return e.Renew(context.Background(), ra, old, req)
	}
}

// checkLines asserts over everything the store holds what renewal,
// extension and revocation must leave true whatever the interleaving:
// no certificate is replaced twice, links run both ways, nothing is
// still being signed or claimed, and no certificate for a key revoked for
// keyCompromise is valid (good, superseded or on hold).
func checkLines(t *testing.T, st *store.Store) {
	t.Helper()
	var certs []*store.Certificate
	err := st.View(func(tx *store.Tx) error {
		if fl, err := tx.InFlight(); err != nil || len(fl) != 0 {
			t.Errorf("%d requests left signing (%v)", len(fl), err)
		}
		return tx.Certificates(func(c *store.Certificate) error { certs = append(certs, c); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	bySerial := map[string]*store.Certificate{}
	keyOf := map[string]string{}
	for _, c := range certs {
		bySerial[string(c.Serial)] = c
		x, err := smx509.ParseCertificate(c.DER)
		if err != nil {
			t.Fatal(err)
		}
		keyOf[string(c.Serial)] = string(x.RawSubjectPublicKeyInfo)
	}
	successors := map[string][]string{}
	for _, c := range certs {
		if c.Replaces != nil {
			successors[string(c.Replaces)] = append(successors[string(c.Replaces)], store.HexSerial(c.Serial))
		}
		if c.SupersededBy != nil {
			if next := bySerial[string(c.SupersededBy)]; next == nil || !bytes.Equal(next.Replaces, c.Serial) {
				t.Errorf("%x is superseded by %x, which does not name it as replaced", c.Serial, c.SupersededBy)
			}
		}
	}
	for old, next := range successors {
		if len(next) > 1 {
			t.Errorf("certificate %x was replaced %d times: %v", old, len(next), next)
		}
	}
	for _, c := range certs {
		if c.Status != store.StatusRevoked || c.Reason != keyCompromise {
			continue
		}
		for _, d := range certs {
			if keyOf[string(d.Serial)] == keyOf[string(c.Serial)] && d.Status != store.StatusRevoked {
				t.Errorf("%x is revoked for keyCompromise, yet %x for the same key is %s", c.Serial, d.Serial, d.Status)
			}
		}
	}
}

// TestRevocationWhileReplacementIsSigned holds the HSM while a renewal or
// extension is recorded as signing, revokes or holds the certificate it
// replaces, and lets the HSM go on: the revocation is acknowledged at once
// and the replacement is refused, with no new certificate recorded. Once
// the hold is lifted the certificate can be replaced again.
func TestRevocationWhileReplacementIsSigned(t *testing.T) {
	e, g, st := gatedEngine(t, 16, 4, 0)
	signOne := func() { go func() { g.release <- struct{}{} }() }
	cases := []struct {
		name    string
		replace replaceOp
		act     func(serial []byte) error
		lifted  bool // the act is undone before a retry
	}{
		{"extend, keyCompromise", extendOp, func(s []byte) error { _, err := e.Revoke(ra, s, keyCompromise); return err }, false},
		{"renew, keyCompromise", renewOp(t), func(s []byte) error { _, err := e.Revoke(ra, s, keyCompromise); return err }, false},
		{"extend, affiliationChanged", extendOp, func(s []byte) error { _, err := e.Revoke(ra, s, 3); return err }, false},
		{"extend, hold", extendOp, func(s []byte) error { _, err := e.Hold(ra, s); return err }, true},
		{"renew, hold", renewOp(t), func(s []byte) error { _, err := e.Hold(ra, s); return err }, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			signOne()
			orig := issue(t, e, request(t, fmt.Sprintf("orig-%d", i)))
			id := fmt.Sprintf("replace-%d", i)
			done := make(chan error, 1)
			go func() { _, err := c.replace(e, id, orig.Serial); done <- err }()
			waitPrepared(t, st, id)
			if err := c.act(orig.Serial); err != nil {
				t.Fatalf("revocation while the replacement is signed: %v", err)
			}
			signOne()
			if err := <-done; engine.CodeOf(err) != api.CodeInvalidState {
				t.Fatalf("replacement of a certificate revoked while it was signed: %v, want %s", err, api.CodeInvalidState)
			}
			st.View(func(tx *store.Tx) error {
				r, err := tx.Request(id)
				if err != nil || r.State != store.RequestFailed {
					t.Errorf("request %s: %+v, %v; want failed", id, r, err)
				}
				if s, err := tx.Serial(r.Serial); err != nil || s.State != store.SerialBurned {
					t.Errorf("serial of the refused replacement: %+v, %v; want burned", s, err)
				}
				return nil
			})
			checkLines(t, st)
			if !c.lifted {
				return
			}
			if _, err := e.Restore(ra, orig.Serial); err != nil {
				t.Fatal(err)
			}
			signOne()
			if _, err := c.replace(e, id, orig.Serial); err != nil {
				t.Fatalf("retry after the hold was lifted: %v", err)
			}
			checkLines(t, st)
		})
	}
}

// TestKeyCompromiseReachesTheWholeLine: extensions certify the same key,
// so revoking any certificate of a line for keyCompromise revokes every
// valid certificate of that line for that key, earlier (superseded, still
// valid) and later; a renewal's new key is left alone, and another reason
// stays with the certificate it was given for.
func TestKeyCompromiseReachesTheWholeLine(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{})
	line := func(prefix string) (a, b, c, d *store.Certificate) {
		a = issue(t, e, request(t, prefix+"-a"))
		var err error
		if b, err = extendOp(e, prefix+"-b", a.Serial); err != nil {
			t.Fatal(err)
		}
		if c, err = extendOp(e, prefix+"-c", b.Serial); err != nil {
			t.Fatal(err)
		}
		if d, err = renewOp(t)(e, prefix+"-d", c.Serial); err != nil {
			t.Fatal(err)
		}
		return a, b, c, d
	}
	status := func(c *store.Certificate) (store.CertStatus, revocation.Reason) {
		t.Helper()
		rec, err := e.Status(c.Serial)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Status, rec.Reason
	}

	a, b, c, d := line("kc")
	if _, err := e.Hold(ra, a.Serial); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(ra, b.Serial, keyCompromise); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*store.Certificate{a, b, c} {
		if s, r := status(x); s != store.StatusRevoked || r != keyCompromise {
			t.Errorf("%s after keyCompromise of %s: %s, reason %d; want revoked, 1", x.RequestID, b.RequestID, s, r)
		}
	}
	if s, _ := status(d); s != store.StatusGood {
		t.Errorf("renewal %s with a new key: %s, want good", d.RequestID, s)
	}
	revokedEvents := map[string]int{}
	st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action == "certificate.revoke" && ev.Outcome == store.OutcomeOK {
				revokedEvents[ev.Object]++
			}
			return nil
		})
	})
	for _, x := range []*store.Certificate{a, b, c} {
		if n := revokedEvents[store.HexSerial(x.Serial)]; n != 1 {
			t.Errorf("%d certificate.revoke events for %s, want 1", n, x.RequestID)
		}
	}
	checkLines(t, st)
	crl := listed(checkCRL(t, ca, mustCRL(t, e)))
	for _, x := range []*store.Certificate{a, b, c} {
		if crl[hexOf(x.Serial)] != keyCompromise {
			t.Errorf("CRL lists %s with %v, want keyCompromise", x.RequestID, crl[hexOf(x.Serial)])
		}
	}

	a, b, c, _ = line("other")
	if _, err := e.Revoke(ra, b.Serial, 3); err != nil {
		t.Fatal(err)
	}
	for x, want := range map[*store.Certificate]store.CertStatus{a: store.StatusSuperseded, b: store.StatusRevoked, c: store.StatusSuperseded} {
		if s, _ := status(x); s != want {
			t.Errorf("%s after affiliationChanged of %s: %s, want %s", x.RequestID, b.RequestID, s, want)
		}
	}
	checkLines(t, st)
}

// TestRacingReplacementsAndRevocations races, round after round, several
// extensions and renewals of one certificate, with or without a
// keyCompromise revocation of it, through the real queue, SoftHSM2 and
// bbolt. Exactly one replacement issues when nothing revokes, at most one
// when something does; the others get a stable code; and the store's
// invariants (checkLines) hold after every round.
func TestRacingReplacementsAndRevocations(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{BatchSize: 3})
	cases := []struct {
		name              string // also the request ids' prefix
		extends, renews   int
		revoke            bool
		wantLosers        []api.Code
		wantExactlyOneWin bool
	}{
		{"extends", 8, 0, false, []api.Code{codeAlreadySuperseded}, true},
		{"extends-and-renewals", 5, 3, false, []api.Code{codeAlreadySuperseded}, true},
		{"extends-vs-keyCompromise", 6, 0, true, []api.Code{codeAlreadySuperseded, api.CodeInvalidState}, false},
		{"extends-and-renewals-vs-keyCompromise", 4, 3, true, []api.Code{codeAlreadySuperseded, api.CodeInvalidState}, false},
	}
	const rounds = 10
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for round := range rounds {
				orig := issue(t, e, request(t, fmt.Sprintf("%s-%d", c.name, round)))
				var ops []func() (*store.Certificate, error)
				for i := range c.extends + c.renews {
					id := fmt.Sprintf("%s-%d-%d", c.name, round, i)
					op := replaceOp(extendOp)
					if i >= c.extends {
						op = renewOp(t)
					}
					ops = append(ops, func() (*store.Certificate, error) { return op(e, id, orig.Serial) })
				}
				if c.revoke {
					ops = append(ops, func() (*store.Certificate, error) { return e.Revoke(ra, orig.Serial, keyCompromise) })
				}
				rand.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
				start := make(chan struct{})
				var wg sync.WaitGroup
				var mu sync.Mutex
				var wins []*store.Certificate
				var errs []error
				for _, op := range ops {
					wg.Go(func() {
						<-start
						rec, err := op()
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							errs = append(errs, err)
						} else if !bytes.Equal(rec.Serial, orig.Serial) {
							wins = append(wins, rec)
						}
					})
				}
				close(start)
				wg.Wait()
				if len(wins) > 1 || (c.wantExactlyOneWin && len(wins) != 1) {
					t.Errorf("round %d: %d replacements of one certificate issued", round, len(wins))
				}
				for _, err := range errs {
					if code := engine.CodeOf(err); !containsCode(c.wantLosers, code) {
						t.Errorf("round %d: a losing replacement got %v, want one of %v", round, err, c.wantLosers)
					}
				}
				if c.revoke {
					if rec, err := e.Status(orig.Serial); err != nil || rec.Status != store.StatusRevoked {
						t.Errorf("round %d: the revocation did not hold: %+v, %v", round, rec, err)
					}
				}
				checkLines(t, st)
				if t.Failed() {
					return // later rounds would repeat what this one found
				}
			}
		})
	}
}

func containsCode(codes []api.Code, c api.Code) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}
