package ceremony

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/crl"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/revocation"
)

// rootCRL has the root sign a CRL of the CA certificates it revokes (an
// ARL). The root is offline, so each one is a ceremony with its own number.
type rootCRL struct {
	Header            `yaml:",inline"`
	HSM               hsm.TokenSpec `yaml:"hsm"`
	SigningKey        string        `yaml:"signing_key"`
	IssuerCertificate string        `yaml:"issuer_certificate"`
	CRL               struct {
		Number     int64          `yaml:"number"`
		ThisUpdate string         `yaml:"this_update"`
		NextUpdate string         `yaml:"next_update"`
		Revoked    []caRevocation `yaml:"revoked"`
	} `yaml:"crl"`
	Outputs struct {
		CRL string `yaml:"crl"`
	} `yaml:"outputs"`
}

type caRevocation struct {
	Certificate string `yaml:"certificate"`
	RevokedAt   string `yaml:"revoked_at"`
	Reason      string `yaml:"reason"`
}

// caReasons are the RFC 5280 reasons a CA certificate is revoked for; a
// root CRL entry must say which.
var caReasons = map[revocation.Reason]bool{revocation.KeyCompromise: true, revocation.CACompromise: true, revocation.AffiliationChanged: true,
	revocation.Superseded: true, revocation.CessationOfOperation: true, revocation.PrivilegeWithdrawn: true}

func (c *rootCRL) header() *Header { return &c.Header }
func (c *rootCRL) objects() string { return c.SigningKey }

func (c *rootCRL) prepare(dir string) error {
	if err := prepareToken(dir, &c.HSM); err != nil {
		return err
	}
	switch {
	case c.SigningKey == "" || c.IssuerCertificate == "":
		return errors.New("signing_key and issuer_certificate are required")
	case c.Outputs.CRL == "":
		return errors.New("outputs.crl is required")
	case c.CRL.Number <= 0:
		return fmt.Errorf("crl.number %d: must be positive, and above every earlier root CRL's", c.CRL.Number)
	}
	resolvePaths(dir, &c.IssuerCertificate, &c.Outputs.CRL)
	for i := range c.CRL.Revoked {
		resolvePaths(dir, &c.CRL.Revoked[i].Certificate)
	}
	return nil
}

func (c *rootCRL) perform(r *runner) error {
	if err := r.outputsAbsent(c.Outputs.CRL); err != nil {
		return err
	}
	issuer, err := issuance.ReadCertificate(c.IssuerCertificate)
	if err != nil {
		return fmt.Errorf("issuer certificate: %w", err)
	}
	thisUpdate, err := parseTime("crl.this_update", c.CRL.ThisUpdate)
	if err != nil {
		return err
	}
	nextUpdate, err := parseTime("crl.next_update", c.CRL.NextUpdate)
	if err != nil {
		return err
	}
	if !thisUpdate.Before(nextUpdate) {
		return errors.New("crl.next_update must be after crl.this_update")
	}
	if err := within("CRL", thisUpdate, nextUpdate, issuer); err != nil {
		return err
	}
	scope := crl.Scope{Number: uint64(c.CRL.Number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	var entries []crl.Entry
	for _, rv := range c.CRL.Revoked {
		e, err := c.entry(rv, issuer, thisUpdate)
		if err != nil {
			return fmt.Errorf("crl.revoked %s: %w", rv.Certificate, err)
		}
		for _, prev := range entries {
			if bytes.Equal(prev.Serial, e.Serial) {
				return fmt.Errorf("crl.revoked: serial %X is listed twice", e.Serial)
			}
		}
		entries = append(entries, e)
		r.step("checked: %s (serial %X) is a CA certificate this root issued; revoked %s, reason %s",
			rv.Certificate, e.Serial, day(e.RevokedAt), rv.Reason)
	}
	// The encoder takes entries in bytewise serial order.
	slices.SortFunc(entries, func(a, b crl.Entry) int { return bytes.Compare(a.Serial, b.Serial) })
	m, err := r.openToken(c.HSM)
	if err != nil {
		return err
	}
	defer m.Close()
	k, err := r.findKey(m, c.SigningKey, issuer)
	if err != nil {
		return err
	}
	der, err := r.signCRL(scope, entries, issuer, k)
	if err != nil || r.dryRun {
		return err
	}
	return r.write(c.Outputs.CRL, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), false)
}

// entry checks one revocation: a CA certificate the root issued, a reason
// fit for a CA, and a time the CRL can state.
func (c *rootCRL) entry(rv caRevocation, issuer *smx509.Certificate, thisUpdate time.Time) (crl.Entry, error) {
	var e crl.Entry
	cert, err := issuance.ReadCertificate(rv.Certificate)
	if err != nil {
		return e, err
	}
	if !cert.IsCA {
		return e, errors.New("not a CA certificate; the root revokes CAs only")
	}
	if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) || cert.CheckSignatureFrom(issuer) != nil {
		return e, errors.New("not issued by this root")
	}
	if rv.Reason == "" {
		return e, errors.New("reason is required")
	}
	code, err := revocation.Parse(rv.Reason)
	if err != nil || !caReasons[code] {
		return e, fmt.Errorf("reason %q: want keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation or privilegeWithdrawn", rv.Reason)
	}
	at, err := parseTime("revoked_at", rv.RevokedAt)
	if err != nil {
		return e, err
	}
	if at.After(thisUpdate) || at.Before(cert.NotBefore) {
		return e, fmt.Errorf("revoked_at %s must fall between the certificate's notBefore and the CRL's this_update", rv.RevokedAt)
	}
	if cert.SerialNumber.Sign() <= 0 {
		// A CRL entry's serial is the positive magnitude the encoder takes.
		return e, fmt.Errorf("serial %v: not positive, so no CRL entry can name it", cert.SerialNumber)
	}
	return crl.Entry{Serial: cert.SerialNumber.Bytes(), RevokedAt: at, Reason: code}, nil
}

// signCRL is signCA's counterpart for CRLs.
func (r *runner) signCRL(s crl.Scope, entries []crl.Entry, issuer *smx509.Certificate, k *caKey) ([]byte, error) {
	iss, err := caIssuer(issuer, k)
	if err != nil {
		return nil, err
	}
	b, err := iss.NewCRL(s)
	if err != nil {
		return nil, fmt.Errorf("CRL %w", err)
	}
	for _, e := range entries {
		if err := b.Add(e); err != nil {
			return nil, err
		}
	}
	tok, err := iss.PrepareCRL(b)
	if err != nil {
		return nil, fmt.Errorf("CRL %w", err)
	}
	r.step("checked: CRL number %d with %d entries, %s to %s, lints clean (its TBS, before any signature)",
		s.Number, len(entries), day(s.ThisUpdate), day(s.NextUpdate))
	if r.dryRun {
		return nil, nil
	}
	out, err := iss.SignAndIssue(context.Background(), tok)
	if err != nil {
		return nil, fmt.Errorf("CRL: %w", err)
	}
	r.step("signed CRL number %d in the HSM with key %q; signature verifies; TBS identical to the linted one; lints clean",
		s.Number, k.Label)
	return out.DER, nil
}
