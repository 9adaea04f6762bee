package lint

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The CRL lints walk the DER with cryptobyte, keeping nothing per entry:
// a CRL shard of 100k entries is linted in the memory of its own bytes.
// smx509.ParseRevocationList would hold a big.Int, a time and the
// extensions of every entry.

// CRL lints a CRL (DER, signed by any key) that issuer is to sign.
func CRL(der []byte, issuer *smx509.Certificate) error {
	tbs, err := splitSigned(der)
	if err != nil {
		return err
	}
	return lintCRL(tbs.String, tbs.outerAlg, issuer)
}

// CRLTBS is CRL on a TBSCertList nothing has signed yet (CertificateTBS).
// Unlike the certificate lints it reads the TBS itself, not a copy
// wrapped as a signed object.
func CRLTBS(tbs []byte, issuer *smx509.Certificate) error {
	in := cryptobyte.String(tbs)
	var body cryptobyte.String
	if !in.ReadASN1(&body, casn1.SEQUENCE) || !in.Empty() {
		return errors.New("tbsCertList: not one DER SEQUENCE")
	}
	return lintCRL(body, nil, issuer)
}

// SignedTBS is the TBS of a signed object (certificate, CRL), its bytes
// as they are in der.
func SignedTBS(der []byte) ([]byte, error) {
	s, err := splitSigned(der)
	if err != nil {
		return nil, err
	}
	return s.raw, nil
}

// DER of the extension OIDs (RFC 5280 §5.2, §5.3) and signature
// algorithms the CRL lints know.
var (
	derAuthorityKeyID = []byte{0x55, 0x1d, 0x23}
	derCRLNumber      = []byte{0x55, 0x1d, 0x14}
	derIssuingDP      = []byte{0x55, 0x1d, 0x1c}
	derDeltaCRL       = []byte{0x55, 0x1d, 0x1b}
	derFreshestCRL    = []byte{0x55, 0x1d, 0x2e}
	derIssuerAltName  = []byte{0x55, 0x1d, 0x12}
	derAuthorityInfo  = []byte{0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01}
	derReasonCode     = []byte{0x55, 0x1d, 0x15}
	derInvalidityDate = []byte{0x55, 0x1d, 0x18}

	algSM2WithSM3      = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75}
	algECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	algECDSAWithSHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
)

// maxEntryFailures bounds the failures reported one per entry: a CRL
// whose every entry fails yields a count, not a message per entry.
const maxEntryFailures = 10

type crlLinter struct {
	errs         []error
	entryErrs    int
	removeSerial []byte // the first entry with removeFromCRL, for a complete CRL's failure
}

func (l *crlLinter) fail(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}

func (l *crlLinter) failEntry(format string, args ...any) {
	if l.entryErrs++; l.entryErrs <= maxEntryFailures {
		l.fail(format, args...)
	}
}

