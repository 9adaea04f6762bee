// Package ocsp is the encoding of OCSP requests and responses (RFC 6960,
// with RFC 5019's profile for responses made ahead of time), for SM2 and
// ECDSA responders. golang.org/x/crypto/ocsp refuses SM2 keys and knows no
// SM3, so the DER is written and read here with cryptobyte.
//
// A response signerd signs carries one SingleResponse, whose CertID is
// hashed with one algorithm. OCSP clients match the CertID of a response
// to the one they asked with, hash algorithm included (OpenSSL's
// OCSP_id_cmp compares it first), so a response answers only requests
// made with its hash: a responder that serves SHA-1, SHA-256 and SM3
// requests needs a response per hash for each certificate.
package ocsp

import (
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/url"
	"time"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/revocation"
)

// HashAlg is a hash a CertID is made with.
type HashAlg int

// The hashes the responder accepts in a CertID.
const (
	SHA1 HashAlg = iota + 1
	SHA256
	SM3
)

// HashAlgs are the CertID hashes, in the order a responder prefers them.
var HashAlgs = []HashAlg{SHA1, SHA256, SM3}

var (
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSM3    = asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 401}
)

func (h HashAlg) String() string {
	switch h {
	case SHA1:
		return "SHA-1"
	case SHA256:
		return "SHA-256"
	case SM3:
		return "SM3"
	}
	return fmt.Sprintf("hash %d", int(h))
}

// OID is the hash's AlgorithmIdentifier OID (nil for no hash of ours).
func (h HashAlg) OID() asn1.ObjectIdentifier {
	switch h {
	case SHA1:
		return oidSHA1
	case SHA256:
		return oidSHA256
	case SM3:
		return oidSM3
	}
	return nil
}

// New returns the hash function (nil for no hash of ours).
func (h HashAlg) New() hash.Hash {
	switch h {
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SM3:
		return sm3.New()
	}
	return nil
}

func (h HashAlg) sum(b []byte) []byte {
	d := h.New()
	d.Write(b)
	return d.Sum(nil)
}

// Status is a certificate's status as a response states it.
type Status int

// The CertStatus choices (RFC 6960 §4.2.1).
const (
	Good Status = iota
	Revoked
	Unknown
)

func (s Status) String() string {
	switch s {
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("status %d", int(s))
}

// CertID names a certificate by its issuer's name and key hashes and its
// serial (RFC 6960 §4.1.1).
type CertID struct {
	HashAlg        HashAlg
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	Serial         []byte // big-endian magnitude, no leading zeros (the store form)
}

// CertIDFor is the CertID of the certificate serial of issuer, hashed with
// h: the name hash is over the issuer's subject DER, the key hash over its
// subjectPublicKey BIT STRING's value, without the unused-bits octet.
func CertIDFor(issuer *smx509.Certificate, serial []byte, h HashAlg) (CertID, error) {
	if h.New() == nil {
		return CertID{}, fmt.Errorf("CertID: %v is not a hash of ours", h)
	}
	key, err := publicKeyBits(issuer.RawSubjectPublicKeyInfo)
	if err != nil {
		return CertID{}, fmt.Errorf("CertID: issuer %w", err)
	}
	return CertID{HashAlg: h, IssuerNameHash: h.sum(issuer.RawSubject), IssuerKeyHash: h.sum(key), Serial: serial}, nil
}

// KeyHash is a responder's byKey ResponderID: the SHA-1 of its
// subjectPublicKey BIT STRING's value (RFC 6960 §4.2.1).
func KeyHash(pub crypto.PublicKey) ([]byte, error) {
	spki, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("responder key: %w", err)
	}
	key, err := publicKeyBits(spki)
	if err != nil {
		return nil, fmt.Errorf("responder %w", err)
	}
	return SHA1.sum(key), nil
}

// publicKeyBits is the value of a SubjectPublicKeyInfo's subjectPublicKey.
func publicKeyBits(spki []byte) ([]byte, error) {
	in := cryptobyte.String(spki)
	var info cryptobyte.String
	var bits asn1.BitString
	if !in.ReadASN1(&info, casn1.SEQUENCE) || !info.SkipASN1(casn1.SEQUENCE) ||
		!info.ReadASN1BitString(&bits) || bits.BitLength%8 != 0 {
		return nil, errors.New("public key: malformed SubjectPublicKeyInfo")
	}
	return bits.Bytes, nil
}

