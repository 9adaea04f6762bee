package lint_test

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/lint"
)

// tbsParts are a TBSCertList's elements, each DER, for building CRLs a
// correct encoder would not.
type tbsParts struct {
	version, alg, issuer, thisUpdate, nextUpdate []byte
	entries                                      [][]byte // nil: no revokedCertificates
	emptyEntries                                 bool     // an empty revokedCertificates
	exts                                         [][]byte
	trailing                                     []byte
}

func (p tbsParts) der(t *testing.T) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, e := range [][]byte{p.version, p.alg, p.issuer, p.thisUpdate, p.nextUpdate} {
			b.AddBytes(e)
		}
		if p.entries != nil || p.emptyEntries {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, e := range p.entries {
					b.AddBytes(e)
				}
			})
		}
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, e := range p.exts {
					b.AddBytes(e)
				}
			})
		})
		b.AddBytes(p.trailing)
	})
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func element(tag casn1.Tag, content []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(content) })
	return b.BytesOrPanic()
}

func seq(parts ...[]byte) []byte { return element(casn1.SEQUENCE, bytes.Join(parts, nil)) }

func utc(t time.Time) []byte {
	return element(casn1.UTCTime, []byte(t.UTC().Format("060102150405Z")))
}

func ext(oid []byte, critical bool, value []byte) []byte {
	var crit []byte
	if critical {
		crit = []byte{0x01, 0x01, 0xff}
	}
	return seq(element(casn1.OBJECT_IDENTIFIER, oid), crit, element(casn1.OCTET_STRING, value))
}

func integer(content ...byte) []byte { return element(casn1.INTEGER, content) }

func reason(code byte) []byte { return seq(ext(oidReason, false, element(casn1.ENUM, []byte{code}))) }

func entry(serial []byte, at time.Time, exts ...byte) []byte {
	var e []byte
	if len(exts) > 0 {
		e = exts
	}
	return seq(integer(serial...), utc(at), e)
}

var (
	oidAKI       = []byte{0x55, 0x1d, 0x23}
	oidNumber    = []byte{0x55, 0x1d, 0x14}
	oidIDP       = []byte{0x55, 0x1d, 0x1c}
	oidDelta     = []byte{0x55, 0x1d, 0x1b}
	oidFreshest  = []byte{0x55, 0x1d, 0x2e}
	oidReason    = []byte{0x55, 0x1d, 0x15}
	algSM2SM3    = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75}
	algECDSA256  = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	uri          = element(casn1.Tag(6).ContextSpecific(), []byte("http://crl.example.cn/3.crl"))
	fullName     = element(casn1.Tag(0).Constructed().ContextSpecific(), element(casn1.Tag(0).Constructed().ContextSpecific(), uri))
	onlyUser     = element(casn1.Tag(1).ContextSpecific(), []byte{0xff})
	goodIDP      = ext(oidIDP, true, seq(fullName, onlyUser))
	goodFreshest = ext(oidFreshest, false, seq(seq(fullName)))
)

