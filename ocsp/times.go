package ocsp

import (
	"errors"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Times are the times a successful response states: when it was signed,
// and the span its SingleResponses are valid for.
type Times struct {
	ProducedAt time.Time
	// ThisUpdate is the latest thisUpdate of its SingleResponses and
	// NextUpdate the earliest nextUpdate: the response is current only
	// while every one of them is.
	ThisUpdate, NextUpdate time.Time
}

// ResponseTimes reads the times of a successful OCSPResponse, as a
// responder serving pre-signed responses needs them for its caching
// headers and to refuse stale ones. It checks the framing down to the
// SingleResponses, not the signature: the responder serves what signerd
// signed and published. A SingleResponse without nextUpdate is an error:
// a response made ahead of time always has one (RFC 5019 §2.2.4).
func ResponseTimes(der []byte) (Times, error) {
	in := cryptobyte.String(der)
	var resp, rb, rbSeq, oid, octets cryptobyte.String
	var status int
	if !in.ReadASN1(&resp, casn1.SEQUENCE) || !in.Empty() || !resp.ReadASN1Enum(&status) {
		return Times{}, errors.New("OCSP response: malformed")
	}
	if status != 0 {
		return Times{}, errors.New("OCSP response: not successful")
	}
	if !resp.ReadASN1(&rb, casn1.Tag(0).Constructed().ContextSpecific()) || !resp.Empty() ||
		!rb.ReadASN1(&rbSeq, casn1.SEQUENCE) || !rb.Empty() ||
		!rbSeq.ReadASN1(&oid, casn1.OBJECT_IDENTIFIER) || !oidEqual(oid, oidBasicResponse) ||
		!rbSeq.ReadASN1(&octets, casn1.OCTET_STRING) || !rbSeq.Empty() {
		return Times{}, errors.New("OCSP response: malformed responseBytes, or not a basic response")
	}
	var basic, tbs, singles cryptobyte.String
	var t Times
	if !octets.ReadASN1(&basic, casn1.SEQUENCE) || !octets.Empty() || !basic.ReadASN1(&tbs, casn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // version
		!skipOneOf(&tbs, casn1.Tag(1).Constructed().ContextSpecific(), casn1.Tag(2).Constructed().ContextSpecific()) || // responderID
		!tbs.ReadASN1GeneralizedTime(&t.ProducedAt) ||
		!tbs.ReadASN1(&singles, casn1.SEQUENCE) {
		return Times{}, errors.New("OCSP response: malformed ResponseData")
	}
	for n := 0; !singles.Empty(); n++ {
		var single cryptobyte.String
		var this, next time.Time
		var nextWrap cryptobyte.String
		var hasNext bool
		if !singles.ReadASN1(&single, casn1.SEQUENCE) || !single.SkipASN1(casn1.SEQUENCE) || // certID
			!skipOneOf(&single, casn1.Tag(0).ContextSpecific(), casn1.Tag(1).Constructed().ContextSpecific(), casn1.Tag(2).ContextSpecific()) || // certStatus
			!single.ReadASN1GeneralizedTime(&this) ||
			!single.ReadOptionalASN1(&nextWrap, &hasNext, casn1.Tag(0).Constructed().ContextSpecific()) {
			return Times{}, errors.New("OCSP response: malformed SingleResponse")
		}
		if !hasNext {
			return Times{}, errors.New("OCSP response: a SingleResponse without nextUpdate")
		}
		if !nextWrap.ReadASN1GeneralizedTime(&next) || !nextWrap.Empty() {
			return Times{}, errors.New("OCSP response: malformed nextUpdate")
		}
		if n == 0 || this.After(t.ThisUpdate) {
			t.ThisUpdate = this
		}
		if n == 0 || next.Before(t.NextUpdate) {
			t.NextUpdate = next
		}
	}
	if t.NextUpdate.IsZero() {
		return Times{}, errors.New("OCSP response: no SingleResponse")
	}
	return t, nil
}

// skipOneOf skips the next element if its tag is one of tags (a CHOICE);
// a failed SkipASN1 would consume the element it refused.
func skipOneOf(s *cryptobyte.String, tags ...casn1.Tag) bool {
	for _, tag := range tags {
		if s.PeekASN1Tag(tag) {
			return s.SkipASN1(tag)
		}
	}
	return false
}
