package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
)

// Signed RA requests (SPEC §6.2, GM/T 0037): an RA signs each request with
// its own SM2 key, certified by this CA under an RA profile, in four
// headers. The signature (SM2, default ID) covers the signed text
// (SignedFields.Text); signerd accepts each (certificate, nonce) once.
const (
	HeaderDate        = "Signerd-Date"        // RFC 3339, at most MaxDateLen characters, within signerd's max_skew
	HeaderNonce       = "Signerd-Nonce"       // NonceValid; new for each request
	HeaderSignature   = "Signerd-Signature"   // base64 of the DER SM2 signature
	HeaderCertificate = "Signerd-Certificate" // hex serial of the RA's certificate from this CA
)

// MaxDateLen bounds Signerd-Date.
const MaxDateLen = 64

// SignedTextVersion is the first line of the signed text.
const SignedTextVersion = "signerd-request-v2"

// SignedFields are the lines of a signed text after its version: DATE,
// NONCE and SERIAL exactly as sent in their headers.
type SignedFields struct {
	Method  string // the HTTP method
	Target  string // the request-target: path and query
	Date    string
	Nonce   string
	Serial  string // Signerd-Certificate
	BodySM3 string // lowercase hex SM3 of the exact body bytes
}

// Text is the signed text: the version and the fields, one a line, joined
// by "\n" with none at the end.
func (f SignedFields) Text() string {
	return strings.Join([]string{SignedTextVersion, f.Method, f.Target, f.Date, f.Nonce, f.Serial, f.BodySM3}, "\n")
}

// SignedText is the text an RA signs for a request.
func SignedText(method, target, date, nonce, serial string, body []byte) []byte {
	h := sm3.Sum(body)
	return []byte(SignedFields{method, target, date, nonce, serial, hex.EncodeToString(h[:])}.Text())
}

// ParseSignedText splits a signed text into its fields; ok is false if it
// is not one (another version, or not seven lines).
func ParseSignedText(text string) (f SignedFields, ok bool) {
	l := strings.Split(text, "\n")
	if len(l) != 7 || l[0] != SignedTextVersion {
		return f, false
	}
	return SignedFields{l[1], l[2], l[3], l[4], l[5], l[6]}, true
}

var nonceSyntax = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// NonceValid reports whether s may be a Signerd-Nonce: 16 to 64
// characters of A-Z a-z 0-9 _ -.
func NonceValid(s string) bool { return nonceSyntax.MatchString(s) }

// NewNonce is a fresh nonce: 16 random bytes, base64url.
func NewNonce() (string, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(n[:]), nil
}

// Sign signs req, whose body is body, as the RA certificate serial (hex)
// whose key is key, dated date, with a fresh nonce: it sets the four
// headers.
func Sign(req *http.Request, body []byte, key *sm2.PrivateKey, serial string, date time.Time) error {
	nonce, err := NewNonce()
	if err != nil {
		return err
	}
	stamp := date.UTC().Format(time.RFC3339Nano)
	sig, err := key.SignMessage(rand.Reader, SignedText(req.Method, req.URL.RequestURI(), stamp, nonce, serial, body), sm2.DefaultSM2SignerOpts)
	if err != nil {
		return fmt.Errorf("signing the request: %w", err)
	}
	req.Header.Set(HeaderDate, stamp)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	req.Header.Set(HeaderCertificate, serial)
	return nil
}
