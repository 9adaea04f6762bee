package lint

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The OCSP lints read a response with their own parser, not package
// ocsp's, so that the encoder's reading of RFC 6960 is not checked
// against itself. A response is signed by the issuer (responder nil) or
// by a delegated responder the issuer certified (RFC 6960 §4.2.2.2).

// DER of the OIDs the OCSP lints know.
var (
	derOCSPBasic   = []byte{0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01}
	derOCSPNoCheck = []byte{0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x05}
	derSHA1        = []byte{0x2b, 0x0e, 0x03, 0x02, 0x1a}
	derSHA256      = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	derSM3         = []byte{0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x11}
)

// OCSPResponse lints a successful OCSPResponse (DER, signed by any key)
// that issuer's key, or the delegated responder's when responder is not
// nil, is to sign: the ResponseData as OCSPResponseTBS, and the envelope
// around it: the basic response type, a signature algorithm of the
// signer's key, and certs carrying the responder's certificate exactly
// when a delegated responder signs.
func OCSPResponse(der []byte, responder, issuer *smx509.Certificate) error {
	r, err := splitOCSP(der)
	if err != nil {
		return err
	}
	signer := issuer
	if responder != nil {
		signer = responder
	}
	var errs []error
	if err := algorithmFits(r.alg, signer); err != nil {
		errs = append(errs, err)
	}
	switch {
	case responder == nil && r.hasCerts:
		errs = append(errs, errors.New("certs present in a response the issuer signs: relying parties have the issuer's certificate"))
	case responder != nil && (!r.hasCerts || len(r.certs) != 1 || !bytes.Equal(r.certs[0], responder.Raw)):
		errs = append(errs, fmt.Errorf("certs: %d certificates; a delegated responder's response carries its certificate alone", len(r.certs)))
	}
	return errors.Join(append(errs, lintResponseData(r.tbs, responder, issuer))...)
}

// OCSPResponseTBS is OCSPResponse on a ResponseData nothing has signed
// yet: its structure; the responderID is the signer's key hash; one
// SingleResponse whose CertID is hashed with SHA-1, SHA-256 or SM3 over
// the issuer's name and key, with a serial RFC 5280 allows; a status
// consistent with its fields; thisUpdate ≤ producedAt < nextUpdate, with
// the signer valid at thisUpdate and producedAt; and a delegated
// responder certified by the issuer for OCSP signing, with ocsp-nocheck.
func OCSPResponseTBS(tbs []byte, responder, issuer *smx509.Certificate) error {
	return lintResponseData(tbs, responder, issuer)
}

// OCSPResponseData is the tbsResponseData of a successful OCSPResponse,
// its bytes as they are in der.
func OCSPResponseData(der []byte) ([]byte, error) {
	r, err := splitOCSP(der)
	if err != nil {
		return nil, err
	}
	return r.tbs, nil
}

type ocspResponse struct {
	tbs, alg []byte
	certs    [][]byte
	hasCerts bool
}

func splitOCSP(der []byte) (ocspResponse, error) {
	var r ocspResponse
	in := cryptobyte.String(der)
	var resp, status, bytesField, rb, typ, basicOctets, basic, tbs, alg, sig cryptobyte.String
	if !in.ReadASN1(&resp, casn1.SEQUENCE) || !in.Empty() || !resp.ReadASN1(&status, casn1.ENUM) {
		return r, errors.New("OCSPResponse: malformed")
	}
	if !bytes.Equal(status, []byte{0}) {
		return r, fmt.Errorf("OCSPResponse: responseStatus %x, not successful", []byte(status))
	}
	if !resp.ReadASN1(&bytesField, casn1.Tag(0).Constructed().ContextSpecific()) || !resp.Empty() ||
		!bytesField.ReadASN1(&rb, casn1.SEQUENCE) || !bytesField.Empty() ||
		!rb.ReadASN1(&typ, casn1.OBJECT_IDENTIFIER) || !rb.ReadASN1(&basicOctets, casn1.OCTET_STRING) || !rb.Empty() {
		return r, errors.New("OCSPResponse: responseBytes malformed")
	}
	if !bytes.Equal(typ, derOCSPBasic) {
		return r, fmt.Errorf("OCSPResponse: responseType %x, not id-pkix-ocsp-basic", []byte(typ))
	}
	if !basicOctets.ReadASN1(&basic, casn1.SEQUENCE) || !basicOctets.Empty() ||
		!basic.ReadASN1Element(&tbs, casn1.SEQUENCE) || !basic.ReadASN1Element(&alg, casn1.SEQUENCE) ||
		!basic.ReadASN1(&sig, casn1.BIT_STRING) {
		return r, errors.New("BasicOCSPResponse: malformed")
	}
	r.tbs, r.alg = tbs, alg
	var certs cryptobyte.String
	if !basic.ReadOptionalASN1(&certs, &r.hasCerts, casn1.Tag(0).Constructed().ContextSpecific()) || !basic.Empty() {
		return r, errors.New("BasicOCSPResponse: malformed after the signature")
	}
	if r.hasCerts {
		var seq cryptobyte.String
		if !certs.ReadASN1(&seq, casn1.SEQUENCE) || !certs.Empty() {
			return r, errors.New("BasicOCSPResponse: certs malformed")
		}
		for !seq.Empty() {
			var c cryptobyte.String
			if !seq.ReadASN1Element(&c, casn1.SEQUENCE) {
				return r, errors.New("BasicOCSPResponse: certs malformed")
			}
			r.certs = append(r.certs, c)
		}
	}
	return r, nil
}