// lintCRL lints a TBSCertList's contents; outerAlg is the signed CRL's
// signatureAlgorithm (nil before signing).
func lintCRL(tbs cryptobyte.String, outerAlg []byte, issuer *smx509.Certificate) error {
	var l crlLinter
	var version, alg, name cryptobyte.String
	if !tbs.ReadASN1Element(&version, casn1.INTEGER) ||
		!tbs.ReadASN1Element(&alg, casn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&name, casn1.SEQUENCE) {
		return errors.New("tbsCertList: malformed")
	}
	if !bytes.Equal(version, []byte{0x02, 0x01, 0x01}) {
		l.fail("version %x: a CRL with extensions is v2 (INTEGER 1)", []byte(version))
	}
	if outerAlg != nil && !bytes.Equal(alg, outerAlg) {
		l.fail("signature algorithm: tbsCertList says %x, CRL says %x", []byte(alg), outerAlg)
	}
	if err := algorithmFits(alg, issuer); err != nil {
		l.errs = append(l.errs, err)
	}
	if !bytes.Equal(name, issuer.RawSubject) {
		l.fail("issuer name does not equal the issuer's subject")
	}
	thisUpdate, err := readTime(&tbs)
	if err != nil {
		return errors.Join(append(l.errs, fmt.Errorf("thisUpdate: %w", err))...)
	}
	switch {
	case !tbs.PeekASN1Tag(casn1.UTCTime) && !tbs.PeekASN1Tag(casn1.GeneralizedTime):
		l.fail("nextUpdate missing: a CRL here always says when the next is due")
	default:
		nextUpdate, err := readTime(&tbs)
		if err != nil {
			return errors.Join(append(l.errs, fmt.Errorf("nextUpdate: %w", err))...)
		}
		if !thisUpdate.Before(nextUpdate) {
			l.fail("nextUpdate %v is not after thisUpdate %v", nextUpdate, thisUpdate)
		}
	}
	// thisUpdate must fall within the issuer's validity, as a certificate's
	// validity must: a CRL dated after the issuer expired (or before it
	// began) is signed by a key no path validates then. nextUpdate may
	// pass the issuer's notAfter: a CRL signed near the issuer's end keeps
	// its full validity, and the last one serves relying parties checking
	// old signatures (RFC 5280 §3.3 lets expired certificates leave it).
	if thisUpdate.Before(issuer.NotBefore) || thisUpdate.After(issuer.NotAfter) {
		l.fail("thisUpdate %v is outside the issuer's validity %v..%v", thisUpdate, issuer.NotBefore, issuer.NotAfter)
	}
	if tbs.PeekASN1Tag(casn1.SEQUENCE) {
		var entries cryptobyte.String
		tbs.ReadASN1(&entries, casn1.SEQUENCE)
		if entries.Empty() {
			l.fail("revokedCertificates: present and empty; RFC 5280 §5.1.2.6 omits it then")
		}
		if err := l.entries(entries, thisUpdate); err != nil {
			return errors.Join(append(l.errs, err)...)
		}
		if l.entryErrs > maxEntryFailures {
			l.fail("and %d more entries fail", l.entryErrs-maxEntryFailures)
		}
	}
	var exts cryptobyte.String
	if !tbs.ReadASN1(&exts, casn1.Tag(0).Constructed().ContextSpecific()) || !exts.ReadASN1(&exts, casn1.SEQUENCE) {
		return errors.Join(append(l.errs, errors.New("crlExtensions missing or malformed: a CRL needs its number and AKI"))...)
	}
	if !tbs.Empty() {
		l.fail("tbsCertList: %d bytes after crlExtensions", len(tbs))
	}
	l.extensions(exts, issuer)
	return errors.Join(l.errs...)
}

// algorithmFits checks the TBS names the algorithm the issuer's key
// signs with, without parameters, as smx509 writes it.
func algorithmFits(alg []byte, issuer *smx509.Certificate) error {
	k, ok := issuer.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok:
		return fmt.Errorf("issuer key %T: CA keys are SM2 or ECDSA", issuer.PublicKey)
	case sm2.IsSM2PublicKey(k):
		if !bytes.Equal(alg, algSM2WithSM3) {
			return fmt.Errorf("signature algorithm %x, want SM2-SM3 for an SM2 issuer", alg)
		}
	case k.Curve == elliptic.P256() || k.Curve == elliptic.P384():
		if !bytes.Equal(alg, algECDSAWithSHA256) && !bytes.Equal(alg, algECDSAWithSHA384) {
			return fmt.Errorf("signature algorithm %x, want ECDSA with SHA-256 or SHA-384 for an ECDSA issuer", alg)
		}
	default:
		return fmt.Errorf("issuer key on %s: CA keys are SM2, P-256 or P-384", k.Curve.Params().Name)
	}
	return nil
}

