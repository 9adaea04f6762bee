package engine_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
)

// signCounter is a real HSM signer that counts what it signs.
type signCounter struct {
	*hsm.SM2Signer
	n atomic.Int32
}

func (s *signCounter) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	s.n.Add(1)
	return s.SM2Signer.SignDigest(ctx, e)
}

// TestProbeHSMSignsOnlyWithTheAuditKey: the probe signs with the audit key
// alone; an issuing key is checked without a signature, and one gone from
// the token takes the HSM down, named, and audited.
func TestProbeHSMSignsOnlyWithTheAuditKey(t *testing.T) {
	ctx := context.Background()
	ca := enginetest.NewCA(t)
	issuing := &signCounter{SM2Signer: ca.Signer}
	iss, err := issuance.NewIssuer(ca.Cert, issuing)
	if err != nil {
		t.Fatal(err)
	}
	audit := &signCounter{SM2Signer: auditKey(t, ca)}
	st := enginetest.OpenStore(t)
	e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}, AuditKey: audit, SealEvery: 1 << 20, SealInterval: time.Hour})

	issuedBefore, auditBefore := issuing.n.Load(), audit.n.Load()
	for range 3 {
		if err := e.ProbeHSM(ctx); err != nil {
			t.Fatalf("probe: %v", err)
		}
	}
	if n := issuing.n.Load() - issuedBefore; n != 0 {
		t.Errorf("three probes made %d signatures with the issuing key, want none", n)
	}
	if n := audit.n.Load() - auditBefore; n != 3 {
		t.Errorf("three probes made %d signatures with the audit key, want 3", n)
	}
	if !e.HSM().Up {
		t.Fatalf("HSM down after passing probes: %+v", e.HSM())
	}

	if err := ca.Module.DestroyKey(ctx, enginetest.IssuingLabel); err != nil {
		t.Fatal(err)
	}
	err = e.ProbeHSM(ctx)
	if err == nil || !strings.Contains(err.Error(), enginetest.IssuingLabel) {
		t.Fatalf("probe with the issuing key gone: %v, want an error naming %q", err, enginetest.IssuingLabel)
	}
	if h := e.HSM(); h.Up || !strings.Contains(h.Error, enginetest.IssuingLabel) {
		t.Errorf("HSM status with the issuing key gone: %+v", h)
	}
	var unavailable int
	for _, ev := range events(t, st) {
		if ev.Action == "hsm.unavailable" {
			unavailable++
		}
	}
	if unavailable != 1 {
		t.Errorf("%d hsm.unavailable events, want 1", unavailable)
	}
	if n := issuing.n.Load() - issuedBefore; n != 0 {
		t.Errorf("the probes made %d signatures with the issuing key", n)
	}
}
