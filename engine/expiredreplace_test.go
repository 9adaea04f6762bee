package engine_test

import (
	"context"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestExpiredCertificateIsNotReplaced: a certificate whose notAfter has
// passed is not renewed or extended, although its stored status is still
// good (expiry is not written to the store): the holder applies anew. The
// refusal is invalid_state, nothing is reserved or claimed, and the
// certificate stays as it was. Up to its notAfter it is replaced as usual
// (current, issued with it, has the same notAfter).
func TestExpiredCertificateIsNotReplaced(t *testing.T) {
	ops := []struct {
		name string
		op   func(t *testing.T) replaceOp
	}{
		{"extend", func(*testing.T) replaceOp { return extendOp }},
		{"renew", renewOp},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			ca := enginetest.NewCA(t)
			st := enginetest.OpenStore(t)
			clk, _ := clockNow()
			e := ca.Engine(t, st, engine.Config{Now: clk.read})
			replace := op.op(t)
			short := func(id string) *store.Certificate {
				req := request(t, id)
				req.ValidityDays = 1
				return issue(t, e, req)
			}
			expired, current := short("expired"), short("current")
			// First the replacement in time: the clock guard lets time go forward only.
			clk.set(expired.NotAfter.Add(-time.Minute))
			next, err := replace(e, "in-time", current.Serial)
			if err != nil {
				t.Fatalf("%s a minute before notAfter: %v", op.name, err)
			}
			if next.NotBefore.After(current.NotAfter) {
				t.Errorf("replacement starts %s, after its predecessor's notAfter %s", next.NotBefore, current.NotAfter)
			}

			clk.set(expired.NotAfter) // from notAfter on signerd counts a certificate expired, for every change
			if _, err := replace(e, "at-notafter", expired.Serial); engine.CodeOf(err) != api.CodeInvalidState {
				t.Errorf("%s at the certificate's notAfter: %v, want %s", op.name, err, api.CodeInvalidState)
			}
			clk.set(expired.NotAfter.Add(time.Hour))
			if _, err := replace(e, "after-notafter", expired.Serial); engine.CodeOf(err) != api.CodeInvalidState {
				t.Errorf("%s an hour after the certificate's notAfter: %v, want %s", op.name, err, api.CodeInvalidState)
			}
			rec, err := e.Status(expired.Serial)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Status != store.StatusGood || rec.Superseding != "" || rec.SupersededBy != nil {
				t.Errorf("expired certificate after the refusals: %s, claimed by %q, superseded by %x; want it untouched",
					rec.Status, rec.Superseding, rec.SupersededBy)
			}
			if err := st.View(func(tx *store.Tx) error {
				for _, id := range []string{"at-notafter", "after-notafter"} {
					if r, err := tx.Request(id); err == nil {
						t.Errorf("refused request %s recorded (%s, serial %x)", id, r.State, r.Serial)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			checkLines(t, st)
		})
	}
}

// TestReplacementJudgedAtItsBatchTime: reserve and record judge the
// certificate replaced at the same time, the batch's, which the new
// certificate's notBefore carries: an extension reserved while its
// predecessor was valid is recorded even if the wall clock passes the
// predecessor's notAfter while the HSM signs, and the two certificates
// overlap with no gap.
func TestReplacementJudgedAtItsBatchTime(t *testing.T) {
	clk, _ := clockNow()
	e, g, st := gatedEngineWith(t, engine.Config{Now: clk.read})
	release := releaseOnce(t, g)
	go func() { <-g.entered; g.release <- struct{}{} }() // the first issue signs at once
	req := request(t, "old")
	req.ValidityDays = 1
	old := issue(t, e, req)

	clk.set(old.NotAfter.Add(-time.Second))
	done := make(chan error, 1)
	var next *store.Certificate
	go func() {
		var err error
		next, err = e.Extend(context.Background(), ra, "across-expiry", old.Serial, 30)
		done <- err
	}()
	waitPrepared(t, st, "across-expiry")
	clk.set(old.NotAfter.Add(time.Hour)) // the clock passes notAfter while the HSM signs
	release()
	if err := <-done; err != nil {
		t.Fatalf("extension reserved before its predecessor expired: %v", err)
	}
	if next.NotBefore.After(old.NotAfter) {
		t.Errorf("extension starts %s, after its predecessor's notAfter %s", next.NotBefore, old.NotAfter)
	}
	checkLines(t, st)
}