// entries lints revokedCertificates entry by entry. The serials must
// strictly increase bytewise (the order signerd's store scans and the
// encoder writes them): one comparison with the previous entry finds a
// duplicate without remembering the others. A structural error ends the
// walk.
func (l *crlLinter) entries(entries cryptobyte.String, thisUpdate time.Time) error {
	var prev cryptobyte.String
	for i := 1; !entries.Empty(); i++ {
		var entry, serial cryptobyte.String
		if !entries.ReadASN1(&entry, casn1.SEQUENCE) || !entry.ReadASN1Element(&serial, casn1.INTEGER) {
			return fmt.Errorf("revokedCertificates entry %d: malformed", i)
		}
		if err := lintSerial(serial); err != nil {
			l.failEntry("entry %d %w", i, err)
		}
		var mag cryptobyte.String
		if elem := serial; !elem.ReadASN1(&mag, casn1.INTEGER) {
			return fmt.Errorf("revokedCertificates entry %d: malformed serial", i)
		}
		if len(mag) > 1 && mag[0] == 0 {
			mag = mag[1:]
		}
		if prev != nil && bytes.Compare(mag, prev) <= 0 {
			l.failEntry("entry %d: serial %x not after %x: entries must strictly increase bytewise (so none repeats)", i, mag, prev)
		}
		prev = mag
		at, err := readTime(&entry)
		if err != nil {
			return fmt.Errorf("entry %d (serial %x) revocationDate: %w", i, mag, err)
		}
		if at.After(thisUpdate) {
			l.failEntry("entry %x revoked at %v, after thisUpdate", mag, at)
		}
		if entry.Empty() {
			continue
		}
		var exts cryptobyte.String
		if !entry.ReadASN1(&exts, casn1.SEQUENCE) || !entry.Empty() {
			return fmt.Errorf("entry %d (serial %x): malformed after revocationDate", i, mag)
		}
		if exts.Empty() {
			l.failEntry("entry %x: empty crlEntryExtensions (RFC 5280: present only with one)", mag)
		}
		var sawReason, sawInvalidity bool
		for !exts.Empty() {
			oid, critical, value, ok := readExtension(&exts)
			if !ok {
				return fmt.Errorf("entry %d (serial %x): malformed extension", i, mag)
			}
			switch {
			case bytes.Equal(oid, derReasonCode):
				if sawReason {
					l.failEntry("entry %x: reasonCode twice", mag)
				}
				sawReason = true
				l.reasonCode(mag, critical, value)
			case bytes.Equal(oid, derInvalidityDate):
				if sawInvalidity {
					l.failEntry("entry %x: invalidityDate twice", mag)
				}
				sawInvalidity = true
			case critical:
				l.failEntry("entry %x: unknown critical extension %x", mag, oid)
			}
		}
	}
	return nil
}

// reasonCode lints an entry's reasonCode: non-critical, one of RFC 5280's
// codes, not unspecified (which §5.3.1 leaves to the extension's
// absence). removeFromCRL is noted: only a delta may carry it, which the
// CRL's extensions, after the entries, tell.
func (l *crlLinter) reasonCode(serial []byte, critical bool, value cryptobyte.String) {
	var code cryptobyte.String
	if critical {
		l.failEntry("entry %x: reasonCode critical", serial)
	}
	if !value.ReadASN1(&code, casn1.ENUM) || !value.Empty() || len(code) != 1 {
		l.failEntry("entry %x: reasonCode not one ENUMERATED octet", serial)
		return
	}
	switch c := code[0]; {
	case c == 0:
		l.failEntry("entry %x: reasonCode unspecified, which RFC 5280 §5.3.1 says by leaving it out", serial)
	case c == 7 || c > 10:
		l.failEntry("entry %x: reasonCode %d is not an RFC 5280 CRLReason", serial, c)
	case c == 8 && l.removeSerial == nil:
		l.removeSerial = serial
	}
}

