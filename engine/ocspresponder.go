package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
	"signerd/store"
)

// The delegated OCSP responder (RFC 6960 §4.2.2.2): an SM2 key of its own
// in the HSM, certified by the active issuing CA for OCSP signing alone
// (id-kp-OCSPSigning, id-pkix-ocsp-nocheck) with a short validity, and
// certified again by signerd itself well before that ends, as the audit
// key is certified: through the queue, under a request id of its own.
// Retired issuing keys sign their certificates' responses themselves: the
// queue issues with the active key only.

const usageOCSPSigning = "ocsp-signing"

// ocspResponderProfile is the profile the responder's certificates are
// issued under; MaxValidityDays bounds OCSP.ResponderValidity.
var ocspResponderProfile = &Profile{Name: "signerd-ocsp-responder", Usage: usageOCSPSigning, KeyTypes: []string{KeySM2},
	ExtKeyUsage: []string{"OCSPSigning"}, MaxValidityDays: 366}

// oidOCSPNoCheck is id-pkix-ocsp-nocheck: relying parties do not ask for
// the responder certificate's own status.
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// defaultOCSPResponderValidity is a responder certificate's validity
// unless configured.
const defaultOCSPResponderValidity = 30 * 24 * time.Hour

// ocspResponder is the active issuer's delegated responder: its key, and
// its current certificate as an issuance.Issuer that signs responses only.
type ocspResponder struct {
	key      issuance.Signer
	pub      *ecdsa.PublicKey
	validity time.Duration
	current  atomic.Pointer[issuance.Issuer]
}

// ocspResponderRequestID is the request node's responder key with keyID
// is certified under for the n-th time (from 1).
func ocspResponderRequestID(node string, keyID []byte, n int) string {
	if node != "" {
		node += "."
	}
	return internalRequestPrefix + "ocsp-responder." + node + hex.EncodeToString(keyID) + "." + strconv.Itoa(n)
}

// renewalDue reports whether c must be replaced at now: when less than a
// third of its validity is left, or less than twice a response's: a
// response must not outlive the certificate that vouches for it.
func (r *ocspResponder) renewalDue(c *smx509.Certificate, now time.Time, responseValidity time.Duration) bool {
	left := c.NotAfter.Sub(now)
	return left < c.NotAfter.Sub(c.NotBefore)/3 || left < 2*responseValidity
}

// renewalHelps reports whether a certificate made now would end at least
// twelve hours after c: near the issuing CA's own end it would not, and
// certifying again would only mint certificates; responses are then
// limited to c's end (ocspSigner.signOne), and past it the issuing key
// signs them (ocspSigner.signerOf).
func (r *ocspResponder) renewalHelps(c *smx509.Certificate, iss *issuance.Issuer, now time.Time) bool {
	return now.Add(time.Duration(r.days(iss, now)) * 24 * time.Hour).After(c.NotAfter.Add(12 * time.Hour))
}

// days is the validity, in whole days, of a certificate certified at now:
// the responder's validity, within the issuing CA's.
func (r *ocspResponder) days(iss *issuance.Issuer, now time.Time) int {
	return int(min(r.validity, iss.Cert.NotAfter.Sub(now)) / (24 * time.Hour))
}

// ensureResponder makes the responder's current certificate one that is
// not due for renewal, certifying the key anew if needed.
func (e *Engine) ensureResponder(ctx context.Context) error {
	r := e.responder
	if r == nil {
		return nil
	}
	now := e.cfg.Now()
	cur := r.current.Load()
	if cur != nil && (!r.renewalDue(cur.Cert, now, e.cfg.OCSP.Validity) || !r.renewalHelps(cur.Cert, e.active, now)) {
		return nil
	}
	node, keyID := e.store.Node(), hsm.KeyID(r.pub)
	// The latest certification recorded, and the number of the next.
	var latest *store.Certificate
	n := 1
	if err := e.view(func(tx *store.Tx) error {
		for ; ; n++ {
			req, err := tx.Request(ocspResponderRequestID(node, keyID, n))
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if req.State != store.RequestIssued {
				continue
			}
			if latest, err = tx.Certificate(req.Serial); err != nil {
				return err
			}
		}
	}); err != nil {
		return fmt.Errorf("OCSP responder: %w", err)
	}
	if latest != nil {
		c, err := smx509.ParseCertificate(latest.DER)
		if err != nil {
			return fmt.Errorf("OCSP responder certificate %x: %w", latest.Serial, err)
		}
		if latest.Issuer == e.active.ID() && (!r.renewalDue(c, now, e.cfg.OCSP.Validity) || !r.renewalHelps(c, e.active, now)) {
			return r.use(c, e.active)
		}
	}
	iss := e.active
	days := r.days(iss, now)
	if days < 1 {
		return fmt.Errorf("OCSP responder: issuing CA %q expires within a day", iss.Cert.Subject)
	}
	subject := pkix.Name{CommonName: fmt.Sprintf("signerd OCSP responder %s%X", nodePrefix(node), keyID[:8]),
		Organization: iss.Cert.Subject.Organization, Country: iss.Cert.Subject.Country}
	id := ocspResponderRequestID(node, keyID, n)
	o := &order{kind: kindIssue, id: id, actor: store.System, profile: ocspResponderProfile, subject: subject,
		pub: r.pub, days: days,
		digest: contentDigest(kindIssue, nil, struct {
			KeyID []byte `json:"ocsp_responder_key_id"`
			Node  string `json:"node,omitempty"`
			N     int    `json:"n"`
		}{keyID, node, n})}
	c, err := e.queue.submit(ctx, o)
	if err != nil {
		return fmt.Errorf("certify the OCSP responder: %w", err)
	}
	cert, err := smx509.ParseCertificate(c.DER)
	if err != nil {
		return fmt.Errorf("OCSP responder certificate %x: %w", c.Serial, err)
	}
	e.log.Info("OCSP responder certified", "serial", store.HexSerial(c.Serial), "subject", c.Subject, "not_after", cert.NotAfter)
	return r.use(cert, iss)
}

// use makes cert, issued by iss, the responder's current certificate.
func (r *ocspResponder) use(cert *smx509.Certificate, iss *issuance.Issuer) error {
	resp, err := issuance.NewOCSPResponder(cert, r.key, iss.Cert)
	if err != nil {
		return err
	}
	r.current.Store(resp)
	return nil
}

func nodePrefix(node string) string {
	if node == "" {
		return ""
	}
	return node + " "
}
