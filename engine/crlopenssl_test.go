package engine_test

import (
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/revocation"
	"signerd/store"
)

// TestShardCRLsInOpenSSL: OpenSSL 3, an independent implementation, reads
// a shard's CRL and its delta as relying parties will. For the SM2
// issuer it checks each signature (testdata/openssl-sm2-verify.sh) and
// reads the Issuing Distribution Point and Delta CRL Indicator. OpenSSL
// 3.0 cannot check an SM2 CRL's signature inside `verify -crl_check` (it
// has no way to pass a CRL the SM2 ID), so the revocation logic itself —
// the right shard, IDP matched against the certificate's distribution
// point, base plus delta — is checked with `verify -crl_check
// [-use_deltas]` on an ECDSA issuer whose CRLs the same engine signs.
func TestShardCRLsInOpenSSL(t *testing.T) {
	t.Run("sm2", func(t *testing.T) {
		ca := enginetest.NewCA(t)
		sched := engine.CRLSchedule{Interval: time.Minute, AfterRevocation: time.Minute, DeltaInterval: 200 * time.Millisecond, DeltaValidity: 2 * time.Second, Poll: 50 * time.Millisecond}
		e, _, _ := shardedEngine(t, ca, enginetest.OpenStore(t), sched, 2*time.Minute)
		c := issue(t, e, request(t, "sm2"))
		k := crl.Shard(c.Serial, 4)
		if _, err := e.Revoke(ra, c.Serial, revocation.KeyCompromise); err != nil {
			t.Fatal(err)
		}
		base, err := e.SignCRL(context.Background(), store.Actor{Role: "operator"}, engine.CRLName{Shard: k})
		if err != nil {
			t.Fatal(err)
		}
		c2 := issueInShard(t, e, k, 4, "sm2-held")
		if _, err := e.Hold(ra, c2.Serial); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the hold on the delta", func() bool {
			d := latest(t, e, engine.CRLName{Shard: k, Delta: true})
			if d == nil {
				return false
			}
			_, ok := listed(d)[hexOf(c2.Serial)]
			return ok
		})
		delta, _ := e.LatestCRL(engine.CRLName{Shard: k, Delta: true})
		dir := t.TempDir()
		for name, der := range map[string][]byte{"base": base, "delta": delta} {
			enginetest.OpenSSLVerifySigned(t, ca.Cert, der)
			path := enginetest.WritePEM(t, dir, name+".pem", "X509 CRL", der)
			out, err := enginetest.OpenSSL(t, "crl", "-in", path, "-noout", "-text")
			if err != nil {
				t.Fatalf("openssl crl: %v\n%s", err, out)
			}
			for _, want := range []string{"X509v3 Issuing Distribution Point: critical", crl.URL(shardURL, k), "Only User Certificates"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s CRL as OpenSSL reads it lacks %q:\n%s", name, want, out)
				}
			}
			if name == "delta" && !strings.Contains(out, "X509v3 Delta CRL Indicator: critical") {
				t.Errorf("delta CRL as OpenSSL reads it has no critical Delta CRL Indicator:\n%s", out)
			}
		}
	})

	t.Run("ecdsa verify -crl_check", func(t *testing.T) {
		iss := ecdsaIssuer(t)
		profiles := engine.BuiltinProfiles()
		for _, p := range profiles {
			p.CRLDistribution, p.FreshestCRL = nil, true
		}
		sched := engine.CRLSchedule{Interval: time.Minute, AfterRevocation: time.Minute, DeltaInterval: 200 * time.Millisecond, DeltaValidity: 2 * time.Second, Poll: 50 * time.Millisecond}
		e, err := engine.New(engine.Config{Store: enginetest.OpenStore(t), Issuers: []*issuance.Issuer{iss}, Random: rand.Reader,
			Profiles: profiles, CRLValidity: 2 * time.Minute, CRLSchedule: sched,
			CRLShards: map[string]engine.CRLShards{iss.ID(): {Count: 4, URL: shardURL, DeltaURL: deltaURL}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		e.StartCRLSchedule()
		good := issue(t, e, request(t, "good"))
		k := crl.Shard(good.Serial, 4)
		revoked := issueInShard(t, e, k, 4, "revoked")
		held := issueInShard(t, e, k, 4, "held")
		other := issueOutsideShard(t, e, k, 4, "other")
		if _, err := e.Revoke(ra, revoked.Serial, revocation.KeyCompromise); err != nil {
			t.Fatal(err)
		}
		base, err := e.SignCRL(context.Background(), store.Actor{Role: "operator"}, engine.CRLName{Shard: k})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Hold(ra, held.Serial); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the hold on the delta", func() bool {
			d := latest(t, e, engine.CRLName{Shard: k, Delta: true})
			if d == nil {
				return false
			}
			_, ok := listed(d)[hexOf(held.Serial)]
			return ok
		})
		delta, _ := e.LatestCRL(engine.CRLName{Shard: k, Delta: true})

		dir := t.TempDir()
		caPath := enginetest.WritePEM(t, dir, "ca.pem", "CERTIFICATE", iss.Cert.Raw)
		basePath := enginetest.WritePEM(t, dir, "base.pem", "X509 CRL", base)
		deltaPath := enginetest.WritePEM(t, dir, "delta.pem", "X509 CRL", delta)
		verify := func(c *store.Certificate, extra ...string) string {
			leaf := enginetest.WritePEM(t, dir, hexOf(c.Serial)+".pem", "CERTIFICATE", c.DER)
			args := append([]string{"verify", "-crl_check", "-CAfile", caPath}, extra...)
			out, _ := enginetest.OpenSSL(t, append(args, leaf)...)
			return out
		}
		for _, tt := range []struct {
			name string
			c    *store.Certificate
			args []string
			want string
		}{
			{"good, on its shard's CRL", good, []string{"-CRLfile", basePath}, ": OK"},
			{"revoked, on its shard's CRL", revoked, []string{"-CRLfile", basePath}, "certificate revoked"},
			{"another shard's certificate: this CRL does not cover it", other, []string{"-CRLfile", basePath}, "different CRL scope"},
			{"held after the base, base alone", held, []string{"-CRLfile", basePath}, ": OK"},
			{"held after the base, base and delta", held, []string{"-use_deltas", "-CRLfile", basePath, "-CRLfile", deltaPath}, "certificate revoked"},
			{"good, base and delta", good, []string{"-use_deltas", "-CRLfile", basePath, "-CRLfile", deltaPath}, ": OK"},
		} {
			if out := verify(tt.c, tt.args...); !strings.Contains(out, tt.want) {
				t.Errorf("%s: openssl verify says\n%s\nwant %q", tt.name, out, tt.want)
			}
		}
	})
}

