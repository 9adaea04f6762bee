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
	"slices"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/store"
)

// Signed RA requests (SPEC §6.2, GM/T 0037): an RA signs each request with
// its own SM2 key, certified by this CA under an RA profile (the id-kp-cmcRA
// EKU), so the audit log holds proof of which RA asked, not only which uid
// connected. Package api has the headers and the signed text. The nonce
// and serial make each signed request usable once: signerd remembers every
// (serial, nonce) it accepted for as long as its date passes the skew check
// (replayGuard).

// raSignatures is the ra_signatures configuration (configFile describes
// each setting) and, once prepared, its run-time state.
type raSignatures struct {
	Required        bool
	MaxSkew         time.Duration // default 5m
	AllowedSerials  []string
	AllowedSubjects []string
	ReplayMemory    int

	allowedSerials map[string]bool
	replay         *replayGuard
}

// prepare checks the section and makes its run-time state.
func (s *raSignatures) prepare() error {
	if s.MaxSkew <= 0 {
		s.MaxSkew = 5 * time.Minute
	}
	s.allowedSerials = map[string]bool{}
	for _, h := range s.AllowedSerials {
		serial, err := hex.DecodeString(h)
		if err != nil || len(serial) == 0 {
			return fmt.Errorf("ra_signatures.allowed_serials: %q is not a hex serial", h)
		}
		s.allowedSerials[hex.EncodeToString(serial)] = true
	}
	if s.ReplayMemory < 0 {
		return fmt.Errorf("ra_signatures.replay_memory: %d is negative", s.ReplayMemory)
	}
	if s.ReplayMemory == 0 {
		s.ReplayMemory = replayCacheSize
	}
	s.replay = newReplayGuard(s.ReplayMemory, replayRAs)
	return nil
}

// allows reports whether the allow-lists admit the RA certificate rec.
func (s *raSignatures) allows(rec *store.Certificate) bool {
	if len(s.allowedSerials) == 0 && len(s.AllowedSubjects) == 0 {
		return true
	}
	return s.allowedSerials[hex.EncodeToString(rec.Serial)] || slices.Contains(s.AllowedSubjects, rec.Subject)
}

// sigError is a refused signature, answered with its code's status.
type sigError struct {
	code api.Code
	msg  string
}

func (e *sigError) Error() string { return e.msg }

// checkSignature reads the body (giving it back to r for the handler) and
// checks the RA's signature on the request. It returns the evidence to
// keep with the audit events, nil for an unsigned request where that is
// allowed.
func (a *server) checkSignature(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// What was not read whole cannot be checked: refused, signed or
		// not, so that no route is served unsigned for a body too long.
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &sigError{code: api.CodeBodyTooLarge, msg: fmt.Sprintf("body over %d bytes", maxBody)}
		}
		return nil, &sigError{code: api.CodeBadRequest, msg: fmt.Sprintf("body: %v", err)}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	date, nonce := r.Header.Get(api.HeaderDate), r.Header.Get(api.HeaderNonce)
	sigB64, serialHex := r.Header.Get(api.HeaderSignature), r.Header.Get(api.HeaderCertificate)
	if date == "" && nonce == "" && sigB64 == "" && serialHex == "" {
		if a.sigs.Required {
			return nil, &sigError{code: api.CodeSignatureRequired, msg: "RA requests must be signed (Signerd-Date, Signerd-Nonce, Signerd-Signature, Signerd-Certificate)"}
		}
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, date)
	if err != nil || len(date) > api.MaxDateLen {
		return nil, &sigError{code: api.CodeBadSignature, msg: "Signerd-Date: want RFC 3339, at most 64 characters"}
	}
	skew := a.sigs.MaxSkew // defaulted by prepare
	now := time.Now()
	if d := now.Sub(t); d > skew || d < -skew {
		return nil, &sigError{code: api.CodeStaleSignature, msg: fmt.Sprintf("Signerd-Date %s is more than %v from signerd's clock", date, skew)}
	}
	if !api.NonceValid(nonce) {
		return nil, &sigError{code: api.CodeBadSignature, msg: "Signerd-Nonce: want 16 to 64 characters of A-Z a-z 0-9 _ -, new for each request (signed text signerd-request-v2)"}
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return nil, &sigError{code: api.CodeBadSignature, msg: "Signerd-Signature: want base64"}
	}
	serial, err := hex.DecodeString(serialHex)
	if err != nil || len(serial) == 0 {
		return nil, &sigError{code: api.CodeRACertificate, msg: "Signerd-Certificate: want the hex serial of the RA's certificate"}
	}
	cert, err := a.raCertificate(serial, now)
	if err != nil {
		return nil, err
	}
	text := api.SignedText(r.Method, r.URL.RequestURI(), date, nonce, serialHex, body)
	if !sm2.VerifyASN1WithSM2(cert.PublicKey.(*ecdsa.PublicKey), nil, text, sig) {
		return nil, &sigError{code: api.CodeBadSignature, msg: "the RA signature does not verify over this request"}
	}
	// Only a request the RA signed reaches the replay cache, so nobody
	// else can fill it or spend an RA's nonces.
	if err := a.sigs.replay.admit(a.eng, serial, nonce, t, now, skew); err != nil {
		return nil, err
	}
	return json.Marshal(signedEvidence{string(text), sig, serialHex})
}

