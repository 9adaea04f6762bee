package engine_test

import (
	"bytes"
	"context"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/publish"
	"signerd/revocation"
	"signerd/store"
)

const (
	shardURL = "http://crl.example.gov.cn/test/{shard}.crl"
	deltaURL = "http://crl.example.gov.cn/test/{shard}-delta.crl"
)

var (
	oidIDP           = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaIndictor = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshest      = asn1.ObjectIdentifier{2, 5, 29, 46}
)

// switchSigner fails every signature while fail is set, as an HSM that
// went away would: the fault the real token cannot produce on demand.
type switchSigner struct {
	issuance.Signer
	fail atomic.Bool
}

func (s *switchSigner) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	if s.fail.Load() {
		return nil, fmt.Errorf("C_Sign: %w", hsm.ErrTransient)
	}
	return s.Signer.SignDigest(ctx, e)
}

// shardedEngine is an engine over ca's key (through a switchSigner) whose
// CRLs are in 4 shards with deltas, signed by the schedule alone and
// published into the returned directory.
func shardedEngine(t *testing.T, ca *enginetest.CA, st *store.Store, sched engine.CRLSchedule, validity time.Duration) (*engine.Engine, *switchSigner, string) {
	t.Helper()
	sw := &switchSigner{Signer: ca.Signer}
	iss, err := issuance.NewIssuer(ca.Cert, sw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, err := publish.Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	profiles := engine.BuiltinProfiles()
	for _, p := range profiles {
		p.CRLDistribution, p.FreshestCRL = nil, true
	}
	shards := engine.CRLShards{Count: 4, URL: shardURL}
	if sched.DeltaInterval > 0 {
		shards.DeltaURL = deltaURL
	}
	e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}, Profiles: profiles, CRLValidity: validity, CRLSchedule: sched,
		CRLShards: map[string]engine.CRLShards{iss.ID(): shards}, Publish: pub})
	e.StartCRLSchedule()
	return e, sw, dir
}

// failuresOf, if set, says what the schedule alarmed, for a test that
// waited in vain.
var failuresOf func() []engine.CRLFailure

func failures() []engine.CRLFailure {
	if failuresOf == nil {
		return nil
	}
	return failuresOf()
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s (CRL failures: %+v)", what, failures())
		}
	}
}

// latest parses the latest CRL of name, nil if there is none yet.
func latest(t *testing.T, e *engine.Engine, name engine.CRLName) *smx509.RevocationList {
	t.Helper()
	der, err := e.LatestCRL(name)
	if engine.CodeOf(err) == "not_found" {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := smx509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("CRL %s: %v", name, err)
	}
	return l
}

func extension(exts []pkix.Extension, oid asn1.ObjectIdentifier) *pkix.Extension {
	for i := range exts {
		if exts[i].Id.Equal(oid) {
			return &exts[i]
		}
	}
	return nil
}

// TestCRLScheduleShards: with no operator action, every shard gets a CRL
// at start, numbers rise with each interval, a revocation shows up on its
// own shard (only) within after_revocation, and each CRL is published.
func TestCRLScheduleShards(t *testing.T) { onEachStore(t, testCRLScheduleShards) }