// Single is what a response says of one certificate.
type Single struct {
	Serial    []byte // store form, as CertID.Serial
	Status    Status
	RevokedAt time.Time         // Revoked only
	Reason    revocation.Reason // Revoked only; Unspecified: no revocationReason
	// ThisUpdate is when the status was known to be true; NextUpdate when
	// a newer response will be there. Pre-signed responses always have a
	// NextUpdate (RFC 5019 §2.2.4).
	ThisUpdate, NextUpdate time.Time
}

// Signature algorithms (as smx509 writes them, without parameters) and
// the basic response type.
var (
	oidSignatureSM2SM3 = asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 501}
	oidSignatureES256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSignatureES384  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidBasicResponse   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
)

// AlgorithmIdentifier is the DER AlgorithmIdentifier of alg, one of the
// algorithms signerd's keys sign with, which the BasicOCSPResponse names.
func AlgorithmIdentifier(alg smx509.SignatureAlgorithm) ([]byte, error) {
	oid, ok := map[smx509.SignatureAlgorithm]asn1.ObjectIdentifier{
		smx509.SM2WithSM3: oidSignatureSM2SM3, smx509.ECDSAWithSHA256: oidSignatureES256, smx509.ECDSAWithSHA384: oidSignatureES384,
	}[alg]
	if !ok {
		return nil, fmt.Errorf("signature algorithm %v is not one signerd's keys sign with", alg)
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(a *cryptobyte.Builder) { a.AddASN1ObjectIdentifier(oid) })
	return b.Bytes()
}

// ResponseBuilder builds the ResponseData of responses one responder
// signs for the certificates of one issuer. What they all share, the
// ResponderID and each CertID's issuer hashes, is computed once: a
// refresh builds a million of them.
type ResponseBuilder struct {
	keyHash []byte
	ids     []CertID // one per hash, without the serial
}

// NewResponseBuilder is the builder of responses signed by responderKey
// (the issuer's, or a delegated responder's) for certificates of issuer,
// each with one SingleResponse for each of hashes, the same but for its
// CertID's hash. A client matches a response to its request by the whole
// CertID, hash algorithm included (OpenSSL finds no status otherwise),
// and clients differ in the hash they use (RFC 5019: SHA-1; GB/T 19713
// clients: SM3; others SHA-256), so one signature answers them all.
func NewResponseBuilder(responderKey crypto.PublicKey, issuer *smx509.Certificate, hashes ...HashAlg) (*ResponseBuilder, error) {
	if issuer == nil {
		return nil, errors.New("OCSP response: no issuer certificate")
	}
	keyHash, err := KeyHash(responderKey)
	if err != nil {
		return nil, fmt.Errorf("OCSP response: %w", err)
	}
	if len(hashes) == 0 {
		return nil, errors.New("OCSP response: no CertID hash")
	}
	ids := make([]CertID, len(hashes))
	for i, h := range hashes {
		for _, earlier := range hashes[:i] {
			if earlier == h {
				return nil, fmt.Errorf("OCSP response: CertID hash %v named twice", h)
			}
		}
		if ids[i], err = CertIDFor(issuer, nil, h); err != nil {
			return nil, err
		}
	}
	return &ResponseBuilder{keyHash: keyHash, ids: ids}, nil
}