// lintResponseData lints a ResponseData (the whole element).
func lintResponseData(tbs []byte, responder, issuer *smx509.Certificate) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	signer := issuer
	if responder != nil {
		signer = responder
		if err := OCSPResponder(responder, issuer); err != nil {
			errs = append(errs, err)
		}
	}

	in := cryptobyte.String(tbs)
	var rd, responderID, keyHash, responses, single cryptobyte.String
	if !in.ReadASN1(&rd, casn1.SEQUENCE) || !in.Empty() {
		return errors.Join(append(errs, errors.New("ResponseData: not one DER SEQUENCE"))...)
	}
	if rd.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		fail("ResponseData: version present; v1 is the default, which DER leaves out (and there is no other)")
		rd.SkipASN1(casn1.Tag(0).Constructed().ContextSpecific())
	}
	switch {
	case rd.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()):
		fail("responderID byName: signerd's responders are named byKey")
		rd.SkipASN1(casn1.Tag(1).Constructed().ContextSpecific())
	case !rd.ReadASN1(&responderID, casn1.Tag(2).Constructed().ContextSpecific()) ||
		!responderID.ReadASN1(&keyHash, casn1.OCTET_STRING) || !responderID.Empty():
		return errors.Join(append(errs, errors.New("ResponseData: responderID malformed"))...)
	default:
		if want, err := subjectKeyBits(signer); err != nil {
			errs = append(errs, err)
		} else if h := sha1.Sum(want); !bytes.Equal(keyHash, h[:]) {
			fail("responderID byKey %x is not the SHA-1 of the signer's key, %x", []byte(keyHash), h)
		}
	}
	producedAt, err := readGeneralizedTime(&rd)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("producedAt: %w", err))...)
	}
	if !rd.ReadASN1(&responses, casn1.SEQUENCE) || !responses.ReadASN1(&single, casn1.SEQUENCE) {
		return errors.Join(append(errs, errors.New("ResponseData: responses malformed or empty"))...)
	}
	// More SingleResponses must state the same of the same certificate,
	// each under another CertID hash (ocsp.ResponseTBS).
	for seen := []string{string(certIDHash(single))}; !responses.Empty(); {
		var other cryptobyte.String
		if !responses.ReadASN1(&other, casn1.SEQUENCE) {
			return errors.Join(append(errs, errors.New("ResponseData: responses malformed"))...)
		}
		if _, _, otherErrs, err := lintSingle(other, issuer); err != nil || len(otherErrs) > 0 {
			errs = append(append(errs, otherErrs...), err)
		}
		h := string(certIDHash(other))
		if slices.Contains(seen, h) {
			fail("responses: two SingleResponses under one CertID hash")
		}
		seen = append(seen, h)
		if !sameStatement(single, other) {
			fail("responses: SingleResponses that state different things or name different certificates")
		}
	}
	if rd.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()) {
		var exts cryptobyte.String
		if !rd.ReadASN1(&exts, casn1.Tag(1).Constructed().ContextSpecific()) || !exts.ReadASN1(&exts, casn1.SEQUENCE) {
			return errors.Join(append(errs, errors.New("responseExtensions malformed"))...)
		}
		errs = append(errs, ocspExtensions("responseExtensions", exts)...)
	}
	if !rd.Empty() {
		fail("ResponseData: %d octets after its last field", len(rd))
	}
	thisUpdate, nextUpdate, singleErrs, err := lintSingle(single, issuer)
	errs = append(errs, singleErrs...)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if thisUpdate.After(producedAt) {
		fail("thisUpdate %v is after producedAt %v: a response states what was known when it was made", thisUpdate, producedAt)
	}
	if !nextUpdate.IsZero() && nextUpdate.After(signer.NotAfter) {
		fail("nextUpdate %v is after the signer's notAfter %v: the response would outlive what vouches for it", nextUpdate, signer.NotAfter)
	}
	if !nextUpdate.IsZero() && !producedAt.Before(nextUpdate) {
		fail("producedAt %v is not before nextUpdate %v: the response is stale when made", producedAt, nextUpdate)
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"thisUpdate", thisUpdate}, {"producedAt", producedAt}} {
		if t.at.Before(signer.NotBefore) || t.at.After(signer.NotAfter) {
			fail("%s %v is outside the signer's validity %v..%v", t.name, t.at, signer.NotBefore, signer.NotAfter)
		}
	}
	return errors.Join(errs...)
}

