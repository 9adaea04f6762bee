package engine

import (
	"context"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"signerd/engine/audit"
	"signerd/hsm"
	"signerd/store"
)

// The audit key is certified by the active issuing CA, through the queue
// like any certificate (a serial of its own, recorded, audited), so an
// exported bundle can be checked against the CA's root. Its certificate
// has keyUsage digitalSignature alone, which no profile gives, and the
// common name audit.KeySubjectPrefix.

const usageAuditLog = "audit-log"

var auditKeyProfile = &Profile{Name: "signerd-audit-key", Usage: usageAuditLog, KeyTypes: []string{KeySM2}, MaxValidityDays: 3650}

// internalRequestPrefix starts the request ids the engine uses itself;
// RA request ids may not.
const internalRequestPrefix = "signerd."

// auditKeyRequestID is the request the audit key with keyID is certified
// under, so start-up finds whether it has been.
func auditKeyRequestID(keyID []byte) string {
	return internalRequestPrefix + "audit-key." + hex.EncodeToString(keyID)
}

// certifyAuditKey has the active issuer certify the audit key unless an
// earlier start did.
func (e *Engine) certifyAuditKey(ctx context.Context) error {
	keyID := hsm.KeyID(e.auditPub)
	id := auditKeyRequestID(keyID)
	issued := false
	if err := e.view(func(tx *store.Tx) error {
		r, err := tx.Request(id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		issued = err == nil && r.State == store.RequestIssued
		return err
	}); err != nil {
		return fmt.Errorf("certify the audit key: %w", err)
	}
	if issued {
		return nil
	}
	iss := e.active
	days := min(auditKeyProfile.MaxValidityDays, int(iss.Cert.NotAfter.Sub(e.cfg.Now())/(24*time.Hour)))
	if days < 1 {
		return fmt.Errorf("certify the audit key: issuing CA %q expires within a day", iss.Cert.Subject)
	}
	subject := pkix.Name{CommonName: fmt.Sprintf("%s %X", audit.KeySubjectPrefix, keyID[:8]),
		Organization: iss.Cert.Subject.Organization, Country: iss.Cert.Subject.Country}
	o := &order{kind: kindIssue, id: id, actor: store.System, profile: auditKeyProfile, subject: subject,
		pub: e.auditPub, days: days,
		// The key is the request: a retry after a failure with another
		// validity is the same request.
		digest: contentDigest(kindIssue, nil, struct {
			KeyID []byte `json:"audit_key_id"`
		}{keyID})}
	c, err := e.queue.submit(ctx, o)
	if err != nil {
		return fmt.Errorf("certify the audit key: %w", err)
	}
	e.log.Info("audit key certified", "serial", store.HexSerial(c.Serial), "subject", c.Subject)
	return nil
}

// auditKeyCertificate returns the bundle entry for the audit key keyID:
// its certificate and the certificate of the CA that issued it.
func (e *Engine) auditKeyCertificate(tx *store.Tx, keyID []byte) (audit.Key, error) {
	k := audit.Key{KeyID: keyID}
	r, err := tx.Request(auditKeyRequestID(keyID))
	if err != nil {
		return k, fmt.Errorf("audit key %x: no certificate: %w", keyID, err)
	}
	c, err := tx.Certificate(r.Serial)
	if err != nil {
		return k, fmt.Errorf("audit key %x: certificate %x: %w", keyID, r.Serial, err)
	}
	iss := e.issuers[c.Issuer]
	if iss == nil {
		return k, fmt.Errorf("audit key %x: its certificate's issuer %s is no longer configured; list it under issuers", keyID, c.Issuer)
	}
	k.Certificate, k.Issuer = c.DER, iss.Cert.Raw
	return k, nil
}

func isInternalRequestID(id string) bool { return strings.HasPrefix(id, internalRequestPrefix) }

// internalProfilePrefix starts the names of the profiles signerd issues
// its own certificates under (auditKeyProfile); no configured profile may
// take such a name, and no RA request may name one.
const internalProfilePrefix = "signerd-"

func isInternalProfile(name string) bool { return strings.HasPrefix(name, internalProfilePrefix) }

// isOwnCertificate reports whether c is a certificate signerd issued for
// itself rather than for an RA.
func isOwnCertificate(c *store.Certificate) bool {
	return isInternalRequestID(c.RequestID) || isInternalProfile(c.Profile)
}