// signedEvidence is what an accepted signed request's audit events keep:
// the whole signed text, which with the signature and the RA's
// certificate proves what the RA asked for (GM/T 0037).
type signedEvidence struct {
	Text        string `json:"signed"`
	Signature   []byte `json:"signature"`
	Certificate string `json:"ra_certificate"`
}

// refusedEvidence is what a refused signed request's event keeps in its
// place: the signature headers and digests of what was signed, bounded
// whatever the RA sent, so that refusals an RA causes cannot grow the log
// by the size of its requests. Whoever holds the request can match it.
type refusedEvidence struct {
	SignedSM3   string `json:"signed_sm3"`   // hex SM3 of the signed text
	SignedBytes int    `json:"signed_bytes"` // its length
	Date        string `json:"date"`
	Nonce       string `json:"nonce"`
	BodySM3     string `json:"body_sm3"` // hex SM3 of the body, as signed
	Signature   []byte `json:"signature"`
	Certificate string `json:"ra_certificate"`
}

// maxRefusedEvidence bounds a refused request's evidence that is not a
// signed request's (none is made today): longer, only its digest is kept.
const maxRefusedEvidence = 512

// boundedEvidence is evidence as a refused request's event keeps it.
func boundedEvidence(evidence []byte) []byte {
	var full signedEvidence
	if err := json.Unmarshal(evidence, &full); err == nil && full.Text != "" {
		f, _ := api.ParseSignedText(full.Text) // empty fields if it is not one
		h := sm3.Sum([]byte(full.Text))
		out, err := json.Marshal(refusedEvidence{SignedSM3: hex.EncodeToString(h[:]), SignedBytes: len(full.Text),
			Date: store.BoundedText(f.Date, 64), Nonce: store.BoundedText(f.Nonce, 64), BodySM3: store.BoundedText(f.BodySM3, 64), Signature: full.Signature,
			Certificate: store.BoundedText(full.Certificate, 64)})
		if err == nil && len(out) <= maxRefusedEvidence {
			return out
		}
	}
	if len(evidence) <= maxRefusedEvidence {
		return evidence
	}
	h := sm3.Sum(evidence)
	out, _ := json.Marshal(struct {
		SM3   string `json:"evidence_sm3"`
		Bytes int    `json:"evidence_bytes"`
	}{hex.EncodeToString(h[:]), len(evidence)})
	return out
}

// raCertificate returns the RA certificate serial after checking that it
// may sign requests now: an SM2 signing certificate with the cmcRA EKU,
// admitted by the allow-lists, good (or superseded) and within its
// validity, and no certificate for its key revoked or on hold.
func (a *server) raCertificate(serial []byte, now time.Time) (*smx509.Certificate, error) {
	bad := func(format string, args ...any) error {
		return &sigError{code: api.CodeRACertificate, msg: fmt.Sprintf("RA certificate %x: ", serial) + fmt.Sprintf(format, args...)}
	}
	rec, sameKey, err := a.eng.SigningRecord(serial)
	if errors.Is(err, store.ErrNotFound) {
		return nil, bad("not issued by this CA")
	}
	if err != nil {
		return nil, &sigError{code: api.CodeStoreUnavailable, msg: err.Error()}
	}
	if (rec.Status != store.StatusGood && rec.Status != store.StatusSuperseded) || now.Before(rec.NotBefore) || now.After(rec.NotAfter) {
		return nil, bad("%s or outside its validity", rec.Status)
	}
	cert, err := smx509.ParseCertificate(rec.DER)
	if err != nil || !sm2.IsSM2PublicKey(cert.PublicKey) || cert.KeyUsage&smx509.KeyUsageDigitalSignature == 0 {
		return nil, bad("not an SM2 signing certificate")
	}
	if !slices.ContainsFunc(cert.UnknownExtKeyUsage, engine.RACertificateEKU.Equal) {
		return nil, bad("not an RA certificate (no id-kp-cmcRA extended key usage; issue one under the ra-sign profile)")
	}
	if !a.sigs.allows(rec) {
		return nil, bad("not in ra_signatures.allowed_serials or allowed_subjects")
	}
	for _, o := range sameKey {
		if o.Listed() {
			return nil, bad("its key is also certified by %x, which is %s: the key signs nothing more", o.Serial, o.Status)
		}
	}
	return cert, nil
}

// refuseSignature answers a bad or missing RA signature and audits it.
func (a *server) refuseSignature(w http.ResponseWriter, r *http.Request, p peer, err error) {
	var se *sigError
	if !errors.As(err, &se) {
		se = &sigError{code: api.CodeInternal, msg: err.Error()}
	}
	a.refuse(w, r, p, se.code, se.msg, string(se.code)+": "+se.msg)
}