func testCRLScheduleShards(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	sched := engine.CRLSchedule{Interval: 2 * time.Second, AfterRevocation: 300 * time.Millisecond, Poll: 50 * time.Millisecond}
	e, _, dir := shardedEngine(t, ca, st, sched, 4*time.Second)
	id := ca.Issuer.ID()

	var certs []*store.Certificate
	for i := range 12 {
		certs = append(certs, issue(t, e, request(t, fmt.Sprintf("s%d", i))))
	}
	for _, c := range certs {
		cert, err := smx509.ParseCertificate(c.DER)
		if err != nil {
			t.Fatal(err)
		}
		want := crl.URL(shardURL, crl.Shard(c.Serial, 4))
		if !slices.Equal(cert.CRLDistributionPoints, []string{want}) {
			t.Fatalf("certificate %x names %v, want its shard's %s", c.Serial, cert.CRLDistributionPoints, want)
		}
		if extension(cert.Extensions, oidFreshest) != nil {
			t.Errorf("certificate %x: a Freshest CRL extension, and no deltas are signed", c.Serial)
		}
	}

	first := map[int]*smx509.RevocationList{}
	waitFor(t, "a CRL of every shard", func() bool {
		for k := range 4 {
			if first[k] == nil {
				first[k] = latest(t, e, engine.CRLName{Shard: k})
			}
		}
		return len(first) == 4 && first[0] != nil && first[1] != nil && first[2] != nil && first[3] != nil
	})
	for k, l := range first {
		if err := l.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
		idp := extension(l.Extensions, oidIDP)
		if idp == nil || !idp.Critical || !bytes.Contains(idp.Value, []byte(crl.URL(shardURL, k))) {
			t.Fatalf("shard %d: issuing distribution point %+v, want a critical one naming %s", k, idp, crl.URL(shardURL, k))
		}
	}

	revoked := certs[:3]
	for _, c := range revoked {
		if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	waitFor(t, "the revocations on their shards' CRLs", func() bool {
		for _, c := range revoked {
			l := latest(t, e, engine.CRLName{Shard: crl.Shard(c.Serial, 4)})
			if l == nil {
				return false
			}
			if _, ok := listed(l)[hexOf(c.Serial)]; !ok {
				return false
			}
		}
		return true
	})
	t.Logf("revocations listed %v after they were made (after_revocation %v)", time.Since(start).Round(time.Millisecond), sched.AfterRevocation)
	for k := range 4 {
		l := latest(t, e, engine.CRLName{Shard: k})
		for s := range listed(l) {
			var mine bool
			for _, c := range revoked {
				mine = mine || (hexOf(c.Serial) == s && crl.Shard(c.Serial, 4) == k)
			}
			if !mine {
				t.Errorf("shard %d lists %s, which is not its own revoked certificate", k, s)
			}
		}
	}

	// The interval alone signs the next CRL of each shard.
	waitFor(t, "a second interval's CRLs", func() bool {
		for k := range 4 {
			l := latest(t, e, engine.CRLName{Shard: k})
			if l.Number.Cmp(first[k].Number) <= 0 || !l.ThisUpdate.After(first[k].ThisUpdate.Add(sched.Interval-time.Second)) {
				return false
			}
		}
		return true
	})

	// What is published is what the store holds, under stable names.
	waitFor(t, "publication", func() bool {
		for k := range 4 {
			der, _ := e.LatestCRL(engine.CRLName{Shard: k})
			got, err := os.ReadFile(filepath.Join(dir, id, fmt.Sprintf("%d.crl", k)))
			if err != nil || !bytes.Equal(got, der) {
				return false
			}
		}
		return true
	})
}

// TestCRLScheduleDeltas: deltas list what changed since their base, a
// restore from hold as removeFromCRL, and name their base.
func TestCRLScheduleDeltas(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	// Complete CRLs rarely (the test reads deltas), deltas often.
	sched := engine.CRLSchedule{Interval: time.Minute, AfterRevocation: time.Minute, DeltaInterval: 200 * time.Millisecond, DeltaValidity: 2 * time.Second, Poll: 50 * time.Millisecond}
	e, _, _ := shardedEngine(t, ca, st, sched, 2*time.Minute)
	failuresOf = e.CRLFailures
	c := issue(t, e, request(t, "held"))
	k := crl.Shard(c.Serial, 4)
	if cert, err := smx509.ParseCertificate(c.DER); err != nil || extension(cert.Extensions, oidFreshest) == nil ||
		!bytes.Contains(extension(cert.Extensions, oidFreshest).Value, []byte(crl.URL(deltaURL, k))) {
		t.Fatalf("certificate of a profile asking for it: no Freshest CRL naming its shard's delta (%v)", err)
	}
	var base *smx509.RevocationList
	waitFor(t, "the shard's complete CRL", func() bool { base = latest(t, e, engine.CRLName{Shard: k}); return base != nil })
	if _, err := e.Hold(ra, c.Serial); err != nil {
		t.Fatal(err)
	}
	deltaListing := func(reason int) func() bool {
		return func() bool {
			d := latest(t, e, engine.CRLName{Shard: k, Delta: true})
			if d == nil {
				return false
			}
			got, ok := listed(d)[hexOf(c.Serial)]
			return ok && got == reason
		}
	}
	waitFor(t, "the hold on the shard's delta", deltaListing(int(revocation.CertificateHold)))
	d := latest(t, e, engine.CRLName{Shard: k, Delta: true})
	ind := extension(d.Extensions, oidDeltaIndictor)
	var baseNumber int64
	if ind == nil || !ind.Critical {
		t.Fatalf("delta CRL: delta CRL indicator %+v, want critical", ind)
	}
	if _, err := asn1.Unmarshal(ind.Value, &baseNumber); err != nil || baseNumber != base.Number.Int64() {
		t.Fatalf("delta names base #%d (%v), want #%v", baseNumber, err, base.Number)
	}
	if d.Number.Cmp(base.Number) <= 0 {
		t.Errorf("delta #%v not above its base #%v: complete and delta CRLs share one sequence", d.Number, base.Number)
	}
	if _, ok := listed(latest(t, e, engine.CRLName{Shard: k}))[hexOf(c.Serial)]; ok {
		t.Fatal("the complete CRL was signed again: this test means to read the delta")
	}
	if _, err := e.Restore(ra, c.Serial); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restore on the shard's delta", deltaListing(int(revocation.RemoveFromCRL)))
}

// TestCRLScheduleRetriesFailingHSM: while the HSM fails, the schedule
// retries and alarms (health, the failed signature audited), and once it
// signs again the CRL appears with no operator action.
func TestCRLScheduleRetriesFailingHSM(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	sched := engine.CRLSchedule{Interval: time.Minute, Retry: 100 * time.Millisecond, Poll: 50 * time.Millisecond}
	sw := &switchSigner{Signer: ca.Signer}
	sw.fail.Store(true)
	iss, err := issuance.NewIssuer(ca.Cert, sw)
	if err != nil {
		t.Fatal(err)
	}
	e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}, CRLSchedule: sched})
	e.StartCRLSchedule()
	waitFor(t, "the failure to be alarmed and retried", func() bool {
		f := e.CRLFailures()
		return len(f) == 1 && f[0].Attempts >= 3 && strings.Contains(f[0].Error, "C_Sign")
	})
	if n := len(eventsOf(t, st, "crl.sign")); n < 3 {
		t.Errorf("%d crl.sign events for the failed attempts, want each audited", n)
	}
	sw.fail.Store(false)
	waitFor(t, "a CRL once the HSM signs", func() bool { return latest(t, e, engine.CRLName{}) != nil && len(e.CRLFailures()) == 0 })
}

