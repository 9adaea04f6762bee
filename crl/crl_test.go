package crl_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/lint"
	"signerd/revocation"
)

// softCA is a CA certificate of a software key, enough for smx509 to
// build a CRL with (the oracle) and for a TBS to name.
type softCA struct {
	cert *smx509.Certificate
	key  crypto.Signer
	alg  smx509.SignatureAlgorithm
}

func newSoftCA(t testing.TB, sm bool) *softCA {
	t.Helper()
	var key crypto.Signer
	alg := smx509.ECDSAWithSHA256
	var err error
	if sm {
		key, err = sm2.GenerateKey(rand.Reader)
		alg = smx509.SM2WithSM3
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crl test CA", Organization: []string{"signerd"}, Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(40, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &softCA{cert: cert, key: key, alg: alg}
}

func build(t testing.TB, ca *softCA, s crl.Scope, entries []crl.Entry) []byte {
	t.Helper()
	b, err := crl.NewTBS(ca.cert, ca.alg, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := b.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if b.Len() != len(entries) {
		t.Fatalf("Len %d after %d entries", b.Len(), len(entries))
	}
	tbs, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return tbs
}

// oracle is the TBS smx509.CreateRevocationList makes of the same
// content; extra extensions are encoded here with encoding/asn1, apart
// from the package's own encoder.
func oracle(t testing.TB, ca *softCA, s crl.Scope, entries []crl.Entry) []byte {
	t.Helper()
	tmpl := &smx509.RevocationList{Number: new(big.Int).SetUint64(s.Number), ThisUpdate: s.ThisUpdate, NextUpdate: s.NextUpdate}
	for _, e := range entries {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, smx509.RevocationListEntry{
			SerialNumber: new(big.Int).SetBytes(e.Serial), RevocationTime: e.RevokedAt, ReasonCode: int(e.Reason)})
	}
	tmpl.ExtraExtensions = extraExtensions(t, s)
	der, err := smx509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := smx509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return l.RawTBSRevocationList
}

// The RFC 5280 structures, as Go's x509 declares them.
type distributionPointName struct {
	FullName []asn1.RawValue `asn1:"optional,tag:0"`
}

type issuingDistributionPoint struct {
	DistributionPoint     distributionPointName `asn1:"optional,tag:0"`
	OnlyContainsUserCerts bool                  `asn1:"optional,tag:1"`
}

type distributionPoint struct {
	DistributionPoint distributionPointName `asn1:"optional,tag:0"`
}

func uriName(u string) distributionPointName {
	return distributionPointName{FullName: []asn1.RawValue{{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(u)}}}
}

var (
	oidIDP      = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDelta    = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshest = asn1.ObjectIdentifier{2, 5, 29, 46}
)

func extraExtensions(t testing.TB, s crl.Scope) []pkix.Extension {
	t.Helper()
	var exts []pkix.Extension
	add := func(oid asn1.ObjectIdentifier, critical bool, v any) {
		der, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		exts = append(exts, pkix.Extension{Id: oid, Critical: critical, Value: der})
	}
	if s.IDP != "" {
		add(oidIDP, true, issuingDistributionPoint{DistributionPoint: uriName(s.IDP), OnlyContainsUserCerts: true})
	}
	if s.DeltaOf != 0 {
		add(oidDelta, true, new(big.Int).SetUint64(s.DeltaOf))
	}
	if s.Freshest != "" {
		add(oidFreshest, false, []distributionPoint{{DistributionPoint: uriName(s.Freshest)}})
	}
	return exts
}

// The encoder writes what smx509 writes for the same content, byte for
// byte, including the extensions smx509 takes ready-made.
func TestTBSMatchesSMX509(t *testing.T) {
	now := time.Date(2026, 5, 17, 10, 20, 30, 123456789, time.FixedZone("CST", 8*3600))
	base := crl.Scope{Number: 42, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}
	with := func(f func(*crl.Scope)) crl.Scope { s := base; f(&s); return s }
	tests := []struct {
		name    string
		scope   crl.Scope
		entries []crl.Entry
	}{
		{"empty", base, nil},
		{"one entry, unspecified", base, []crl.Entry{{Serial: []byte{7}, RevokedAt: now.Add(-time.Hour)}}},
		{"every reason, bytewise order",
			base, []crl.Entry{
				{Serial: []byte{0x01}, RevokedAt: now, Reason: revocation.KeyCompromise},
				{Serial: []byte{0x01, 0x00}, RevokedAt: now, Reason: revocation.CACompromise},
				{Serial: []byte{0x02}, RevokedAt: now, Reason: revocation.AffiliationChanged},
				{Serial: []byte{0x10, 0x20, 0x30}, RevokedAt: now, Reason: revocation.Superseded},
				{Serial: []byte{0x7f, 0xff}, RevokedAt: now, Reason: revocation.CessationOfOperation},
				{Serial: []byte{0x80}, RevokedAt: now, Reason: revocation.CertificateHold},
				{Serial: []byte{0x80, 0x01}, RevokedAt: now, Reason: revocation.PrivilegeWithdrawn},
				{Serial: []byte{0xff, 0xff, 0xff}, RevokedAt: now, Reason: revocation.AACompromise},
			}},
		{"16- and 20-octet serials", base, []crl.Entry{
			{Serial: bytes.Repeat([]byte{0x5a}, 16), RevokedAt: now, Reason: revocation.KeyCompromise},
			{Serial: bytes.Repeat([]byte{0x7f}, 20), RevokedAt: now},
			{Serial: bytes.Repeat([]byte{0x80}, 19), RevokedAt: now},
		}},
		{"times around 2050 and before 1950",
			with(func(s *crl.Scope) {
				s.ThisUpdate = time.Date(2049, 12, 31, 23, 59, 59, 999, time.UTC)
				s.NextUpdate = time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)
			}), []crl.Entry{
				{Serial: []byte{1}, RevokedAt: time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC)},
				{Serial: []byte{2}, RevokedAt: time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), Reason: revocation.Superseded},
			}},
		{"both after 2050", with(func(s *crl.Scope) {
			s.ThisUpdate = time.Date(2071, 3, 4, 5, 6, 7, 0, time.UTC)
			s.NextUpdate = s.ThisUpdate.Add(time.Hour)
		}), []crl.Entry{{Serial: []byte{3}, RevokedAt: time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{"largest number", with(func(s *crl.Scope) { s.Number = 1<<64 - 1 }), nil},
		{"IDP", with(func(s *crl.Scope) { s.IDP = "http://crl.example.cn/issuing/3.crl" }),
			[]crl.Entry{{Serial: []byte{0x0f, 0x01}, RevokedAt: now}}},
		{"IDP and Freshest", with(func(s *crl.Scope) {
			s.IDP, s.Freshest = "http://crl.example.cn/issuing/3.crl", "http://crl.example.cn/issuing/3-delta.crl"
		}), nil},
		{"delta with IDP", with(func(s *crl.Scope) { s.IDP, s.DeltaOf = "http://crl.example.cn/issuing/3.crl", 41 }),
			[]crl.Entry{
				{Serial: []byte{0x0f, 0x01}, RevokedAt: now, Reason: revocation.KeyCompromise},
				{Serial: []byte{0x0f, 0x02}, RevokedAt: now, Reason: revocation.RemoveFromCRL},
			}},
		{"long IDP", with(func(s *crl.Scope) { s.IDP = "http://crl.example.cn/" + strings.Repeat("a", 300) + ".crl" }), nil},
	}
	for _, sm := range []bool{true, false} {
		ca := newSoftCA(t, sm)
		for _, tt := range tests {
			t.Run(ca.alg.String()+"/"+tt.name, func(t *testing.T) {
				got, want := build(t, ca, tt.scope, tt.entries), oracle(t, ca, tt.scope, tt.entries)
				if !bytes.Equal(got, want) {
					t.Fatalf("TBS differs from smx509's:\n got %x\nwant %x", got, want)
				}
			})
		}
	}
}

// smx509 reads back the extensions of a sharded complete CRL and of its
// delta as what they say.
func TestExtensionsParseBack(t *testing.T) {
	ca := newSoftCA(t, true)
	now := time.Now()
	idp, freshest := "http://crl.example.cn/issuing/5.crl", "http://crl.example.cn/issuing/5-delta.crl"
	for _, s := range []crl.Scope{
		{Number: 10, ThisUpdate: now, NextUpdate: now.Add(time.Hour), IDP: idp, Freshest: freshest},
		{Number: 11, ThisUpdate: now, NextUpdate: now.Add(time.Hour), IDP: idp, DeltaOf: 10},
	} {
		tbs := build(t, ca, s, []crl.Entry{{Serial: []byte{9}, RevokedAt: now, Reason: revocation.KeyCompromise}})
		der, err := lint.Unsigned(tbs)
		if err != nil {
			t.Fatal(err)
		}
		l, err := smx509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if l.Number.Uint64() != s.Number || len(l.RevokedCertificateEntries) != 1 || l.RevokedCertificateEntries[0].ReasonCode != 1 {
			t.Fatalf("CRL %d parsed as number %v with %d entries", s.Number, l.Number, len(l.RevokedCertificateEntries))
		}
		found := map[string]pkix.Extension{}
		for _, e := range l.Extensions {
			found[e.Id.String()] = e
		}
		wantExt := func(oid asn1.ObjectIdentifier, critical bool, value any) {
			t.Helper()
			e, ok := found[oid.String()]
			if !ok || e.Critical != critical {
				t.Fatalf("CRL %d: extension %v present %v critical %v; want critical %v", s.Number, oid, ok, e.Critical, critical)
			}
			if rest, err := asn1.Unmarshal(e.Value, value); err != nil || len(rest) > 0 {
				t.Fatalf("CRL %d: extension %v: %v", s.Number, oid, err)
			}
		}
		var p issuingDistributionPoint
		wantExt(oidIDP, true, &p)
		if !p.OnlyContainsUserCerts || len(p.DistributionPoint.FullName) != 1 || string(p.DistributionPoint.FullName[0].Bytes) != idp {
			t.Fatalf("IDP %+v", p)
		}
		if s.DeltaOf != 0 {
			var baseNumber *big.Int
			wantExt(oidDelta, true, &baseNumber)
			if baseNumber.Uint64() != s.DeltaOf {
				t.Fatalf("delta of %v, want %d", baseNumber, s.DeltaOf)
			}
			if _, ok := found[oidFreshest.String()]; ok {
				t.Fatal("a delta names a Freshest CRL")
			}
		} else {
			var dps []distributionPoint
			wantExt(oidFreshest, false, &dps)
			if len(dps) != 1 || string(dps[0].DistributionPoint.FullName[0].Bytes) != freshest {
				t.Fatalf("Freshest CRL %+v", dps)
			}
			if _, ok := found[oidDelta.String()]; ok {
				t.Fatal("a complete CRL carries a Delta CRL Indicator")
			}
		}
	}
}

// What the encoder cannot encode, or what a CRL of its kind must not
// list, it refuses, and a TBS refused once stays refused.
func TestRefusals(t *testing.T) {
	ca := newSoftCA(t, true)
	now := time.Now()
	complete := crl.Scope{Number: 5, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	delta := crl.Scope{Number: 5, ThisUpdate: now, NextUpdate: now.Add(time.Hour), DeltaOf: 4}
	t.Run("scope", func(t *testing.T) {
		with := func(f func(*crl.Scope)) crl.Scope { s := complete; f(&s); return s }
		for name, s := range map[string]crl.Scope{
			"number 0":          with(func(s *crl.Scope) { s.Number = 0 }),
			"nextUpdate = this": with(func(s *crl.Scope) { s.NextUpdate = s.ThisUpdate }),
			"nextUpdate within 1s": with(func(s *crl.Scope) {
				s.ThisUpdate = s.ThisUpdate.Truncate(time.Second)
				s.NextUpdate = s.ThisUpdate.Add(time.Second / 2)
			}),
			"delta of itself":      with(func(s *crl.Scope) { s.DeltaOf = 5 }),
			"delta of a later CRL": with(func(s *crl.Scope) { s.DeltaOf = 6 }),
			"Freshest in a delta":  with(func(s *crl.Scope) { s.DeltaOf, s.Freshest = 4, "http://x.example/d.crl" }),
			"relative IDP":         with(func(s *crl.Scope) { s.IDP = "/3.crl" }),
			"IDP with a space":     with(func(s *crl.Scope) { s.IDP = "http://x.example/a b.crl" }),
			"year 10000":           with(func(s *crl.Scope) { s.NextUpdate = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }),
		} {
			if _, err := crl.NewTBS(ca.cert, ca.alg, s); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if _, err := crl.NewTBS(ca.cert, smx509.SHA256WithRSA, complete); err == nil {
			t.Error("RSA accepted")
		}
	})
	good := crl.Entry{Serial: []byte{0x10}, RevokedAt: now}
	for _, tc := range []struct {
		name  string
		scope crl.Scope
		e     crl.Entry
	}{
		{"same serial twice", complete, good},
		{"smaller serial", complete, crl.Entry{Serial: []byte{0x0f, 0xff}, RevokedAt: now}},
		{"a prefix of the last serial", complete, crl.Entry{Serial: []byte{0x01}, RevokedAt: now}},
		{"empty serial", complete, crl.Entry{RevokedAt: now}},
		{"leading zero", complete, crl.Entry{Serial: []byte{0, 0x80}, RevokedAt: now}},
		{"21-octet INTEGER", complete, crl.Entry{Serial: bytes.Repeat([]byte{0x80}, 20), RevokedAt: now}},
		{"no time", complete, crl.Entry{Serial: []byte{0x20}}},
		{"reason 7", complete, crl.Entry{Serial: []byte{0x20}, RevokedAt: now, Reason: 7}},
		{"reason 11", complete, crl.Entry{Serial: []byte{0x20}, RevokedAt: now, Reason: 11}},
		{"negative reason", complete, crl.Entry{Serial: []byte{0x20}, RevokedAt: now, Reason: -1}},
		{"removeFromCRL in a complete CRL", complete, crl.Entry{Serial: []byte{0x20}, RevokedAt: now, Reason: revocation.RemoveFromCRL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := crl.NewTBS(ca.cert, ca.alg, tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Add(good); err != nil {
				t.Fatal(err)
			}
			if err := b.Add(tc.e); err == nil {
				t.Fatal("accepted")
			}
			if err := b.Add(crl.Entry{Serial: []byte{0x7f}, RevokedAt: now}); err == nil {
				t.Fatal("a good entry accepted after a refusal")
			}
			if tbs, err := b.Finish(); err == nil || tbs != nil {
				t.Fatal("finished after a refusal")
			}
		})
	}
	b, _ := crl.NewTBS(ca.cert, ca.alg, delta)
	if err := b.Add(crl.Entry{Serial: []byte{0x20}, RevokedAt: now, Reason: revocation.RemoveFromCRL}); err != nil {
		t.Fatalf("removeFromCRL in a delta: %v", err)
	}
}