// lintSingle lints a SingleResponse's contents; it returns its
// thisUpdate and nextUpdate (zero if absent), the failures, and an error
// that ended the walk.
func lintSingle(single cryptobyte.String, issuer *smx509.Certificate) (thisUpdate, nextUpdate time.Time, errs []error, err error) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var certID, alg, oid, nameHash, keyHash, serial cryptobyte.String
	if !single.ReadASN1(&certID, casn1.SEQUENCE) || !certID.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1(&oid, casn1.OBJECT_IDENTIFIER) ||
		!certID.ReadASN1(&nameHash, casn1.OCTET_STRING) || !certID.ReadASN1(&keyHash, casn1.OCTET_STRING) ||
		!certID.ReadASN1Element(&serial, casn1.INTEGER) || !certID.Empty() {
		return time.Time{}, time.Time{}, errs, errors.New("CertID malformed")
	}
	if !bytes.Equal(alg, []byte{0x05, 0x00}) && len(alg) != 0 {
		fail("CertID hash algorithm parameters %x: NULL or absent", []byte(alg))
	}
	var h hash.Hash
	switch {
	case bytes.Equal(oid, derSHA1):
		h = sha1.New()
	case bytes.Equal(oid, derSHA256):
		h = sha256.New()
	case bytes.Equal(oid, derSM3):
		h = sm3.New()
	default:
		fail("CertID hash algorithm %x: not SHA-1, SHA-256 or SM3", []byte(oid))
	}
	if h != nil {
		h.Write(issuer.RawSubject)
		if want := h.Sum(nil); !bytes.Equal(nameHash, want) {
			fail("CertID issuerNameHash %x, the issuer's is %x", []byte(nameHash), want)
		}
		if key, err := subjectKeyBits(issuer); err != nil {
			errs = append(errs, err)
		} else {
			h.Reset()
			h.Write(key)
			if want := h.Sum(nil); !bytes.Equal(keyHash, want) {
				fail("CertID issuerKeyHash %x, the issuer's is %x", []byte(keyHash), want)
			}
		}
	}
	if err := lintSerial(serial); err != nil {
		errs = append(errs, fmt.Errorf("CertID %w", err))
	}

	var status cryptobyte.String
	var tag casn1.Tag
	if !single.ReadAnyASN1(&status, &tag) {
		return time.Time{}, time.Time{}, errs, errors.New("certStatus missing")
	}
	var revokedAt time.Time
	switch tag {
	case casn1.Tag(0).ContextSpecific(), casn1.Tag(2).ContextSpecific(): // good, unknown: [n] IMPLICIT NULL
		if len(status) != 0 {
			fail("certStatus [%d]: not an empty NULL", tag&0x1f)
		}
	case casn1.Tag(1).Constructed().ContextSpecific(): // revoked
		if revokedAt, err = readGeneralizedTime(&status); err != nil {
			return time.Time{}, time.Time{}, errs, fmt.Errorf("revocationTime: %w", err)
		}
		if !status.Empty() {
			var reason, code cryptobyte.String
			if !status.ReadASN1(&reason, casn1.Tag(0).Constructed().ContextSpecific()) || !status.Empty() ||
				!reason.ReadASN1(&code, casn1.ENUM) || !reason.Empty() || len(code) != 1 {
				return time.Time{}, time.Time{}, errs, errors.New("revocationReason: not one [0] ENUMERATED octet")
			}
			switch c := code[0]; {
			case c == 0:
				fail("revocationReason unspecified, which is said by leaving it out")
			case c == 8:
				fail("revocationReason removeFromCRL: a CRL delta's, never a status")
			case c == 7 || c > 10:
				fail("revocationReason %d is not an RFC 5280 CRLReason", c)
			}
		}
	default:
		return time.Time{}, time.Time{}, errs, fmt.Errorf("certStatus: tag %x is not good, revoked or unknown", uint8(tag))
	}

	if thisUpdate, err = readGeneralizedTime(&single); err != nil {
		return time.Time{}, time.Time{}, errs, fmt.Errorf("thisUpdate: %w", err)
	}
	var next cryptobyte.String
	var hasNext bool
	if !single.ReadOptionalASN1(&next, &hasNext, casn1.Tag(0).Constructed().ContextSpecific()) {
		return time.Time{}, time.Time{}, errs, errors.New("nextUpdate malformed")
	}
	if !hasNext {
		fail("nextUpdate missing: a response made ahead of time says when it goes stale (RFC 5019 §2.2.4)")
	} else {
		nextUpdate, err = readGeneralizedTime(&next)
		switch {
		case err != nil || !next.Empty():
			return time.Time{}, time.Time{}, errs, fmt.Errorf("nextUpdate malformed: %v", err)
		case !thisUpdate.Before(nextUpdate):
			fail("nextUpdate %v is not after thisUpdate %v", nextUpdate, thisUpdate)
		}
	}
	if !revokedAt.IsZero() && revokedAt.After(thisUpdate) {
		fail("revocationTime %v is after thisUpdate %v", revokedAt, thisUpdate)
	}
	if single.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()) {
		var exts cryptobyte.String
		if !single.ReadASN1(&exts, casn1.Tag(1).Constructed().ContextSpecific()) || !exts.ReadASN1(&exts, casn1.SEQUENCE) {
			return time.Time{}, time.Time{}, errs, errors.New("singleExtensions malformed")
		}
		errs = append(errs, ocspExtensions("singleExtensions", exts)...)
	}
	if !single.Empty() {
		fail("SingleResponse: %d octets after its last field", len(single))
	}
	return thisUpdate, nextUpdate, errs, nil
}

