package engine

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"signerd/audit"
	"signerd/hsm"
	"signerd/store"
)

// The audit key is certified by the active issuing CA, through the queue
// like any certificate (a serial of its own, recorded, audited), so an
// exported bundle can be checked against the CA's root. Its certificate
// has keyUsage digitalSignature alone, which no profile gives, and a
// common name that names the node whose chain the key seals
// (audit.KeySubject): a bundle's verifier takes a seal only in that
// node's chain.

// AuditSigner is the audit key: SM2 in the HSM, signing e = SM3(Z‖msg).
// *hsm.SM2Signer is the implementation.
type AuditSigner interface {
	Public() crypto.PublicKey
	Digest(msg []byte) []byte
	// SignDigest returns a DER signature of e that it has verified under
	// Public(); the engine relies on that and does not verify again.
	SignDigest(ctx context.Context, e []byte) ([]byte, error)
}

const usageAuditLog = "audit-log"

var auditKeyProfile = &Profile{Name: "signerd-audit-key", Usage: usageAuditLog, KeyTypes: []string{KeySM2}, MaxValidityDays: 3650}

// internalRequestPrefix starts the request ids the engine uses itself;
// RA request ids may not.
const internalRequestPrefix = "signerd."

// auditKeyRequestID is the request node's audit key with keyID is
// certified under, so start-up finds whether it has been. The unnamed
// node's keeps the id it had before nodes; a named node's holds the node,
// so that a key the unnamed node used before it was given a name is
// certified again, naming it.
func auditKeyRequestID(node string, keyID []byte) string {
	if node == "" {
		return internalRequestPrefix + "audit-key." + hex.EncodeToString(keyID)
	}
	return internalRequestPrefix + "audit-key." + node + "." + hex.EncodeToString(keyID)
}

// checkAuditKeyOwn refuses a named node an audit key that another named
// node's certificate covers: a token copied from another node's (a whole
// token cloned, not only its issuing key backed up) holds that node's
// audit key, and with it either node could seal the other's chain. Only
// the unnamed node's key may be a named node's too: a signerd given a
// name keeps its HSM, and the unnamed chain is written no more.
func (e *Engine) checkAuditKeyOwn() error {
	own := e.store.Node()
	if own == "" || e.sealer.key == nil {
		return nil
	}
	keyID := hsm.KeyID(e.sealer.pub)
	return e.view(func(tx *store.Tx) error {
		traces, err := tx.ChainTraces()
		if err != nil {
			return fmt.Errorf("check the audit key: %w", err)
		}
		for _, c := range traces {
			if c.Node == "" || c.Node == own {
				continue
			}
			_, err := tx.Request(auditKeyRequestID(c.Node, keyID))
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("check the audit key: %w", err)
			}
			return fmt.Errorf("the audit key in this HSM (CKA_ID %X) is node %s's: its certificate names node %s, and a node may seal only "+
				"its own audit chain. This token holds a copy of node %s's keys; give node %s an audit key of its own "+
				"(a token of its own, or another audit.key label, which signerd generates at start)", keyID, c.Node, c.Node, c.Node, own)
		}
		return nil
	})
}

// certifyAuditKey has the active issuer certify the audit key unless an
// earlier start did.
func (e *Engine) certifyAuditKey(ctx context.Context) error {
	keyID := hsm.KeyID(e.sealer.pub)
	node := e.store.Node()
	id := auditKeyRequestID(node, keyID)
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
	subject := pkix.Name{CommonName: audit.KeySubject(node, keyID),
		Organization: iss.Cert.Subject.Organization, Country: iss.Cert.Subject.Country}
	o := &order{kind: kindIssue, id: id, actor: store.System, profile: auditKeyProfile, subject: subject,
		pub: e.sealer.pub, days: days,
		// The key is the request: a retry after a failure with another
		// validity is the same request.
		digest: contentDigest(kindIssue, nil, struct {
			KeyID []byte `json:"audit_key_id"`
			Node  string `json:"node,omitempty"`
		}{keyID, node})}
	c, err := e.queue.submit(ctx, o)
	if err != nil {
		return fmt.Errorf("certify the audit key: %w", err)
	}
	e.log.Info("audit key certified", "serial", store.HexSerial(c.Serial), "subject", c.Subject)
	return nil
}

// auditKeyCertificate returns the bundle entry for node's audit key
// keyID: its certificate, naming node, and the certificate of the CA that
// issued it.
func (e *Engine) auditKeyCertificate(tx *store.Tx, node string, keyID []byte) (audit.Key, error) {
	k := audit.Key{KeyID: keyID}
	r, err := tx.Request(auditKeyRequestID(node, keyID))
	if err != nil {
		return k, fmt.Errorf("audit key %x: no certificate for %s: %w", keyID, audit.ChainName(node), err)
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
