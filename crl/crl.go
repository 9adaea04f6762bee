// Package crl encodes CRLs: complete and delta (RFC 5280 §5.2.4), each
// covering one shard of an issuer's certificates (a partitioned CRL with
// its Issuing Distribution Point), and the arithmetic that assigns a
// serial to its shard. A CRL of many entries is built as the store scans
// them: each entry is encoded straight to DER as it comes, so building
// one holds its bytes and nothing per entry.
package crl

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/revocation"
)

// Entry is one revoked (or held, or in a delta removed) certificate.
type Entry struct {
	Serial    []byte            // big-endian magnitude, no leading zeros (store form), non-empty, non-zero
	RevokedAt time.Time         // encoded to the second (truncated)
	Reason    revocation.Reason // Unspecified: no reasonCode extension (RFC 5280 §5.3.1)
}

// Scope is what a CRL is, apart from its entries.
type Scope struct {
	Number                 uint64
	ThisUpdate, NextUpdate time.Time
	// IDP is the URL of the shard's distribution point; "" is no IDP (an
	// unpartitioned CRL).
	IDP string
	// DeltaOf, if nonzero, makes this a delta CRL of the complete CRL
	// numbered DeltaOf (critical Delta CRL Indicator).
	DeltaOf uint64
	// Freshest is an optional Freshest CRL URL, where the deltas of this
	// complete CRL are published (RFC 5280 §5.2.6).
	Freshest string
}

// Extension OIDs (RFC 5280 §5.2, §5.3).
var (
	oidAuthorityKeyID  = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber       = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidIssuingDP       = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaCRLIndic   = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshestCRL     = asn1.ObjectIdentifier{2, 5, 29, 46}
	oidReasonCode      = asn1.ObjectIdentifier{2, 5, 29, 21}
	oidSignatureSM2SM3 = asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 501}
	oidSignatureES256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSignatureES384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
)

// signatureOIDs are the algorithms signerd's issuing keys sign with; as
// smx509 writes them, without parameters.
var signatureOIDs = map[smx509.SignatureAlgorithm]asn1.ObjectIdentifier{
	smx509.SM2WithSM3: oidSignatureSM2SM3, smx509.ECDSAWithSHA256: oidSignatureES256, smx509.ECDSAWithSHA384: oidSignatureES384,
}

// reasonCodeExtension is the DER of an entry's crlEntryExtensions holding
// only a reasonCode whose ENUMERATED value is the last byte: every code
// is one octet.
var reasonCodeExtension = []byte{
	0x30, 0x0c, // SEQUENCE OF Extension
	0x30, 0x0a, // Extension
	0x06, 0x03, 0x55, 0x1d, 0x15, // 2.5.29.21
	0x04, 0x03, 0x0a, 0x01, 0x00, // OCTET STRING { ENUMERATED reason }
}

// TBS builds a TBSCertList entry by entry. Entries must come in strictly
// increasing bytewise serial order, which is the order a store scan
// yields them in, so that a relying party's (and the lint's) check for
// duplicates is one comparison per entry.
type TBS struct {
	issuer  *smx509.Certificate
	alg     asn1.ObjectIdentifier
	scope   Scope
	entries []byte // the revokedCertificates' contents so far
	n       int
	last    []byte // the previous entry's serial, within entries
	err     error  // the first Add that failed: Finish refuses after it
}

// NewTBS starts the TBSCertList of scope, issued by issuer and signed with
// alg (one of the algorithms an issuing key signs with).
func NewTBS(issuer *smx509.Certificate, alg smx509.SignatureAlgorithm, s Scope) (*TBS, error) {
	oid, ok := signatureOIDs[alg]
	switch {
	case issuer == nil:
		return nil, errors.New("CRL: no issuer certificate")
	case !ok:
		return nil, fmt.Errorf("CRL: signature algorithm %v is not one an issuing key signs with", alg)
	case len(issuer.RawSubject) == 0 || len(issuer.SubjectKeyId) == 0:
		return nil, errors.New("CRL: the issuer certificate lacks a subject or a subject key identifier")
	case s.Number == 0:
		return nil, errors.New("CRL: number 0; CRL numbers start at 1")
	case !s.ThisUpdate.Truncate(time.Second).Before(s.NextUpdate.Truncate(time.Second)):
		return nil, fmt.Errorf("CRL: nextUpdate %v is not after thisUpdate %v", s.NextUpdate, s.ThisUpdate)
	case s.DeltaOf >= s.Number:
		return nil, fmt.Errorf("CRL %d: a delta of CRL %d, which is not an earlier one", s.Number, s.DeltaOf)
	case s.DeltaOf != 0 && s.Freshest != "":
		return nil, fmt.Errorf("CRL %d: a delta CRL names no Freshest CRL; its complete CRL does", s.Number)
	}
	for _, t := range []time.Time{s.ThisUpdate, s.NextUpdate} {
		if err := checkTime(t); err != nil {
			return nil, fmt.Errorf("CRL %d: %w", s.Number, err)
		}
	}
	for _, u := range []string{s.IDP, s.Freshest} {
		if u == "" {
			continue
		}
		if err := validURL(u); err != nil {
			return nil, fmt.Errorf("CRL %d: %w", s.Number, err)
		}
	}
	return &TBS{issuer: issuer, alg: oid, scope: s}, nil
}