// extensions lints the crlExtensions.
func (l *crlLinter) extensions(exts cryptobyte.String, issuer *smx509.Certificate) {
	var number, base []byte // INTEGER contents
	var sawAKI, sawNumber, sawIDP, sawDelta, sawFreshest bool
	once := func(saw *bool, what string) {
		if *saw {
			l.fail("%s twice", what)
		}
		*saw = true
	}
	for !exts.Empty() {
		oid, critical, value, ok := readExtension(&exts)
		if !ok {
			l.fail("crlExtensions: malformed extension")
			return
		}
		switch {
		case bytes.Equal(oid, derAuthorityKeyID):
			once(&sawAKI, "authorityKeyIdentifier")
			var aki, id cryptobyte.String
			var has bool
			switch {
			case critical:
				l.fail("authorityKeyIdentifier critical; RFC 5280 §4.2.1.1 forbids it")
			case !value.ReadASN1(&aki, casn1.SEQUENCE) || !value.Empty() ||
				!aki.ReadOptionalASN1(&id, &has, casn1.Tag(0).ContextSpecific()):
				l.fail("authorityKeyIdentifier malformed")
			case len(issuer.SubjectKeyId) == 0 || !has || !bytes.Equal(id, issuer.SubjectKeyId):
				l.fail("authorityKeyIdentifier %x does not equal the issuer's SKI %x", []byte(id), issuer.SubjectKeyId)
			}
		case bytes.Equal(oid, derCRLNumber):
			once(&sawNumber, "cRLNumber")
			if critical {
				l.fail("cRLNumber critical; RFC 5280 §5.2.3 forbids it")
			}
			number = l.positiveInteger("cRLNumber", value)
		case bytes.Equal(oid, derDeltaCRL):
			once(&sawDelta, "deltaCRLIndicator")
			if !critical {
				l.fail("deltaCRLIndicator not critical (RFC 5280 §5.2.4)")
			}
			base = l.positiveInteger("deltaCRLIndicator's base CRL number", value)
		case bytes.Equal(oid, derIssuingDP):
			once(&sawIDP, "issuingDistributionPoint")
			if !critical {
				l.fail("issuingDistributionPoint not critical (RFC 5280 §5.2.5)")
			}
			if err := lintIDP(value); err != nil {
				l.fail("issuingDistributionPoint: %v", err)
			}
		case bytes.Equal(oid, derFreshestCRL):
			once(&sawFreshest, "freshestCRL")
			if critical {
				l.fail("freshestCRL critical; RFC 5280 §5.2.6 forbids it")
			}
			if err := lintDistributionPoints(value); err != nil {
				l.fail("freshestCRL: %v", err)
			}
		case bytes.Equal(oid, derIssuerAltName), bytes.Equal(oid, derAuthorityInfo):
			if critical {
				l.fail("extension %x critical", oid)
			}
		case critical:
			l.fail("unknown critical CRL extension %x", oid)
		}
	}
	switch {
	case !sawNumber:
		l.fail("cRLNumber missing: it must be present, positive and at most 20 octets")
	case number != nil && base != nil && compareIntegers(base, number) >= 0:
		l.fail("deltaCRLIndicator: base CRL number %x is not below this CRL's %x", base, number)
	}
	if !sawAKI {
		l.fail("authorityKeyIdentifier missing; the issuer's SKI is %x", issuer.SubjectKeyId)
	}
	if sawDelta && sawFreshest {
		l.fail("freshestCRL in a delta CRL: only complete CRLs name their deltas")
	}
	if !sawDelta && l.removeSerial != nil {
		l.fail("entry %x: removeFromCRL in a complete CRL; it belongs in delta CRLs only", l.removeSerial)
	}
}

// positiveInteger reads an extension's INTEGER: positive, minimal, at
// most 20 octets (RFC 5280 §5.2.3). It returns the contents, nil if they
// fail.
func (l *crlLinter) positiveInteger(what string, value cryptobyte.String) []byte {
	var n cryptobyte.String
	switch {
	case !value.ReadASN1(&n, casn1.INTEGER) || !value.Empty() || len(n) == 0:
		l.fail("%s: not an INTEGER", what)
	case len(n) > 20:
		l.fail("%s of %d octets, at most 20 allowed", what, len(n))
	case n[0]&0x80 != 0:
		l.fail("%s negative", what)
	case len(n) > 1 && n[0] == 0 && n[1]&0x80 == 0:
		l.fail("%s not minimally encoded", what)
	case len(n) == 1 && n[0] == 0:
		l.fail("%s zero; must be positive", what)
	default:
		return n
	}
	return nil
}