// TestCRLShardsFixedOnceIssued: the layout cannot change under
// certificates that name their shard's URL.
func TestCRLShardsFixedOnceIssued(t *testing.T) {
	ca := enginetest.NewCA(t)
	at := enginetest.NewBoltStore(t)
	st := at.Open(t)
	layout := func(n int) map[string]engine.CRLShards {
		return map[string]engine.CRLShards{ca.Issuer.ID(): {Count: n, URL: shardURL}}
	}
	profiles := engine.BuiltinProfiles()
	for _, p := range profiles {
		p.CRLDistribution = nil
	}
	e := ca.Engine(t, st, engine.Config{CRLShards: layout(2), Profiles: profiles})
	e.Close()
	// No certificate yet: the layout may still change.
	e = ca.Engine(t, st, engine.Config{CRLShards: layout(4), Profiles: profiles})
	issue(t, e, request(t, "pins"))
	e.Close()
	_, err := engine.New(engine.Config{Store: st, Issuers: []*issuance.Issuer{ca.Issuer}, Random: ca.Module.Random(),
		CRLShards: layout(8), Profiles: profiles})
	if err == nil || !strings.Contains(err.Error(), "fixed once certificates exist") {
		t.Fatalf("start with 8 shards after certificates named 4: %v", err)
	}
}