// TBS builds the ResponseData stating s, produced at producedAt. The
// ResponderID is byKey; the version is v1, which DER leaves out; there
// are no extensions (a response made ahead of time carries no nonce).
func (rb *ResponseBuilder) TBS(s Single, producedAt time.Time) ([]byte, error) {
	if err := checkSingle(s, producedAt); err != nil {
		return nil, fmt.Errorf("OCSP response for serial %x: %w", s.Serial, err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 256*len(rb.ids)))
	b.AddASN1(casn1.SEQUENCE, func(rd *cryptobyte.Builder) {
		rd.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) { // byKey [2] EXPLICIT
			r.AddASN1OctetString(rb.keyHash)
		})
		addTime(rd, producedAt)
		rd.AddASN1(casn1.SEQUENCE, func(rs *cryptobyte.Builder) {
			for _, id := range rb.ids {
				id.Serial = s.Serial
				addSingle(rs, id, s)
			}
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("OCSP response for serial %x: encode: %w", s.Serial, err)
	}
	return der, nil
}

// ResponseTBS builds the ResponseData (the to-be-signed part of a basic
// response) stating s, of a certificate of issuer, signed by responderKey
// and produced at producedAt, with a SingleResponse for each of hashes
// (NewResponseBuilder).
func ResponseTBS(responderKey crypto.PublicKey, issuer *smx509.Certificate, s Single, producedAt time.Time, hashes ...HashAlg) ([]byte, error) {
	rb, err := NewResponseBuilder(responderKey, issuer, hashes...)
	if err != nil {
		return nil, err
	}
	return rb.TBS(s, producedAt)
}

// addSingle adds the SingleResponse stating s of the certificate id names.
func addSingle(rs *cryptobyte.Builder, id CertID, s Single) {
	rs.AddASN1(casn1.SEQUENCE, func(sr *cryptobyte.Builder) {
		addCertID(sr, id)
		switch s.Status {
		case Good:
			sr.AddASN1(casn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {}) // [0] IMPLICIT NULL
		case Revoked:
			sr.AddASN1(casn1.Tag(1).Constructed().ContextSpecific(), func(ri *cryptobyte.Builder) { // [1] IMPLICIT RevokedInfo
				addTime(ri, s.RevokedAt)
				if s.Reason != revocation.Unspecified {
					ri.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) { // [0] EXPLICIT CRLReason
						r.AddASN1Enum(int64(s.Reason))
					})
				}
			})
		case Unknown:
			sr.AddASN1(casn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {}) // [2] IMPLICIT NULL
		}
		addTime(sr, s.ThisUpdate)
		sr.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(n *cryptobyte.Builder) { addTime(n, s.NextUpdate) })
	})
}

// checkSingle refuses what ResponseTBS cannot encode as asked, or what a
// response must not say; the lints check the rest.
func checkSingle(s Single, producedAt time.Time) error {
	switch v := s.Serial; {
	case len(v) == 0:
		return errors.New("empty serial")
	case v[0] == 0:
		return errors.New("serial with a leading zero byte (or zero); the store form is the minimal magnitude")
	case len(v) > 20 || len(v) == 20 && v[0]&0x80 != 0:
		return errors.New("serial INTEGER exceeds 20 octets (RFC 5280 §4.1.2.2)")
	}
	switch s.Status {
	case Good, Unknown:
		if !s.RevokedAt.IsZero() || s.Reason != revocation.Unspecified {
			return fmt.Errorf("%v with a revocation time or reason", s.Status)
		}
	case Revoked:
		if s.RevokedAt.IsZero() {
			return errors.New("revoked without a revocation time")
		}
		if r := s.Reason; r < 0 || r > revocation.AACompromise || r == 7 || r == revocation.RemoveFromCRL {
			return fmt.Errorf("reason %v is not one a response may give", r)
		}
	default:
		return fmt.Errorf("%v: not a status", s.Status)
	}
	for _, t := range []time.Time{s.RevokedAt, s.ThisUpdate, s.NextUpdate, producedAt} {
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			return fmt.Errorf("time %v: outside years 0000..9999", t)
		}
	}
	if !s.ThisUpdate.Truncate(time.Second).Before(s.NextUpdate.Truncate(time.Second)) {
		return fmt.Errorf("nextUpdate %v is not after thisUpdate %v", s.NextUpdate, s.ThisUpdate)
	}
	return nil
}

func addCertID(b *cryptobyte.Builder, id CertID) {
	b.AddASN1(casn1.SEQUENCE, func(c *cryptobyte.Builder) {
		c.AddASN1(casn1.SEQUENCE, func(a *cryptobyte.Builder) {
			a.AddASN1ObjectIdentifier(id.HashAlg.OID())
			a.AddASN1NULL() // as OpenSSL and x/crypto/ocsp write it
		})
		c.AddASN1OctetString(id.IssuerNameHash)
		c.AddASN1OctetString(id.IssuerKeyHash)
		c.AddASN1(casn1.INTEGER, func(n *cryptobyte.Builder) {
			if id.Serial[0]&0x80 != 0 {
				n.AddUint8(0)
			}
			n.AddBytes(id.Serial)
		})
	})
}

// addTime adds t as a GeneralizedTime to the second, in UTC, which is
// every time OCSP has (RFC 6960 §4.2.2.1).
func addTime(b *cryptobyte.Builder, t time.Time) {
	var buf [15]byte
	b.AddASN1(casn1.GeneralizedTime, func(g *cryptobyte.Builder) {
		g.AddBytes(t.UTC().AppendFormat(buf[:0], "20060102150405Z"))
	})
}

