// Package lint checks certificates and CRLs before the HSM signs them.
//
// Each to-be-signed certificate is linted before the HSM signs it, and
// only if every lint passes is that TBS sent to the HSM; the signed result
// is linted again. Before signing, the lints take either a certificate
// signed by a throwaway software key or, cheaper, the TBS itself
// (CertificateTBS, CATBS, CRLTBS; SPEC §5.4). Key ceremonies do the same for CA
// certificates (CA) and the root's CRLs. zlint cannot parse SM2 certificates, so these
// are signerd's own, covering the RFC 5280 and GM/T 0015 rules the engine
// could plausibly get wrong: encodings it chooses (times, serials,
// algorithm fields) and the fields policy sets (validity, key usage, key
// identifiers).
package lint

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Usage is what an end-entity certificate's key is for (GM/T 0015 dual
// certificates).
type Usage int

const (
	Signing    Usage = iota // digitalSignature + nonRepudiation
	Encryption              // keyEncipherment + dataEncipherment + keyAgreement
	// AuditLog is signerd's own audit key: digitalSignature alone, which
	// no RA profile yields, so no RA certificate passes for it.
	AuditLog
	// OCSPSigning is a delegated OCSP responder's key: digitalSignature,
	// id-kp-OCSPSigning and id-pkix-ocsp-nocheck (OCSPResponder).
	OCSPSigning
)

// KeyUsage is the exact keyUsage each Usage gets.
func (u Usage) KeyUsage() smx509.KeyUsage {
	switch u {
	case Encryption:
		return smx509.KeyUsageKeyEncipherment | smx509.KeyUsageDataEncipherment | smx509.KeyUsageKeyAgreement
	case AuditLog, OCSPSigning:
		return smx509.KeyUsageDigitalSignature
	}
	return smx509.KeyUsageDigitalSignature | smx509.KeyUsageContentCommitment
}

// Certificate lints an end-entity certificate (DER, signed by any key) that
// issuer is to sign. It returns every failure, joined.
func Certificate(der []byte, issuer *smx509.Certificate, usage Usage) error {
	_, err := ParsedCertificate(der, issuer, usage)
	return err
}

// ParsedCertificate is Certificate returning also the certificate as it
// parsed it (nil if it did not parse), so a caller that needs it parsed
// (the signed certificate, to record) does not parse it a second time.
func ParsedCertificate(der []byte, issuer *smx509.Certificate, usage Usage) (*smx509.Certificate, error) {
	return lintEndEntity(der, issuer, usage, smx509.ParseCertificate)
}