// compareIntegers compares two minimal non-negative INTEGER contents.
func compareIntegers(a, b []byte) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return bytes.Compare(a, b)
}

// lintIDP checks an IssuingDistributionPoint (RFC 5280 §5.2.5): its
// fields in order, booleans TRUE when present (FALSE is the default, which
// DER leaves out), not empty, at most one of the onlyContains fields, no
// indirect CRL (signerd issues its own CRLs only).
func lintIDP(value cryptobyte.String) error {
	var idp cryptobyte.String
	if !value.ReadASN1(&idp, casn1.SEQUENCE) || !value.Empty() {
		return errors.New("not a SEQUENCE")
	}
	if idp.Empty() {
		return errors.New("empty: RFC 5280 forbids an IDP of defaults only")
	}
	if idp.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		var dpn cryptobyte.String
		idp.ReadASN1(&dpn, casn1.Tag(0).Constructed().ContextSpecific())
		if err := lintDistributionPointName(dpn); err != nil {
			return err
		}
	}
	only := 0
	for _, f := range []struct {
		tag  casn1.Tag
		name string
	}{{1, "onlyContainsUserCerts"}, {2, "onlyContainsCACerts"}, {3, "onlySomeReasons"}, {4, "indirectCRL"}, {5, "onlyContainsAttributeCerts"}} {
		var v cryptobyte.String
		var has bool
		if !idp.ReadOptionalASN1(&v, &has, f.tag.ContextSpecific()) {
			return fmt.Errorf("%s malformed", f.name)
		}
		switch {
		case !has:
		case f.tag == 3:
			if len(v) < 1 || v[0] > 7 || len(v) == 1 && v[0] != 0 {
				return errors.New("onlySomeReasons: not a BIT STRING")
			}
		case len(v) != 1 || v[0] != 0xff:
			return fmt.Errorf("%s: present but not TRUE (DER omits a FALSE default)", f.name)
		case f.tag == 4:
			return errors.New("indirectCRL: signerd's CRLs list its own certificates only")
		default:
			only++
		}
	}
	if only > 1 {
		return errors.New("more than one of onlyContainsUserCerts, onlyContainsCACerts, onlyContainsAttributeCerts")
	}
	if !idp.Empty() {
		return errors.New("unknown fields after its last")
	}
	return nil
}

// lintDistributionPoints checks a CRLDistributionPoints (the Freshest
// CRL's syntax): a non-empty SEQUENCE of DistributionPoints, each naming
// where to fetch it.
func lintDistributionPoints(value cryptobyte.String) error {
	var dps cryptobyte.String
	if !value.ReadASN1(&dps, casn1.SEQUENCE) || !value.Empty() || dps.Empty() {
		return errors.New("not a non-empty SEQUENCE of DistributionPoint")
	}
	for !dps.Empty() {
		var dp, dpn cryptobyte.String
		if !dps.ReadASN1(&dp, casn1.SEQUENCE) {
			return errors.New("DistributionPoint malformed")
		}
		if !dp.ReadASN1(&dpn, casn1.Tag(0).Constructed().ContextSpecific()) {
			return errors.New("DistributionPoint without a distributionPoint name")
		}
		if err := lintDistributionPointName(dpn); err != nil {
			return err
		}
	}
	return nil
}

