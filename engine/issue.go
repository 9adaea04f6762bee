package engine

import (
	"context"
	"signerd/api"
	"signerd/store"

	"github.com/emmansun/gmsm/smx509"
)

// Issue issues a certificate for req (or returns the one an earlier request
// with the same id and content got).
func (e *Engine) Issue(ctx context.Context, actor store.Actor, req Request) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindIssue, "request "+req.ID, err) }()
	o, err := e.check(kindIssue, &req, nil)
	if err != nil {
		return nil, err
	}
	o.actor = actor
	return e.queue.submit(ctx, o)
}

// Renew issues a certificate for req's new key that replaces the one with
// serial old; old is marked superseded (it stays valid until revoked or
// expired, so the holder can switch over).
func (e *Engine) Renew(ctx context.Context, actor store.Actor, old []byte, req Request) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindRenew, "request "+req.ID, err) }()
	prev, err := e.lookup(actor, "certificate."+kindRenew, old)
	if err != nil {
		return nil, err
	}
	if req.Profile != prev.Profile {
		return nil, errorf(api.CodeBadRequest, "renewal must keep profile %q", prev.Profile)
	}
	o, err := e.check(kindRenew, &req, old)
	if err != nil {
		return nil, err
	}
	o.actor = actor
	return e.queue.submit(ctx, o)
}

// Extend issues the certificate with serial old again with a new validity:
// same key, subject, names and identity, a new serial. The old one is
// marked superseded.
func (e *Engine) Extend(ctx context.Context, actor store.Actor, requestID string, old []byte, days int) (c *store.Certificate, err error) {
	defer func() { e.auditRefusal(actor, "certificate."+kindExtend, "request "+requestID, err) }()
	prev, err := e.status(old)
	if err == nil && isOwnCertificate(prev) {
		return nil, e.refuseOwn(actor, "certificate."+kindExtend, old)
	}
	if err := checkRequestID(requestID); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	p := e.profiles[prev.Profile]
	if p == nil {
		return nil, errorf(api.CodeUnknownProfile, "certificate %x has profile %q, no longer configured", old, prev.Profile)
	}
	cert, err := smx509.ParseCertificate(prev.DER)
	if err != nil {
		return nil, errorf(api.CodeInternal, "certificate %x: %v", old, err)
	}
	o := &order{kind: kindExtend, id: requestID, actor: actor, profile: p, raw: cert.RawSubject, pub: cert.PublicKey,
		dns: cert.DNSNames, emails: cert.EmailAddresses, replaces: old}
	for _, ext := range cert.Extensions {
		for _, oid := range identityOIDs {
			if ext.Id.Equal(oid) {
				o.identity = append(o.identity, ext)
			}
		}
	}
	if err := allowKey(o.pub, p); err != nil {
		return nil, err
	}
	if o.days, err = checkValidity(days, p); err != nil {
		return nil, err
	}
	o.digest = contentDigest(kindExtend, old, struct {
		ID   string `json:"request_id"`
		Days int    `json:"validity_days"`
	}{requestID, days})
	return e.queue.submit(ctx, o)
}