// ocspExtensions allows extensions signerd does not write if they are
// not critical: what a relying party may ignore, the lint may too.
func ocspExtensions(what string, exts cryptobyte.String) []error {
	var errs []error
	for !exts.Empty() {
		oid, critical, _, ok := readExtension(&exts)
		if !ok {
			return append(errs, fmt.Errorf("%s: malformed extension", what))
		}
		if critical {
			errs = append(errs, fmt.Errorf("%s: critical extension %x", what, oid))
		}
	}
	return errs
}

// subjectKeyBits is the value of a certificate's subjectPublicKey BIT
// STRING, which OCSP's key hashes are over.
func subjectKeyBits(c *smx509.Certificate) ([]byte, error) {
	in := cryptobyte.String(c.RawSubjectPublicKeyInfo)
	var spki, bits cryptobyte.String
	if !in.ReadASN1(&spki, casn1.SEQUENCE) || !spki.SkipASN1(casn1.SEQUENCE) ||
		!spki.ReadASN1(&bits, casn1.BIT_STRING) || len(bits) < 1 || bits[0] != 0 {
		return nil, fmt.Errorf("certificate %q: subjectPublicKey malformed", c.Subject)
	}
	return bits[1:], nil
}

// readGeneralizedTime reads a GeneralizedTime to the second in UTC,
// YYYYMMDDHHMMSSZ, every time in OCSP (RFC 6960 §4.2.2.1).
func readGeneralizedTime(s *cryptobyte.String) (time.Time, error) {
	var v cryptobyte.String
	if !s.ReadASN1(&v, casn1.GeneralizedTime) {
		return time.Time{}, errors.New("not a GeneralizedTime")
	}
	if len(v) != 15 || v[14] != 'Z' {
		return time.Time{}, fmt.Errorf("GeneralizedTime %q: seconds and Z, nothing else", []byte(v))
	}
	var f [6]int
	for i, w := range []int{4, 2, 2, 2, 2, 2} {
		n, ok := digits(v[:w])
		if !ok {
			return time.Time{}, fmt.Errorf("malformed GeneralizedTime %q", []byte(v))
		}
		f[i], v = n, v[w:]
	}
	t := time.Date(f[0], time.Month(f[1]), f[2], f[3], f[4], f[5], 0, time.UTC)
	if t.Month() != time.Month(f[1]) || t.Day() != f[2] || t.Hour() != f[3] || t.Minute() != f[4] || t.Second() != f[5] {
		return time.Time{}, fmt.Errorf("time %04d-%02d-%02d %02d:%02d:%02d does not exist", f[0], f[1], f[2], f[3], f[4], f[5])
	}
	return t, nil
}