// Len is the number of entries added so far.
func (b *TBS) Len() int { return b.n }

// Add appends an entry. It refuses an entry out of order (or repeated),
// with a serial not in store form, a time that cannot be encoded, or a
// reason a CRL of this kind cannot carry; after a refusal the TBS is
// spoilt and Finish refuses too, so a caller that ignores the error
// cannot sign a CRL missing an entry.
func (b *TBS) Add(e Entry) error {
	if b.err != nil {
		return b.err
	}
	if err := b.add(e); err != nil {
		b.err = fmt.Errorf("CRL %d entry %d: %w", b.scope.Number, b.n+1, err)
		return b.err
	}
	b.n++
	return nil
}

func (b *TBS) add(e Entry) error {
	switch s := e.Serial; {
	case len(s) == 0:
		return errors.New("empty serial")
	case s[0] == 0:
		return fmt.Errorf("serial %x: a leading zero byte (or zero); the store form is the minimal magnitude", s)
	case len(s) > 20 || len(s) == 20 && s[0]&0x80 != 0:
		return fmt.Errorf("serial %x: its INTEGER exceeds 20 octets (RFC 5280 §4.1.2.2)", s)
	case b.last != nil && bytes.Compare(s, b.last) <= 0:
		return fmt.Errorf("serial %x after %x: entries must come in strictly increasing bytewise order", s, b.last)
	}
	if e.RevokedAt.IsZero() {
		return fmt.Errorf("serial %x: no revocation time", e.Serial)
	}
	if err := checkTime(e.RevokedAt); err != nil {
		return fmt.Errorf("serial %x: %w", e.Serial, err)
	}
	switch r := e.Reason; {
	case r < 0 || r > revocation.AACompromise || r == 7:
		return fmt.Errorf("serial %x: reason %d is not an RFC 5280 CRLReason", e.Serial, int(r))
	case r == revocation.RemoveFromCRL && b.scope.DeltaOf == 0:
		return fmt.Errorf("serial %x: removeFromCRL belongs in delta CRLs only", e.Serial)
	}

	// One entry's DER is under 128 octets (a 21-octet INTEGER, a
	// GeneralizedTime, a reasonCode: 54), so its length is one octet.
	pad := e.Serial[0] >> 7 // a 0x00 keeps a high first bit from reading as negative
	intLen := len(e.Serial) + int(pad)
	timeLen := 13
	if generalized(e.RevokedAt) {
		timeLen = 15
	}
	bodyLen := 2 + intLen + 2 + timeLen
	if e.Reason != revocation.Unspecified {
		bodyLen += len(reasonCodeExtension)
	}
	b.entries = append(b.entries, 0x30, byte(bodyLen), 0x02, byte(intLen))
	if pad == 1 {
		b.entries = append(b.entries, 0)
	}
	start := len(b.entries)
	b.entries = append(b.entries, e.Serial...)
	b.last = b.entries[start:len(b.entries):len(b.entries)]
	b.entries = appendTime(b.entries, e.RevokedAt)
	if e.Reason != revocation.Unspecified {
		b.entries = append(b.entries, reasonCodeExtension...)
		b.entries[len(b.entries)-1] = byte(e.Reason)
	}
	return nil
}

