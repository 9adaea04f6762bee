package engine_test

import (
	"bytes"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestLeftoverClaimDoesNotBlockReplacement: a certificate's claim
// (Superseding) that names a request not being signed to replace it is a
// leftover, not a replacement in flight: an older signerd that burned the
// request at start without releasing the claim (its request record has no
// "replaces"), a store restored without the request, or a claim naming a
// request that was issued as something else. Where the claim is checked
// (reserve) it counts as released, so the certificate is renewed or
// extended once, and the claim then names the replacement's request until
// it is recorded. A claim whose request is in flight still refuses (see
// TestRacingReplacementsAndRevocations).
func TestLeftoverClaimDoesNotBlockReplacement(t *testing.T) {
	now := time.Now().UTC()
	cases := []struct {
		name  string
		claim string
		leave func(tx *store.Tx) error // what the older signerd or the restore left
	}{
		{"failed request, burned by an older signerd", "leftover-extend", func(tx *store.Tx) error {
			return tx.PutRequest(&store.Request{ID: "leftover-extend", Digest: []byte{1}, Kind: "extend", Profile: "device-sign",
				State: store.RequestFailed, Serial: []byte{0x11, 0x22}, Burned: [][]byte{{0x11, 0x22}}, Created: now, Updated: now})
		}},
		{"request missing from a restored store", "restored-away", func(*store.Tx) error { return nil }},
		{"request issued as another certificate", "other", func(*store.Tx) error { return nil }},
	}
	ops := []struct {
		name string
		op   func(t *testing.T) replaceOp
	}{
		{"extend", func(*testing.T) replaceOp { return extendOp }},
		{"renew", renewOp},
	}
	for _, tc := range cases {
		for _, op := range ops {
			t.Run(tc.name+"/"+op.name, func(t *testing.T) {
				ca := enginetest.NewCA(t)
				st := enginetest.OpenStore(t)
				e := ca.Engine(t, st, engine.Config{})
				old := issue(t, e, request(t, "old"))
				issue(t, e, request(t, "other"))
				replace := op.op(t)
				e.Close()
				if err := st.Update(func(tx *store.Tx) error {
					c, err := tx.Certificate(old.Serial)
					if err != nil {
						return err
					}
					c.Superseding = tc.claim
					if err := tx.PutCertificate(c); err != nil {
						return err
					}
					return tc.leave(tx)
				}); err != nil {
					t.Fatal(err)
				}

				e = ca.Engine(t, st, engine.Config{})
				next, err := replace(e, "replacement", old.Serial)
				if err != nil {
					t.Fatalf("%s of a good certificate whose only claim is a leftover (%s): %v", op.name, tc.claim, err)
				}
				rec, err := e.Status(old.Serial)
				if err != nil {
					t.Fatal(err)
				}
				if rec.Status != store.StatusSuperseded || !bytes.Equal(rec.SupersededBy, next.Serial) || rec.Superseding != "" {
					t.Errorf("old certificate after the %s: %s, superseded by %x, claimed by %q; want superseded by %x, no claim",
						op.name, rec.Status, rec.SupersededBy, rec.Superseding, next.Serial)
				}
				// Replaced once: the next replacement is refused.
				if _, err := replace(e, "second", old.Serial); engine.CodeOf(err) != codeAlreadySuperseded {
					t.Errorf("a second %s: %v, want %s", op.name, err, codeAlreadySuperseded)
				}
				checkLines(t, st)
			})
		}
	}
}