// TestCRLPublicationFailureHoldsUpNoCRL: a publication directory that
// takes no file is alarmed as a publication failure of its own; CRLs go
// on being signed (and served by GET /v1/crl), a revocation is listed
// within after_revocation, and publication resumes once the directory
// takes files again.
func TestCRLPublicationFailureHoldsUpNoCRL(t *testing.T) {
	ca := enginetest.NewCA(t)
	sched := engine.CRLSchedule{Interval: 2 * time.Second, AfterRevocation: 300 * time.Millisecond, Retry: 100 * time.Millisecond, Poll: 50 * time.Millisecond}
	e, _, dir := shardedEngine(t, ca, enginetest.OpenStore(t), sched, 4*time.Second)
	failuresOf = e.CRLFailures
	c := issue(t, e, request(t, "unpublished"))
	k := crl.Shard(c.Serial, 4)
	waitFor(t, "the first CRLs", func() bool { return latest(t, e, engine.CRLName{Shard: k}) != nil })
	id := ca.Issuer.ID()
	if err := os.Rename(filepath.Join(dir, id), filepath.Join(dir, id+".moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publication failure alarmed", func() bool {
		f := e.CRLFailures()
		return len(f) > 0 && f[0].Publishing
	})
	if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the revocation on the store's CRL", func() bool {
		_, ok := listed(latest(t, e, engine.CRLName{Shard: k}))[hexOf(c.Serial)]
		return ok
	})
	if took := time.Since(start); took > sched.Interval {
		t.Errorf("revocation listed %v after it was made, with after_revocation %v and publication failing", took, sched.AfterRevocation)
	}
	for _, f := range e.CRLFailures() {
		if !f.Publishing {
			t.Errorf("signing alarmed as failing: %+v", f)
		}
	}
	os.Remove(filepath.Join(dir, id))
	if err := os.Rename(filepath.Join(dir, id+".moved"), filepath.Join(dir, id)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publication to resume", func() bool {
		der, _ := e.LatestCRL(engine.CRLName{Shard: k})
		got, _ := os.ReadFile(filepath.Join(dir, id, fmt.Sprintf("%d.crl", k)))
		return len(e.CRLFailures()) == 0 && bytes.Equal(got, der)
	})
}

// TestCRLScheduleSignsOnceHSMIsBack: the wait that failures built up
// while the HSM failed ends when the HSM is seen back (signerd probes it
// every few seconds): a revocation made then is listed within
// after_revocation, not after the backoff.
func TestCRLScheduleSignsOnceHSMIsBack(t *testing.T) {
	ca := enginetest.NewCA(t)
	sched := engine.CRLSchedule{Interval: 3 * time.Second, AfterRevocation: 300 * time.Millisecond, Retry: 100 * time.Millisecond, Poll: 50 * time.Millisecond}
	e, sw, _ := shardedEngine(t, ca, enginetest.OpenStore(t), sched, 60*time.Second)
	failuresOf = e.CRLFailures
	c := issue(t, e, request(t, "outage"))
	k := crl.Shard(c.Serial, 4)
	waitFor(t, "the first CRLs", func() bool { return latest(t, e, engine.CRLName{Shard: k}) != nil })
	sw.fail.Store(true)
	waitFor(t, "6 failed attempts", func() bool {
		for _, f := range e.CRLFailures() {
			if f.Name.Shard == k && f.Attempts >= 6 {
				return true
			}
		}
		return false
	})
	sw.fail.Store(false)
	if err := e.ProbeHSM(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the revocation listed", func() bool {
		_, ok := listed(latest(t, e, engine.CRLName{Shard: k}))[hexOf(c.Serial)]
		return ok
	})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("revocation listed %v after it was made, the HSM back, after_revocation %v: the backoff outlived the outage", took, sched.AfterRevocation)
	}
}

// TestDeltaURLNeedsDeltas: certificates must not name a Freshest CRL
// that is never signed.
func TestDeltaURLNeedsDeltas(t *testing.T) {
	ca := enginetest.NewCA(t)
	profiles := engine.BuiltinProfiles()
	for _, p := range profiles {
		p.CRLDistribution = nil
	}
	_, err := engine.New(engine.Config{Store: enginetest.OpenStore(t), Issuers: []*issuance.Issuer{ca.Issuer}, Random: ca.Module.Random(),
		Profiles: profiles, CRLSchedule: engine.CRLSchedule{Interval: time.Hour},
		CRLShards: map[string]engine.CRLShards{ca.Issuer.ID(): {Count: 2, URL: shardURL, DeltaURL: deltaURL}}})
	if err == nil || !strings.Contains(err.Error(), "never published") {
		t.Fatalf("a delta URL without delta CRLs: %v", err)
	}
}