// Assemble makes the OCSPResponse of a signed ResponseData: tbs, the
// AlgorithmIdentifier alg (AlgorithmIdentifier) and the signature sig, in
// a BasicOCSPResponse with certs (the delegated responder's certificate;
// none when the issuer signs), in a successful OCSPResponse.
func Assemble(tbs, alg, sig []byte, certs [][]byte) ([]byte, error) {
	n := len(tbs) + len(alg) + len(sig) + 64
	for _, c := range certs {
		n += len(c)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, n))
	b.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) {
		r.AddASN1Enum(0) // successful
		r.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(rb *cryptobyte.Builder) {
			rb.AddASN1(casn1.SEQUENCE, func(rb *cryptobyte.Builder) {
				rb.AddASN1ObjectIdentifier(oidBasicResponse)
				rb.AddASN1(casn1.OCTET_STRING, func(o *cryptobyte.Builder) {
					o.AddASN1(casn1.SEQUENCE, func(basic *cryptobyte.Builder) {
						basic.AddBytes(tbs)
						basic.AddBytes(alg)
						basic.AddASN1BitString(sig)
						if len(certs) > 0 {
							basic.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(e *cryptobyte.Builder) {
								e.AddASN1(casn1.SEQUENCE, func(s *cryptobyte.Builder) {
									for _, c := range certs {
										s.AddBytes(c)
									}
								})
							})
						}
					})
				})
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("assemble the OCSP response: %w", err)
	}
	return der, nil
}

// ResponseStatus is an OCSPResponse's responseStatus.
type ResponseStatus int

// The statuses of a response without a signature (RFC 6960 §4.2.1);
// successful is Assemble's, and sigRequired is never said: requests
// need no signature here.
const (
	MalformedRequest ResponseStatus = 1
	InternalError    ResponseStatus = 2
	TryLater         ResponseStatus = 3
	Unauthorized     ResponseStatus = 6
)

// ErrorResponse is the OCSPResponse of status, without responseBytes. It
// panics for a status that is not one of the four: a caller's bug.
func ErrorResponse(status ResponseStatus) []byte {
	switch status {
	case MalformedRequest, InternalError, TryLater, Unauthorized:
		return []byte{0x30, 0x03, 0x0a, 0x01, byte(status)}
	}
	panic(fmt.Sprintf("OCSP error response of status %d", int(status)))
}

// Limits of a request: RFC 5019 clients send one CertID in well under
// 200 octets; a signed request with its certificates stays within a few
// kilobytes.
const (
	MaxRequestSize = 8 << 10
	MaxRequests    = 16
)

// ErrHashAlgorithm: a request's CertID is hashed with an algorithm the
// responder does not accept (the responder may say unauthorized).
var ErrHashAlgorithm = errors.New("CertID hash algorithm not supported")

// Request is the DER OCSPRequest of ids, as RFC 5019 clients send it:
// unsigned, without a requestor name or extensions (ParseRequest's
// inverse, for clients such as the bench).
func Request(ids ...CertID) ([]byte, error) {
	if len(ids) == 0 {
		return nil, errors.New("OCSP request: no CertID")
	}
	for _, id := range ids {
		if len(id.Serial) == 0 || id.HashAlg.New() == nil {
			return nil, fmt.Errorf("OCSP request: CertID with an empty serial or a hash not ours (%v)", id.HashAlg)
		}
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(req *cryptobyte.Builder) {
		req.AddASN1(casn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
			tbs.AddASN1(casn1.SEQUENCE, func(list *cryptobyte.Builder) {
				for _, id := range ids {
					list.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) { addCertID(r, id) })
				}
			})
		})
	})
	return b.Bytes()
}

