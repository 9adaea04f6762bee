package main

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/engine"
	"signerd/store"
)

// Signed RA requests (SPEC §6.2, GM/T 0037): an RA signs each request with
// its own SM2 key, certified by this CA, so the audit log holds proof of
// which RA asked, not only which uid connected.
//
// The RA sends three headers; the signature (default SM2 ID) covers
//
//	signerd-request-v1 \n METHOD \n REQUEST-URI \n DATE \n hex(SM3(body))
const (
	headerDate        = "Signerd-Date"        // RFC 3339, within maxSkew of signerd's clock
	headerSignature   = "Signerd-Signature"   // base64 of the DER SM2 signature
	headerCertificate = "Signerd-Certificate" // hex serial of the RA's certificate from this CA
)

const (
	codeSignatureRequired = "signature_required"
	codeBadSignature      = "bad_signature"
	codeStaleSignature    = "stale_signature"
	codeRACertificate     = "ra_certificate_invalid"
)

func signedText(method, uri, date string, body []byte) []byte {
	h := sm3.Sum(body)
	return []byte("signerd-request-v1\n" + method + "\n" + uri + "\n" + date + "\n" + hex.EncodeToString(h[:]))
}

// raSignatures is the ra_signatures configuration.
type raSignatures struct {
	Required bool     `yaml:"required"`
	MaxSkew  duration `yaml:"max_skew"` // default 5m
}

// sigError is a refused signature: 401 with a code.
type sigError struct{ code, msg string }

func (e *sigError) Error() string { return e.msg }

// checkSignature reads the body (giving it back to r for the handler) and
// checks the RA's signature on the request. It returns the evidence to
// keep with the audit events, nil for an unsigned request where that is
// allowed.
func (a *api) checkSignature(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// Too large: the handler's decoder meets the same error and says so.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		return nil, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	date, sigB64, serialHex := r.Header.Get(headerDate), r.Header.Get(headerSignature), r.Header.Get(headerCertificate)
	if date == "" && sigB64 == "" && serialHex == "" {
		if a.sigs.Required {
			return nil, &sigError{codeSignatureRequired, "RA requests must be signed (Signerd-Date, Signerd-Signature, Signerd-Certificate)"}
		}
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, date)
	if err != nil {
		return nil, &sigError{codeBadSignature, "Signerd-Date: want RFC 3339"}
	}
	skew := a.sigs.MaxSkew.Duration
	if skew <= 0 {
		skew = 5 * time.Minute
	}
	if d := time.Since(t); d > skew || d < -skew {
		return nil, &sigError{codeStaleSignature, fmt.Sprintf("Signerd-Date %s is more than %v from signerd's clock", date, skew)}
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return nil, &sigError{codeBadSignature, "Signerd-Signature: want base64"}
	}
	serial, err := hex.DecodeString(serialHex)
	if err != nil || len(serial) == 0 {
		return nil, &sigError{codeRACertificate, "Signerd-Certificate: want the hex serial of the RA's certificate"}
	}
	rec, err := a.eng.Status(serial)
	if err != nil {
		return nil, &sigError{codeRACertificate, fmt.Sprintf("RA certificate %s: %v", serialHex, err)}
	}
	now := time.Now()
	if (rec.Status != store.StatusGood && rec.Status != store.StatusSuperseded) || now.Before(rec.NotBefore) || now.After(rec.NotAfter) {
		return nil, &sigError{codeRACertificate, fmt.Sprintf("RA certificate %s is %s or outside its validity", serialHex, rec.Status)}
	}
	cert, err := smx509.ParseCertificate(rec.DER)
	if err != nil || !sm2.IsSM2PublicKey(cert.PublicKey) || cert.KeyUsage&smx509.KeyUsageDigitalSignature == 0 {
		return nil, &sigError{codeRACertificate, fmt.Sprintf("RA certificate %s is not an SM2 signing certificate", serialHex)}
	}
	text := signedText(r.Method, r.URL.RequestURI(), date, body)
	if !sm2.VerifyASN1WithSM2(cert.PublicKey.(*ecdsa.PublicKey), nil, text, sig) {
		return nil, &sigError{codeBadSignature, "the RA signature does not verify over this request"}
	}
	return json.Marshal(struct {
		Text        string `json:"signed"`
		Signature   []byte `json:"signature"`
		Certificate string `json:"ra_certificate"`
	}{string(text), sig, serialHex})
}

// refuseSignature answers a bad or missing RA signature and audits it.
func (a *api) refuseSignature(w http.ResponseWriter, r *http.Request, p peer, err error) {
	var se *sigError
	if !errors.As(err, &se) {
		se = &sigError{string(engine.CodeInternal), err.Error()}
	}
	a.auditRefusal(r, p, se.code+": "+se.msg)
	writeError(w, http.StatusUnauthorized, se.code, se.msg)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