// Each of the checks the CRL lints make beyond parsing fails on a CRL
// built to break it, and only it: the good CRLs beside them pass.
func TestCRLStreamingLints(t *testing.T) {
	ca := issuer(t, newKey(t))
	now := time.Now().Truncate(time.Second)
	earlier := now.Add(-time.Hour)
	good := func() tbsParts {
		return tbsParts{
			version: integer(1), alg: algSM2SM3, issuer: ca.RawSubject, thisUpdate: utc(now), nextUpdate: utc(now.Add(time.Hour)),
			entries: [][]byte{entry([]byte{0x10}, earlier), entry([]byte{0x20}, earlier, reason(1)...)},
			exts:    [][]byte{ext(oidAKI, false, seq(element(casn1.Tag(0).ContextSpecific(), ca.SubjectKeyId))), ext(oidNumber, false, integer(5))},
		}
	}
	with := func(f func(p *tbsParts)) tbsParts { p := good(); f(&p); return p }
	delta := func(f func(p *tbsParts)) tbsParts {
		return with(func(p *tbsParts) {
			p.exts = append(p.exts, goodIDP, ext(oidDelta, true, integer(4)))
			f(p)
		})
	}
	twelveBad := make([][]byte, 12)
	for i := range twelveBad {
		twelveBad[i] = entry([]byte{byte(0x30 + i)}, now.Add(time.Hour))
	}
	tests := []struct {
		name string
		tbs  tbsParts
		want string
	}{
		{"good", good(), ""},
		{"good: a serial after its prefix", with(func(p *tbsParts) { p.entries = append(p.entries, entry([]byte{0x20, 0x00}, earlier)) }), ""},
		{"good: a serial with a high first bit, padded", with(func(p *tbsParts) { p.entries = append(p.entries, entry([]byte{0x00, 0x80}, earlier)) }), ""},
		{"good: sharded complete CRL naming its deltas", with(func(p *tbsParts) { p.exts = append(p.exts, goodIDP, goodFreshest) }), ""},
		{"good: delta removing an entry", delta(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, earlier, reason(8)...) }), ""},
		{"no entries", with(func(p *tbsParts) { p.entries = nil }), ""},

		{"entries out of order", with(func(p *tbsParts) { p.entries[0], p.entries[1] = p.entries[1], p.entries[0] }), "strictly increase"},
		{"a serial twice", with(func(p *tbsParts) { p.entries[1] = p.entries[0] }), "strictly increase"},
		{"padded serial before a shorter one", with(func(p *tbsParts) {
			p.entries = [][]byte{entry([]byte{0x00, 0x80}, earlier), entry([]byte{0x10}, earlier)}
		}), "strictly increase"},
		{"negative serial", with(func(p *tbsParts) { p.entries = append(p.entries, entry([]byte{0x80}, earlier)) }), "negative"},
		{"zero serial", with(func(p *tbsParts) { p.entries = [][]byte{entry([]byte{0}, earlier)} }), "zero"},
		{"serial not minimal", with(func(p *tbsParts) { p.entries = append(p.entries, entry([]byte{0x00, 0x30}, earlier)) }), "minimally"},
		{"serial of 21 octets", with(func(p *tbsParts) { p.entries = append(p.entries, entry(bytes.Repeat([]byte{0x70}, 21), earlier)) }), "at most 20"},
		{"revoked after thisUpdate", with(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, now.Add(time.Second)) }), "after thisUpdate"},
		{"revocation date in GeneralizedTime before 2050", with(func(p *tbsParts) {
			p.entries[1] = seq(integer(0x20), element(casn1.GeneralizedTime, []byte(earlier.UTC().Format("20060102150405Z"))))
		}), "GeneralizedTime"},
		{"revocation date with fractions", with(func(p *tbsParts) {
			p.entries[1] = seq(integer(0x20), element(casn1.GeneralizedTime, []byte(earlier.UTC().AddDate(100, 0, 0).Format("20060102150405.5Z"))))
		}), "seconds and Z"},
		{"revocation date Feb 30", with(func(p *tbsParts) { p.entries[1] = seq(integer(0x20), element(casn1.UTCTime, []byte("260230000000Z"))) }), "does not exist"},
		{"reason 7", with(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, earlier, reason(7)...) }), "not an RFC 5280 CRLReason"},
		{"reason 11", with(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, earlier, reason(11)...) }), "not an RFC 5280 CRLReason"},
		{"reason unspecified written out", with(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, earlier, reason(0)...) }), "unspecified"},
		{"reasonCode critical", with(func(p *tbsParts) {
			p.entries[1] = entry([]byte{0x20}, earlier, seq(ext(oidReason, true, element(casn1.ENUM, []byte{1})))...)
		}), "reasonCode critical"},
		{"reasonCode twice", with(func(p *tbsParts) {
			r := ext(oidReason, false, element(casn1.ENUM, []byte{1}))
			p.entries[1] = entry([]byte{0x20}, earlier, seq(r, r)...)
		}), "reasonCode twice"},
		{"unknown critical entry extension", with(func(p *tbsParts) {
			p.entries[1] = entry([]byte{0x20}, earlier, seq(ext([]byte{0x2a, 0x03}, true, []byte{0x05, 0x00}))...)
		}), "unknown critical extension"},
		{"removeFromCRL in a complete CRL", with(func(p *tbsParts) { p.entries[1] = entry([]byte{0x20}, earlier, reason(8)...) }), "removeFromCRL"},
		{"empty revokedCertificates", with(func(p *tbsParts) { p.entries, p.emptyEntries = nil, true }), "present and empty"},
		{"many bad entries reported a few times", with(func(p *tbsParts) { p.entries = twelveBad }), "and 2 more entries fail"},

		{"IDP not critical", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidIDP, false, seq(fullName, onlyUser))) }), "issuingDistributionPoint not critical"},
		{"IDP empty", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidIDP, true, seq())) }), "empty"},
		{"IDP boolean FALSE written out", with(func(p *tbsParts) {
			p.exts = append(p.exts, ext(oidIDP, true, seq(fullName, element(casn1.Tag(1).ContextSpecific(), []byte{0}))))
		}), "not TRUE"},
		{"IDP indirect", with(func(p *tbsParts) {
			p.exts = append(p.exts, ext(oidIDP, true, seq(fullName, element(casn1.Tag(4).ContextSpecific(), []byte{0xff}))))
		}), "indirectCRL"},
		{"IDP user and CA certificates", with(func(p *tbsParts) {
			p.exts = append(p.exts, ext(oidIDP, true, seq(fullName, onlyUser, element(casn1.Tag(2).ContextSpecific(), []byte{0xff}))))
		}), "more than one"},
		{"IDP URI with a space", with(func(p *tbsParts) {
			bad := element(casn1.Tag(0).Constructed().ContextSpecific(), element(casn1.Tag(0).Constructed().ContextSpecific(),
				element(casn1.Tag(6).ContextSpecific(), []byte("http://a b/"))))
			p.exts = append(p.exts, ext(oidIDP, true, seq(bad, onlyUser)))
		}), "printable"},
		{"IDP with a field out of order", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidIDP, true, seq(onlyUser, fullName))) }), "after its last"},
		{"IDP twice", with(func(p *tbsParts) { p.exts = append(p.exts, goodIDP, goodIDP) }), "issuingDistributionPoint twice"},

		{"delta indicator not critical", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidDelta, false, integer(4))) }), "deltaCRLIndicator not critical"},
		{"delta of itself", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidDelta, true, integer(5))) }), "not below"},
		{"delta of a later CRL", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidDelta, true, integer(1, 0))) }), "not below"},
		{"Freshest CRL in a delta", delta(func(p *tbsParts) { p.exts = append(p.exts, goodFreshest) }), "freshestCRL in a delta"},
		{"Freshest CRL critical", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidFreshest, true, seq(seq(fullName)))) }), "freshestCRL critical"},

		{"no CRL number", with(func(p *tbsParts) { p.exts = p.exts[:1] }), "cRLNumber missing"},
		{"CRL number of 21 octets", with(func(p *tbsParts) { p.exts[1] = ext(oidNumber, false, integer(bytes.Repeat([]byte{0x7f}, 21)...)) }), "at most 20"},
		{"negative CRL number", with(func(p *tbsParts) { p.exts[1] = ext(oidNumber, false, integer(0xff)) }), "negative"},
		{"CRL number critical", with(func(p *tbsParts) { p.exts[1] = ext(oidNumber, true, integer(5)) }), "cRLNumber critical"},
		{"CRL number twice", with(func(p *tbsParts) { p.exts = append(p.exts, ext(oidNumber, false, integer(6))) }), "cRLNumber twice"},
		{"no AKI", with(func(p *tbsParts) { p.exts = p.exts[1:] }), "authorityKeyIdentifier missing"},
		{"AKI of another key", with(func(p *tbsParts) {
			p.exts[0] = ext(oidAKI, false, seq(element(casn1.Tag(0).ContextSpecific(), []byte{9, 9})))
		}), "authorityKeyIdentifier"},
		{"unknown critical CRL extension", with(func(p *tbsParts) { p.exts = append(p.exts, ext([]byte{0x2a, 0x03}, true, []byte{0x05, 0x00})) }), "unknown critical CRL extension"},

		{"version 1", with(func(p *tbsParts) { p.version = integer(0) }), "version"},
		{"ECDSA algorithm for an SM2 issuer", with(func(p *tbsParts) { p.alg = algECDSA256 }), "want SM2-SM3"},
		{"another issuer's name", with(func(p *tbsParts) { p.issuer = seq() }), "issuer name"},
		{"no nextUpdate", with(func(p *tbsParts) { p.nextUpdate = nil }), "nextUpdate missing"},
		{"bytes after the extensions", with(func(p *tbsParts) { p.trailing = []byte{0x05, 0x00} }), "after crlExtensions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbs := tt.tbs.der(t)
			wantLint(t, lint.CRLTBS(tbs, ca), tt.want)
			der, err := lint.Unsigned(tbs)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.CRL(der, ca), tt.want)
		})
	}
}

// The CRL's signatureAlgorithm must be the one its TBS names.
func TestCRLSignatureAlgorithmsAgree(t *testing.T) {
	ca := issuer(t, newKey(t))
	now := time.Now().Truncate(time.Second)
	tbs := tbsParts{version: integer(1), alg: algSM2SM3, issuer: ca.RawSubject, thisUpdate: utc(now), nextUpdate: utc(now.Add(time.Hour)),
		exts: [][]byte{ext(oidAKI, false, seq(element(casn1.Tag(0).ContextSpecific(), ca.SubjectKeyId))), ext(oidNumber, false, integer(5))}}.der(t)
	der, err := lint.Assemble(tbs, algECDSA256, []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	wantLint(t, lint.CRL(der, ca), "signature algorithm: tbsCertList says")
	der, _ = lint.Assemble(tbs, algSM2SM3, []byte{1})
	wantLint(t, lint.CRL(der, ca), "")
	wantLint(t, lint.CRL(append(der, 0), ca), "not a DER signed object")
}