// ParseRequest reads an OCSPRequest's CertIDs. A signature, a requestor
// name and extensions (the nonce among them) are read past and ignored:
// responses are made ahead of time, so none can echo a nonce, and none
// depends on who asks. It refuses more than MaxRequestSize octets or
// MaxRequests CertIDs, anything not DER-framed, and serials that are not
// positive. The CertIDs' hashes and serials are slices of der.
func ParseRequest(der []byte) ([]CertID, error) {
	if len(der) > MaxRequestSize {
		return nil, fmt.Errorf("OCSP request of %d octets, more than %d", len(der), MaxRequestSize)
	}
	in := cryptobyte.String(der)
	var req, tbs, list cryptobyte.String
	if !in.ReadASN1(&req, casn1.SEQUENCE) || !in.Empty() || !req.ReadASN1(&tbs, casn1.SEQUENCE) ||
		!req.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || !req.Empty() ||
		!tbs.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // version
		!tbs.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) || // requestorName
		!tbs.ReadASN1(&list, casn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(casn1.Tag(2).Constructed().ContextSpecific()) || !tbs.Empty() {
		return nil, errors.New("OCSP request: malformed")
	}
	var ids []CertID
	for i := 1; !list.Empty(); i++ {
		if i > MaxRequests {
			return nil, fmt.Errorf("OCSP request: more than %d CertIDs", MaxRequests)
		}
		var r cryptobyte.String
		if !list.ReadASN1(&r, casn1.SEQUENCE) {
			return nil, fmt.Errorf("OCSP request %d: malformed", i)
		}
		id, err := readCertID(&r)
		if err != nil {
			return nil, fmt.Errorf("OCSP request %d: %w", i, err)
		}
		if !r.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || !r.Empty() {
			return nil, fmt.Errorf("OCSP request %d: malformed after its CertID", i)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, errors.New("OCSP request: no CertID")
	}
	return ids, nil
}

// readCertID reads a CertID whose hash is one of ours.
func readCertID(s *cryptobyte.String) (CertID, error) {
	var id, alg, oidBytes, nameHash, keyHash, serial cryptobyte.String
	if !s.ReadASN1(&id, casn1.SEQUENCE) || !id.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1(&oidBytes, casn1.OBJECT_IDENTIFIER) ||
		!id.ReadASN1(&nameHash, casn1.OCTET_STRING) || !id.ReadASN1(&keyHash, casn1.OCTET_STRING) ||
		!id.ReadASN1(&serial, casn1.INTEGER) || !id.Empty() {
		return CertID{}, errors.New("CertID malformed")
	}
	if !alg.Empty() && !(alg.SkipASN1(casn1.NULL) && alg.Empty()) {
		return CertID{}, errors.New("CertID hash algorithm: parameters other than NULL")
	}
	var h HashAlg
	for _, a := range HashAlgs {
		if oidEqual(oidBytes, a.OID()) {
			h = a
		}
	}
	if h == 0 {
		return CertID{}, fmt.Errorf("%w: OID %x", ErrHashAlgorithm, []byte(oidBytes))
	}
	if size := h.New().Size(); len(nameHash) != size || len(keyHash) != size {
		return CertID{}, fmt.Errorf("CertID: %v hashes of %d and %d octets, want %d", h, len(nameHash), len(keyHash), size)
	}
	switch {
	case len(serial) == 0 || serial[0]&0x80 != 0:
		return CertID{}, errors.New("CertID: serial not a positive INTEGER")
	case len(serial) > 1 && serial[0] == 0 && serial[1]&0x80 == 0:
		return CertID{}, errors.New("CertID: serial not minimally encoded")
	case len(serial) == 1 && serial[0] == 0:
		return CertID{}, errors.New("CertID: serial zero")
	case len(serial) > 21:
		return CertID{}, errors.New("CertID: serial longer than any certificate's")
	}
	if serial[0] == 0 {
		serial = serial[1:]
	}
	return CertID{HashAlg: h, IssuerNameHash: nameHash, IssuerKeyHash: keyHash, Serial: serial}, nil
}

// oidEqual compares an OID's DER contents with oid.
func oidEqual(contents []byte, oid asn1.ObjectIdentifier) bool {
	var b cryptobyte.Builder
	b.AddASN1ObjectIdentifier(oid)
	der, err := b.Bytes()
	return err == nil && len(der) == len(contents)+2 && string(der[2:]) == string(contents)
}

// DecodeGET is the DER request of a GET's path below the responder's
// base URL (RFC 5019 §A.1): base64 of the DER, URL-encoded. It takes
// the path as received (escaped), and also accepts the unpadded and
// URL-safe alphabets and a '+' left unescaped, which clients send.
func DecodeGET(escapedPath string) ([]byte, error) {
	if len(escapedPath) > 3*base64.StdEncoding.EncodedLen(MaxRequestSize) {
		return nil, fmt.Errorf("OCSP GET path of %d octets: longer than a request of %d octets", len(escapedPath), MaxRequestSize)
	}
	p, err := url.PathUnescape(escapedPath)
	if err != nil {
		return nil, fmt.Errorf("OCSP GET path: %w", err)
	}
	for len(p) > 0 && p[0] == '/' {
		p = p[1:]
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := enc.DecodeString(p); err == nil {
			return der, nil
		}
	}
	return nil, errors.New("OCSP GET path: not base64")
}