// ecdsaIssuer is a self-signed ECDSA P-256 CA with a software key: the
// issuer whose CRLs OpenSSL's verify can check.
func ecdsaIssuer(t *testing.T) *issuance.Issuer {
	t.Helper()
	k, err := issuance.Throwaway(hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	self, err := issuance.SelfIssuer(k)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ECDSA test CA", Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), BasicConstraintsValid: true, IsCA: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign}
	tok, err := self.PrepareCA(tmpl, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	out, err := self.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuance.NewIssuer(out.Certificate, k)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// issueInShard issues certificates until one falls in shard k of n.
func issueInShard(t *testing.T, e *engine.Engine, k, n int, id string) *store.Certificate {
	t.Helper()
	for i := range 200 {
		c := issue(t, e, request(t, id+"-"+big.NewInt(int64(i)).String()))
		if crl.Shard(c.Serial, n) == k {
			return c
		}
	}
	t.Fatalf("no certificate in shard %d of %d after 200", k, n)
	return nil
}

// issueOutsideShard issues certificates until one falls outside shard k.
func issueOutsideShard(t *testing.T, e *engine.Engine, k, n int, id string) *store.Certificate {
	t.Helper()
	for i := range 200 {
		c := issue(t, e, request(t, id+"-"+big.NewInt(int64(i)).String()))
		if crl.Shard(c.Serial, n) != k {
			return c
		}
	}
	t.Fatalf("no certificate outside shard %d of %d after 200", k, n)
	return nil
}