// responderChecks remembers OCSPResponder's verdicts: a responder signs
// every response of its issuer, and checking its certificate's signature
// each time (an SM2 verification) would cost as much again as the one
// verification each response's own signature gets. Bounded: cleared when
// full, which a rollover every so often never fills.
var responderChecks = struct {
	sync.Mutex
	m map[[2]*smx509.Certificate]error
}{m: map[[2]*smx509.Certificate]error{}}

const maxResponderChecks = 64

// OCSPResponder checks a delegated responder's certificate (RFC 6960
// §4.2.2.2): issued by the issuer, whose signature on it verifies; an end
// entity for id-kp-OCSPSigning with id-pkix-ocsp-nocheck (§4.2.2.2.1), so
// that relying parties neither refuse it nor ask about it in turn.
// Certificates are not changed once parsed, so a pair is keyed by
// identity.
func OCSPResponder(responder, issuer *smx509.Certificate) error {
	key := [2]*smx509.Certificate{responder, issuer}
	responderChecks.Lock()
	err, ok := responderChecks.m[key]
	responderChecks.Unlock()
	if ok {
		return err
	}
	err = checkResponderCertificate(responder, issuer)
	responderChecks.Lock()
	if len(responderChecks.m) >= maxResponderChecks {
		clear(responderChecks.m)
	}
	responderChecks.m[key] = err
	responderChecks.Unlock()
	return err
}

func checkResponderCertificate(responder, issuer *smx509.Certificate) error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("delegated responder: "+format, args...))
	}
	if !bytes.Equal(responder.RawIssuer, issuer.RawSubject) {
		fail("issuer name is not the issuing CA's subject")
	} else if err := responder.CheckSignatureFrom(issuer); err != nil {
		fail("certificate not signed by the issuing CA: %v", err)
	}
	return errors.Join(append(errs, responderUse(responder))...)
}

// responderUse checks what makes a certificate a delegated responder's:
// id-kp-OCSPSigning, id-pkix-ocsp-nocheck, an end entity's, signing.
func responderUse(responder *smx509.Certificate) error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("delegated responder: "+format, args...))
	}
	ocspSigning := false
	for _, u := range responder.ExtKeyUsage {
		ocspSigning = ocspSigning || u == smx509.ExtKeyUsageOCSPSigning
	}
	if !ocspSigning {
		fail("extKeyUsage lacks id-kp-OCSPSigning")
	}
	noCheck := false
	for _, e := range responder.Extensions {
		if bytes.Equal(asn1OID(e.Id), derOCSPNoCheck) {
			noCheck = true
			if e.Critical || !(len(e.Value) == 0 || bytes.Equal(e.Value, []byte{0x05, 0x00})) {
				fail("id-pkix-ocsp-nocheck critical, or not NULL")
			}
		}
	}
	if !noCheck {
		fail("id-pkix-ocsp-nocheck missing: relying parties would ask for its status, with no way to get an answer signed by someone else")
	}
	if responder.IsCA {
		fail("a CA certificate; a responder's is an end entity's")
	}
	if responder.KeyUsage != 0 && responder.KeyUsage&smx509.KeyUsageDigitalSignature == 0 {
		fail("keyUsage lacks digitalSignature")
	}
	return errors.Join(errs...)
}

// asn1OID is the DER contents of oid.
func asn1OID(oid []int) []byte {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	der, err := b.Bytes()
	if err != nil || len(der) < 2 {
		return nil
	}
	return der[2:]
}

// singleParts splits a SingleResponse into its CertID's hash algorithm,
// its serial, and what follows the CertID (status and times); nil parts
// if it does not parse (lintSingle says why).
func singleParts(single cryptobyte.String) (alg, serial, rest []byte) {
	var certID, a, nameHash, keyHash, sn cryptobyte.String
	if !single.ReadASN1(&certID, casn1.SEQUENCE) || !certID.ReadASN1Element(&a, casn1.SEQUENCE) ||
		!certID.ReadASN1(&nameHash, casn1.OCTET_STRING) || !certID.ReadASN1(&keyHash, casn1.OCTET_STRING) ||
		!certID.ReadASN1Element(&sn, casn1.INTEGER) {
		return nil, nil, nil
	}
	return a, sn, single
}

// certIDHash is a SingleResponse's CertID hash algorithm (DER).
func certIDHash(single cryptobyte.String) []byte {
	alg, _, _ := singleParts(single)
	return alg
}

// sameStatement reports whether two SingleResponses name the same serial
// and state the same status and times.
func sameStatement(a, b cryptobyte.String) bool {
	_, serialA, restA := singleParts(a)
	_, serialB, restB := singleParts(b)
	return serialA != nil && bytes.Equal(serialA, serialB) && bytes.Equal(restA, restB)
}