// lintEndEntity lints the end-entity certificate der, which parse parses.
func lintEndEntity(der []byte, issuer *smx509.Certificate, usage Usage, parse func([]byte) (*smx509.Certificate, error)) (*smx509.Certificate, error) {
	c, errs := lintCertificate(der, issuer, parse)
	if c == nil {
		return nil, errors.Join(errs...)
	}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.BasicConstraintsValid && c.IsCA {
		fail("basicConstraints: end-entity certificate marked CA")
	}
	if want := usage.KeyUsage(); c.KeyUsage != want {
		fail("keyUsage %b, want %b", c.KeyUsage, want)
	}
	if bytes.Equal(c.RawSubject, issuer.RawSubject) {
		fail("subject equals the issuer's name: an end-entity certificate must not read as self-issued")
	}
	if usage == OCSPSigning {
		if err := responderUse(c); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

// CertificateTBS lints an end-entity TBSCertificate before anything has
// signed it (SPEC §5.4): the same lints as Certificate, on the TBS alone,
// so that no throwaway key need sign it (an SM2 signature and the
// verification smx509 makes of it) just to be linted. The signature
// algorithm the lints compare with the TBS's is the TBS's own; it is
// compared with the real one when the signed certificate is linted.
func CertificateTBS(tbs []byte, issuer *smx509.Certificate, usage Usage) error {
	_, err := CertificateDraft(tbs, issuer, usage)
	return err
}

// CertificateDraft is CertificateTBS returning also the TBS as it parsed
// it (nil if it did not parse), wrapped as a certificate with an empty
// signature: what SignedCertificate needs to lint the signed certificate
// without parsing the same TBS again.
func CertificateDraft(tbs []byte, issuer *smx509.Certificate, usage Usage) (*smx509.Certificate, error) {
	der, err := Unsigned(tbs)
	if err != nil {
		return nil, err
	}
	return ParsedCertificate(der, issuer, usage)
}

// SignedCertificate lints der, the signed certificate of a TBS whose lints
// before signing gave draft (CertificateDraft), and returns der parsed. The
// lints run again, all of them, on the certificate der is: its structure
// (one SEQUENCE of TBS, algorithm and signature BIT STRING), its serial and
// times and the algorithm it names inside and outside the TBS are read
// from der itself; the TBS must be draft's byte for byte, so the fields
// the rest of the lints look at are draft's, parsed once (a parser reads
// the same fields from the same bytes), and only the outer parts (Raw,
// RawTBSCertificate, Signature) are der's.
func SignedCertificate(der []byte, draft *smx509.Certificate, issuer *smx509.Certificate, usage Usage) (*smx509.Certificate, error) {
	return lintEndEntity(der, issuer, usage, func(der []byte) (*smx509.Certificate, error) {
		return fromDraft(der, draft)
	})
}

// fromDraft is der parsed, der being signed over draft's TBS: draft with
// der's outer parts. It refuses der if its TBS is not draft's.
func fromDraft(der []byte, draft *smx509.Certificate) (*smx509.Certificate, error) {
	if draft == nil {
		return nil, errors.New("no linted draft")
	}
	s, err := splitSigned(der)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(s.raw, draft.RawTBSCertificate) {
		return nil, errors.New("tbsCertificate: not the one linted before signing")
	}
	sig := cryptobyte.String(s.sig)
	var bits asn1.BitString
	if !sig.ReadASN1BitString(&bits) || !sig.Empty() {
		return nil, errors.New("signatureValue: malformed BIT STRING")
	}
	c := *draft
	c.Raw, c.RawTBSCertificate, c.Signature = der, s.raw, bits.RightAlign()
	return &c, nil
}

// CATBS is CA on a TBSCertificate nothing has signed yet (CertificateTBS).
func CATBS(tbs []byte, issuer *smx509.Certificate) error {
	der, err := Unsigned(tbs)
	if err != nil {
		return err
	}
	return CA(der, issuer)
}

// Unsigned wraps a TBS (of a certificate or a CRL: both begin version,
// where present, then the signature algorithm) into the signed object's
// SEQUENCE { tbs, signatureAlgorithm, signatureValue } with the TBS's own
// algorithm and an empty signature, which parses as the signed object
// does: parsing checks no signature.
func Unsigned(tbs []byte) ([]byte, error) {
	alg, err := SignatureAlgorithm(tbs)
	if err != nil {
		return nil, err
	}
	return Assemble(tbs, alg, nil)
}

// SignatureAlgorithm is the AlgorithmIdentifier a TBSCertificate or
// TBSCertList names, which the signed object repeats outside the TBS.
func SignatureAlgorithm(tbs []byte) ([]byte, error) {
	in := cryptobyte.String(tbs)
	var body, alg cryptobyte.String
	if !in.ReadASN1(&body, casn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("not a DER TBS: one SEQUENCE expected")
	}
	if body.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		body.SkipASN1(casn1.Tag(0).Constructed().ContextSpecific()) // a certificate's [0] version
	}
	if !body.SkipOptionalASN1(casn1.INTEGER) || !body.ReadASN1Element(&alg, casn1.SEQUENCE) {
		// Past a certificate's serial or a CRL's version, the algorithm.
		return nil, errors.New("TBS: no signature algorithm where one belongs")
	}
	return alg, nil
}

// Assemble wraps a TBS, its signature algorithm and a signature into the
// signed object: SEQUENCE { tbs, signatureAlgorithm, signatureValue }, as
// certificates, CRLs and OCSP basic responses all are.
func Assemble(tbs, alg, sig []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(alg)
		b.AddASN1BitString(sig)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("assemble the signed object: %w", err)
	}
	return der, nil
}