// Finish returns the TBSCertList's DER. The TBS is done with then.
func (b *TBS) Finish() ([]byte, error) {
	if b.err != nil {
		return nil, fmt.Errorf("not finished: %w", b.err)
	}
	s := b.scope
	// The outer structure costs one copy of the entries: the builder's
	// buffer starts at the final size plus room for the rest, so the
	// entries are copied once and never regrown.
	out := cryptobyte.NewBuilder(make([]byte, 0, len(b.entries)+1024+len(b.issuer.RawSubject)+len(s.IDP)+len(s.Freshest)))
	out.AddASN1(casn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
		tbs.AddASN1Int64(1) // v2
		tbs.AddASN1(casn1.SEQUENCE, func(a *cryptobyte.Builder) { a.AddASN1ObjectIdentifier(b.alg) })
		tbs.AddBytes(b.issuer.RawSubject)
		addTime(tbs, s.ThisUpdate)
		addTime(tbs, s.NextUpdate)
		if b.n > 0 {
			tbs.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) { r.AddBytes(b.entries) })
		}
		tbs.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(x *cryptobyte.Builder) {
			x.AddASN1(casn1.SEQUENCE, func(exts *cryptobyte.Builder) {
				addExtension(exts, oidAuthorityKeyID, false, func(v *cryptobyte.Builder) {
					v.AddASN1(casn1.SEQUENCE, func(aki *cryptobyte.Builder) {
						// keyIdentifier [0] IMPLICIT OCTET STRING
						aki.AddASN1(casn1.Tag(0).ContextSpecific(), func(k *cryptobyte.Builder) { k.AddBytes(b.issuer.SubjectKeyId) })
					})
				})
				addExtension(exts, oidCRLNumber, false, func(v *cryptobyte.Builder) { v.AddASN1Uint64(s.Number) })
				if s.IDP != "" {
					addExtension(exts, oidIssuingDP, true, func(v *cryptobyte.Builder) {
						v.AddASN1(casn1.SEQUENCE, func(idp *cryptobyte.Builder) {
							addFullNameURI(idp, s.IDP) // distributionPoint [0]
							// onlyContainsUserCerts [1] TRUE: an issuing CA certifies
							// end entities only.
							idp.AddASN1(casn1.Tag(1).ContextSpecific(), func(t *cryptobyte.Builder) { t.AddUint8(0xff) })
						})
					})
				}
				if s.DeltaOf != 0 {
					addExtension(exts, oidDeltaCRLIndic, true, func(v *cryptobyte.Builder) { v.AddASN1Uint64(s.DeltaOf) })
				}
				if s.Freshest != "" {
					addExtension(exts, oidFreshestCRL, false, func(v *cryptobyte.Builder) {
						v.AddASN1(casn1.SEQUENCE, func(dps *cryptobyte.Builder) { // CRLDistributionPoints
							dps.AddASN1(casn1.SEQUENCE, func(dp *cryptobyte.Builder) { addFullNameURI(dp, s.Freshest) })
						})
					})
				}
			})
		})
	})
	b.entries, b.last, b.err = nil, nil, errors.New("finished already")
	der, err := out.Bytes()
	if err != nil {
		return nil, fmt.Errorf("CRL %d: encode: %w", s.Number, err)
	}
	return der, nil
}

// addExtension adds an Extension whose extnValue holds what value writes.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(casn1.SEQUENCE, func(e *cryptobyte.Builder) {
		e.AddASN1ObjectIdentifier(oid)
		if critical {
			e.AddASN1Boolean(true)
		}
		e.AddASN1(casn1.OCTET_STRING, value)
	})
}

// addFullNameURI adds a DistributionPointName's [0] fullName of one URI:
// [0] { [0] { [6] uri } } (the CHOICE tag explicit, GeneralNames
// implicit), as an IDP's distributionPoint and a DistributionPoint's
// distributionPoint both begin.
func addFullNameURI(b *cryptobyte.Builder, uri string) {
	b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(dpn *cryptobyte.Builder) {
		dpn.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(names *cryptobyte.Builder) {
			names.AddASN1(casn1.Tag(6).ContextSpecific(), func(u *cryptobyte.Builder) { u.AddBytes([]byte(uri)) })
		})
	})
}

// generalized reports whether RFC 5280 §5.1.2.4 wants t as a
// GeneralizedTime: from 2050, and before 1950, where UTCTime cannot say
// the year.
func generalized(t time.Time) bool {
	y := t.UTC().Year()
	return y < 1950 || y >= 2050
}

// checkTime refuses a time no DER time can hold.
func checkTime(t time.Time) error {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("time %v: outside years 0000..9999", t)
	}
	return nil
}

// appendTime appends t, to the second, as an RFC 5280 UTCTime or
// GeneralizedTime.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if generalized(t) {
		dst = append(dst, byte(casn1.GeneralizedTime), 15)
		return t.AppendFormat(dst, "20060102150405Z")
	}
	dst = append(dst, byte(casn1.UTCTime), 13)
	return t.AppendFormat(dst, "060102150405Z")
}

func addTime(b *cryptobyte.Builder, t time.Time) {
	b.AddBytes(appendTime(nil, t))
}