// lintDistributionPointName checks a DistributionPointName's fullName:
// GeneralNames, not empty, each URI printable ASCII (an IA5String).
func lintDistributionPointName(dpn cryptobyte.String) error {
	var names cryptobyte.String
	if !dpn.ReadASN1(&names, casn1.Tag(0).Constructed().ContextSpecific()) || !dpn.Empty() {
		return errors.New("distributionPoint: not a fullName")
	}
	if names.Empty() {
		return errors.New("distributionPoint: fullName empty")
	}
	for !names.Empty() {
		var name cryptobyte.String
		var tag casn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return errors.New("distributionPoint: malformed GeneralName")
		}
		if tag == casn1.Tag(6).ContextSpecific() {
			if len(name) == 0 {
				return errors.New("distributionPoint: empty URI")
			}
			for _, c := range name {
				if c < 0x21 || c > 0x7e {
					return fmt.Errorf("distributionPoint: URI %q not printable ASCII", []byte(name))
				}
			}
		}
	}
	return nil
}

// readExtension reads one Extension: its OID's contents, criticality and
// extnValue's contents. A critical field present must be TRUE (DER omits
// the FALSE default).
func readExtension(exts *cryptobyte.String) (oid []byte, critical bool, value cryptobyte.String, ok bool) {
	var ext, id cryptobyte.String
	if !exts.ReadASN1(&ext, casn1.SEQUENCE) || !ext.ReadASN1(&id, casn1.OBJECT_IDENTIFIER) {
		return nil, false, nil, false
	}
	if ext.PeekASN1Tag(casn1.BOOLEAN) {
		if !ext.ReadASN1Boolean(&critical) || !critical {
			return nil, false, nil, false
		}
	}
	if !ext.ReadASN1(&value, casn1.OCTET_STRING) || !ext.Empty() {
		return nil, false, nil, false
	}
	return id, critical, value, true
}

// readTime reads an RFC 5280 time (§4.1.2.5): UTCTime YYMMDDHHMMSSZ
// through 2049, GeneralizedTime YYYYMMDDHHMMSSZ from 2050 (and before
// 1950), parsed by hand so that linting a CRL's entries allocates nothing
// per entry.
func readTime(s *cryptobyte.String) (time.Time, error) {
	var v cryptobyte.String
	var tag casn1.Tag
	if !s.ReadAnyASN1(&v, &tag) {
		return time.Time{}, errors.New("missing")
	}
	var year int
	switch {
	case tag == casn1.UTCTime && len(v) == 13:
		yy, ok := digits(v[:2])
		if !ok {
			return time.Time{}, fmt.Errorf("malformed UTCTime %q", []byte(v))
		}
		year, v = 1900+yy, v[2:]
		if yy < 50 {
			year += 100
		}
	case tag == casn1.GeneralizedTime && len(v) == 15:
		y, ok := digits(v[:4])
		if !ok {
			return time.Time{}, fmt.Errorf("malformed GeneralizedTime %q", []byte(v))
		}
		year, v = y, v[4:]
		if year >= 1950 && year < 2050 {
			return time.Time{}, fmt.Errorf("%d in GeneralizedTime, must be UTCTime from 1950 through 2049", year)
		}
	case tag == casn1.UTCTime || tag == casn1.GeneralizedTime:
		return time.Time{}, fmt.Errorf("time %q: RFC 5280 wants seconds and Z, nothing else", []byte(v))
	default:
		return time.Time{}, fmt.Errorf("tag %d where a time belongs", tag)
	}
	// v is MMDDHHMMSSZ.
	var f [5]int
	for i := range f {
		n, ok := digits(v[2*i : 2*i+2])
		if !ok {
			return time.Time{}, fmt.Errorf("malformed time %q", []byte(v))
		}
		f[i] = n
	}
	if v[10] != 'Z' {
		return time.Time{}, errors.New("time not in UTC (Z)")
	}
	t := time.Date(year, time.Month(f[0]), f[1], f[2], f[3], f[4], 0, time.UTC)
	if t.Month() != time.Month(f[0]) || t.Day() != f[1] || t.Hour() != f[2] || t.Minute() != f[3] || t.Second() != f[4] {
		return time.Time{}, fmt.Errorf("time %04d-%02d-%02d %02d:%02d:%02d does not exist", year, f[0], f[1], f[2], f[3], f[4])
	}
	return t, nil
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