// CA lints a CA certificate (DER, signed by any key) that issuer is to
// sign; a nil issuer means the certificate is self-issued (a root).
func CA(der []byte, issuer *smx509.Certificate) error {
	c, errs := lintCertificate(der, issuer, smx509.ParseCertificate)
	if c == nil {
		return errors.Join(errs...)
	}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !c.BasicConstraintsValid || !c.IsCA || !extensionCritical(c, oidBasicConstraints) {
		fail("basicConstraints: a CA certificate needs a critical basicConstraints with cA true")
	}
	want := smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign
	if c.KeyUsage&^smx509.KeyUsageDigitalSignature != want {
		fail("keyUsage %b: a CA's is keyCertSign and cRLSign (and at most digitalSignature)", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0 {
		fail("extKeyUsage: a CA certificate here carries none")
	}
	if issuer != nil && !bytes.Equal(issuer.RawSubject, c.RawSubject) {
		// A subordinate: the issuer's path length must leave room for it.
		switch {
		case issuer.MaxPathLenZero || (issuer.BasicConstraintsValid && issuer.MaxPathLen == 0):
			fail("the issuer's pathLenConstraint is 0: it may not certify a CA")
		case issuer.MaxPathLen > 0 && (c.MaxPathLen < 0 || c.MaxPathLen >= issuer.MaxPathLen):
			fail("pathLenConstraint %d must be below the issuer's %d", c.MaxPathLen, issuer.MaxPathLen)
		}
	}
	return errors.Join(errs...)
}

// lintCertificate runs the checks every certificate gets and returns the
// parsed certificate (nil if it does not parse) with the failures so far.
// A nil issuer means the certificate is its own. parse parses der.
func lintCertificate(der []byte, issuer *smx509.Certificate, parse func([]byte) (*smx509.Certificate, error)) (*smx509.Certificate, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	tbs, err := splitSigned(der)
	if err != nil {
		return nil, []error{err}
	}
	var version, serial, inner, issuerName, validity cryptobyte.String
	var hasVersion bool
	if !tbs.ReadOptionalASN1(&version, &hasVersion, casn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1Element(&serial, casn1.INTEGER) ||
		!tbs.ReadASN1Element(&inner, casn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&issuerName, casn1.SEQUENCE) ||
		!tbs.ReadASN1(&validity, casn1.SEQUENCE) {
		return nil, []error{errors.New("tbsCertificate: malformed")}
	}
	if err := lintSerial(serial); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, lintTimes("validity", validity, 2)...)

	c, err := parse(der)
	if err != nil {
		return nil, append(errs, fmt.Errorf("parse: %w", err))
	}
	selfIssued := issuer == nil
	if selfIssued {
		issuer = c
	}
	if !bytes.Equal(c.RawTBSCertificate, tbs.raw) {
		fail("tbsCertificate: parser and linter disagree on its bounds")
	}
	if !bytes.Equal(inner, tbs.outerAlg) {
		fail("signature algorithm: tbsCertificate says %x, certificate says %x", []byte(inner), tbs.outerAlg)
	}
	if c.Version != 3 {
		fail("version %d, want 3", c.Version)
	}
	if sm2.IsSM2PublicKey(issuer.PublicKey) && c.SignatureAlgorithm != smx509.SM2WithSM3 {
		fail("signature algorithm %v, want SM2-SM3 for an SM2 issuer", c.SignatureAlgorithm)
	}
	if !bytes.Equal(c.RawIssuer, issuer.RawSubject) {
		fail("issuer name does not equal the issuer's subject")
	}
	if len(c.RawSubject) <= 2 {
		fail("subject is empty")
	}
	if !c.NotBefore.Before(c.NotAfter) {
		fail("validity: notBefore %v is not before notAfter %v", c.NotBefore, c.NotAfter)
	}
	if c.NotBefore.Before(issuer.NotBefore) || c.NotAfter.After(issuer.NotAfter) {
		fail("validity %v..%v is outside the issuer's %v..%v", c.NotBefore, c.NotAfter, issuer.NotBefore, issuer.NotAfter)
	}
	if len(c.SubjectKeyId) == 0 {
		fail("subjectKeyIdentifier missing")
	}
	switch {
	case selfIssued && len(c.AuthorityKeyId) == 0: // optional on a root (RFC 5280 §4.2.1.1)
	case len(issuer.SubjectKeyId) == 0 || !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId):
		fail("authorityKeyIdentifier %x does not equal the issuer's SKI %x", c.AuthorityKeyId, issuer.SubjectKeyId)
	}
	if !extensionCritical(c, oidKeyUsage) {
		fail("keyUsage missing or not critical")
	}
	if len(c.UnhandledCriticalExtensions) > 0 {
		fail("unknown critical extensions %v", c.UnhandledCriticalExtensions)
	}
	return c, errs
}

// signed is a split signed object: the TBS contents (positioned after its
// header), the TBS bytes whole, the outer signature algorithm and the
// signature BIT STRING, whole.
type signed struct {
	cryptobyte.String
	raw      []byte
	outerAlg []byte
	sig      []byte
}

func splitSigned(der []byte) (signed, error) {
	input := cryptobyte.String(der)
	var outer, tbsElem, alg, sig cryptobyte.String
	if !input.ReadASN1(&outer, casn1.SEQUENCE) || !input.Empty() ||
		!outer.ReadASN1Element(&tbsElem, casn1.SEQUENCE) ||
		!outer.ReadASN1Element(&alg, casn1.SEQUENCE) ||
		!outer.ReadASN1Element(&sig, casn1.BIT_STRING) || !outer.Empty() {
		return signed{}, errors.New("not a DER signed object: SEQUENCE { tbs, algorithm, signature } expected")
	}
	raw := []byte(tbsElem)
	var tbs cryptobyte.String
	tbsElem.ReadASN1(&tbs, casn1.SEQUENCE)
	return signed{String: tbs, raw: raw, outerAlg: alg, sig: sig}, nil
}

// lintSerial checks RFC 5280 §4.1.2.2: positive, at most 20 octets, and
// DER's minimal encoding.
func lintSerial(elem cryptobyte.String) error {
	var content cryptobyte.String
	elem.ReadASN1(&content, casn1.INTEGER)
	switch {
	case len(content) == 0:
		return errors.New("serial: empty")
	case len(content) > 20:
		return fmt.Errorf("serial: %d octets, at most 20 allowed", len(content))
	case content[0]&0x80 != 0:
		return errors.New("serial: negative")
	case len(content) > 1 && content[0] == 0 && content[1]&0x80 == 0:
		return errors.New("serial: not minimally encoded")
	case len(content) == 1 && content[0] == 0:
		return errors.New("serial: zero")
	}
	return nil
}

// lintTimes reads n times from s and checks RFC 5280 §4.1.2.5: UTCTime
// through 2049, GeneralizedTime from 2050.
func lintTimes(what string, s cryptobyte.String, n int) []error {
	var errs []error
	for i := 0; i < n; i++ {
		var t time.Time
		switch {
		case s.PeekASN1Tag(casn1.UTCTime):
			if !s.ReadASN1UTCTime(&t) {
				return append(errs, fmt.Errorf("%s: malformed UTCTime", what))
			}
			if t.Year() >= 2050 {
				errs = append(errs, fmt.Errorf("%s: %v in UTCTime, must be GeneralizedTime from 2050", what, t))
			}
		case s.PeekASN1Tag(casn1.GeneralizedTime):
			if !s.ReadASN1GeneralizedTime(&t) {
				return append(errs, fmt.Errorf("%s: malformed GeneralizedTime", what))
			}
			if t.Year() < 2050 {
				errs = append(errs, fmt.Errorf("%s: %v in GeneralizedTime, must be UTCTime before 2050", what, t))
			}
		default:
			return append(errs, fmt.Errorf("%s: time %d missing", what, i+1))
		}
	}
	return errs
}

func extensionCritical(c *smx509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	return false
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)
