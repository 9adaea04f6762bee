package lint_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/lint"
	"signerd/ocsp"
	"signerd/revocation"
)

// responderCert is a delegated responder's certificate for key, issued by
// ca under caKey, edited by edit.
func responderCert(t *testing.T, ca *smx509.Certificate, caKey, key *sm2.PrivateKey, edit func(*smx509.Certificate)) *smx509.Certificate {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "responder"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.AddDate(0, 1, 0), KeyUsage: smx509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []smx509.ExtKeyUsage{smx509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, Value: []byte{0x05, 0x00}}}}
	if edit != nil {
		edit(tmpl)
	}
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := smx509.ParseCertificate(der)
	return c
}

// Each OCSP lint fails the response made to break it, before signing
// (OCSPResponseTBS) and after (OCSPResponse), and the unbroken ones pass.
func TestOCSPLints(t *testing.T) {
	caKey, responderKey, otherKey := newKey(t), newKey(t), newKey(t)
	ca, other := issuer(t, caKey), issuer(t, otherKey)
	responder := responderCert(t, ca, caKey, responderKey, nil)
	now := time.Now().Truncate(time.Second)
	sm2Alg, _ := ocsp.AlgorithmIdentifier(smx509.SM2WithSM3)
	es256, _ := ocsp.AlgorithmIdentifier(smx509.ECDSAWithSHA256)
	good := ocsp.Single{Serial: []byte{0x7f, 1}, Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	revoked := good
	revoked.Status, revoked.RevokedAt, revoked.Reason = ocsp.Revoked, now.Add(-time.Minute), revocation.KeyCompromise

	type response struct {
		key        *sm2.PrivateKey     // whose key hash is the responderID
		responder  *smx509.Certificate // linted as the responder (nil: the issuer signs)
		certIDOf   *smx509.Certificate // the issuer the CertID is hashed from
		s          ocsp.Single
		producedAt time.Time
		alg        []byte
		certs      [][]byte
		edit       func(tbs []byte) []byte // after encoding
	}
	delegated := func(edit func(r *response)) response {
		r := response{key: responderKey, responder: responder, certIDOf: ca, s: good, producedAt: now, alg: sm2Alg, certs: [][]byte{responder.Raw}}
		if edit != nil {
			edit(&r)
		}
		return r
	}
	replace := func(old, new []byte) func([]byte) []byte {
		return func(tbs []byte) []byte {
			if !bytes.Contains(tbs, old) {
				t.Fatalf("%x not in the TBS", old)
			}
			return bytes.Replace(tbs, old, new, 1)
		}
	}
	for _, tc := range []struct {
		name     string
		r        response
		want     string
		signedOK bool // the failure is the envelope's, which the TBS lint cannot see
	}{
		{"delegated, good", delegated(nil), "", false},
		{"delegated, revoked", delegated(func(r *response) { r.s = revoked }), "", false},
		{"issuer signs, unknown, SM3", delegated(func(r *response) {
			r.key, r.responder, r.certs, r.s.Status = caKey, nil, nil, ocsp.Unknown
		}), "", false},
		{"responderID of another key", delegated(func(r *response) { r.key = otherKey }), "responderID byKey", false},
		{"issuer signs, responderID of the responder", delegated(func(r *response) { r.responder, r.certs = nil, nil }), "responderID byKey", false},
		{"CertID of another issuer (of the same name)", delegated(func(r *response) { r.certIDOf = other }), "CertID issuerKeyHash", false},
		{"reason removeFromCRL", delegated(func(r *response) { r.s = revoked; r.edit = replace([]byte{0x0a, 0x01, 0x01}, []byte{0x0a, 0x01, 0x08}) }), "removeFromCRL", false},
		{"reason unspecified given", delegated(func(r *response) { r.s = revoked; r.edit = replace([]byte{0x0a, 0x01, 0x01}, []byte{0x0a, 0x01, 0x00}) }), "unspecified", false},
		{"reason 7", delegated(func(r *response) { r.s = revoked; r.edit = replace([]byte{0x0a, 0x01, 0x01}, []byte{0x0a, 0x01, 0x07}) }), "not an RFC 5280 CRLReason", false},
		{"revoked after thisUpdate", delegated(func(r *response) { r.s = revoked; r.s.RevokedAt = now.Add(time.Second) }), "after thisUpdate", false},
		{"thisUpdate after producedAt", delegated(func(r *response) { r.producedAt = now.Add(-time.Second) }), "after producedAt", false},
		{"produced stale", delegated(func(r *response) { r.producedAt = now.Add(time.Hour) }), "stale when made", false},
		{"thisUpdate before the responder's validity", delegated(func(r *response) {
			r.s.ThisUpdate, r.producedAt = responder.NotBefore.Add(-time.Second), responder.NotBefore
		}), "outside the signer's validity", false},
		{"no nextUpdate", delegated(func(r *response) { r.edit = func(tbs []byte) []byte { return rebuild(t, tbs, nil, true) } }), "nextUpdate missing", false},
		{"version present", delegated(func(r *response) {
			r.edit = func(tbs []byte) []byte { return rebuild(t, tbs, []byte{0xa0, 0x03, 0x02, 0x01, 0x00}, false) }
		}), "version present", false},
		{"responder without OCSP signing", delegated(func(r *response) {
			r.responder = responderCert(t, ca, caKey, responderKey, func(c *smx509.Certificate) { c.ExtKeyUsage = []smx509.ExtKeyUsage{smx509.ExtKeyUsageServerAuth} })
			r.certs = [][]byte{r.responder.Raw}
		}), "lacks id-kp-OCSPSigning", false},
		{"responder without ocsp-nocheck", delegated(func(r *response) {
			r.responder = responderCert(t, ca, caKey, responderKey, func(c *smx509.Certificate) { c.ExtraExtensions = nil })
			r.certs = [][]byte{r.responder.Raw}
		}), "ocsp-nocheck missing", false},
		{"responder certified by another CA of the same name", delegated(func(r *response) {
			r.responder = responderCert(t, other, otherKey, responderKey, nil)
			r.certs = [][]byte{r.responder.Raw}
		}), "not signed by the issuing CA", false},
		{"ECDSA algorithm for an SM2 key", delegated(func(r *response) { r.alg = es256 }), "want SM2-SM3", true},
		{"delegated, no certs", delegated(func(r *response) { r.certs = nil }), "certs", true},
		{"issuer signs, with certs", delegated(func(r *response) { r.key, r.responder = caKey, nil }), "certs present", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			tbs, err := ocsp.ResponseTBS(&r.key.PublicKey, r.certIDOf, r.s, r.producedAt, ocsp.SM3)
			if err != nil {
				t.Fatal(err)
			}
			if r.edit != nil {
				tbs = r.edit(tbs)
			}
			if tc.signedOK {
				wantLint(t, lint.OCSPResponseTBS(tbs, r.responder, ca), "")
			} else {
				wantLint(t, lint.OCSPResponseTBS(tbs, r.responder, ca), tc.want)
			}
			der, err := ocsp.Assemble(tbs, r.alg, []byte{0x30, 0x00}, r.certs)
			if err != nil {
				t.Fatal(err)
			}
			wantLint(t, lint.OCSPResponse(der, r.responder, ca), tc.want)
			if got, err := lint.OCSPResponseData(der); err != nil || !bytes.Equal(got, tbs) {
				t.Fatalf("OCSPResponseData: %v", err)
			}
		})
	}
	for _, der := range [][]byte{ocsp.ErrorResponse(ocsp.TryLater), {0x30, 0x00}, nil} {
		if err := lint.OCSPResponse(der, nil, ca); err == nil {
			t.Errorf("%x linted", der)
		}
	}
}

// rebuild re-encodes a ResponseData of one SingleResponse with version
// (DER, nil for none) before its responderID, and, if dropNext, without
// the SingleResponse's last element (its nextUpdate).
func rebuild(t *testing.T, tbs, version []byte, dropNext bool) []byte {
	t.Helper()
	in := cryptobyte.String(tbs)
	var rd, id, produced, responses, single cryptobyte.String
	if !in.ReadASN1(&rd, casn1.SEQUENCE) || !rd.ReadAnyASN1Element(&id, new(casn1.Tag)) || !rd.ReadASN1Element(&produced, casn1.GeneralizedTime) ||
		!rd.ReadASN1(&responses, casn1.SEQUENCE) || !responses.ReadASN1(&single, casn1.SEQUENCE) {
		t.Fatal("ResponseData: unexpected layout")
	}
	var parts [][]byte
	for !single.Empty() {
		var e cryptobyte.String
		single.ReadAnyASN1Element(&e, new(casn1.Tag))
		parts = append(parts, e)
	}
	if dropNext {
		parts = parts[:len(parts)-1]
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(id)
		b.AddBytes(produced)
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(bytes.Join(parts, nil)) })
		})
	})
	return b.BytesOrPanic()
}
