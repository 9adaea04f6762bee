package engine

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/lint"
)

// draft is a certificate ready for the HSM: its linted TBS and the e the
// issuing key signs.
type draft struct {
	serial    []byte
	tbs       []byte
	e         []byte
	notBefore time.Time
	notAfter  time.Time
}

var ekuByName = map[string]smx509.ExtKeyUsage{
	"serverAuth":      smx509.ExtKeyUsageServerAuth,
	"clientAuth":      smx509.ExtKeyUsageClientAuth,
	"codeSigning":     smx509.ExtKeyUsageCodeSigning,
	"emailProtection": smx509.ExtKeyUsageEmailProtection,
	"timeStamping":    smx509.ExtKeyUsageTimeStamping,
}

// newSerial draws a serial (SPEC §5.3): 16 random bytes, top bit clear so
// the INTEGER is positive and 16 octets or fewer, never zero.
func newSerial(r io.Reader) ([]byte, error) {
	for {
		b := make([]byte, 16)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("draw serial: %w", err)
		}
		b[0] &= 0x7f
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n.Bytes(), nil // minimal: what the certificate's INTEGER holds
		}
	}
}

// build makes o's certificate with serial and validity from now, signs it
// with the throwaway key, lints it, and returns its TBS for the HSM.
func (e *Engine) build(o *order, iss *Issuer, serial []byte, now time.Time) (*draft, error) {
	pub, ok := o.pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, errorf(CodeInternal, "order %s: public key %T", o.id, o.pub)
	}
	p := o.profile
	if err := issuerValidAt(iss, now); err != nil {
		return nil, err
	}
	notAfter := now.AddDate(0, 0, o.days).Add(-time.Second) // notAfter is inclusive
	if notAfter.After(iss.Cert.NotAfter) {
		return nil, errorf(CodeValidityTooLong, "certificate would end %s, after the issuing CA's %s",
			notAfter.Format(time.DateOnly), iss.Cert.NotAfter.Format(time.DateOnly))
	}
	tmpl := &smx509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		Subject:               o.subject,
		RawSubject:            o.raw,
		NotBefore:             now,
		NotAfter:              notAfter,
		KeyUsage:              p.LintUsage().KeyUsage(),
		BasicConstraintsValid: true,
		SubjectKeyId:          hsm.KeyID(pub),
		DNSNames:              o.dns,
		EmailAddresses:        o.emails,
		CRLDistributionPoints: p.CRLDistribution,
		OCSPServer:            p.OCSP,
		IssuingCertificateURL: p.CAIssuers,
		ExtraExtensions:       o.identity,
	}
	for _, name := range p.ExtKeyUsage {
		if eku, ok := ekuByName[name]; ok {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, eku)
		} else { // cmcRA has no constant in smx509
			tmpl.UnknownExtKeyUsage = append(tmpl.UnknownExtKeyUsage, extKeyUsages[name])
		}
	}
	for _, s := range p.Policies {
		oid, _ := smx509.ParseOID(s) // validated with the profile
		tmpl.Policies = append(tmpl.Policies, oid)
	}
	// The throwaway key signs in place of the issuer, so the parent must
	// carry its public key; name and SKI (for the AKI) stay the issuer's.
	parent := *iss.Cert
	parent.PublicKey = e.throwaway.Public()
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, &parent, pub, e.throwaway)
	if err != nil {
		// The same order would fail the same way again: not retryable.
		// Request checking is meant to refuse whatever gets here first.
		return nil, errorf(CodeLintFailed, "certificate for %s cannot be built: %v", o.id, err)
	}
	if err := lint.Certificate(der, iss.Cert, p.LintUsage()); err != nil {
		return nil, errorf(CodeLintFailed, "certificate for %s fails lint: %v", o.id, err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, errorf(CodeInternal, "reparse certificate for %s: %v", o.id, err)
	}
	return &draft{serial: serial, tbs: c.RawTBSCertificate, e: iss.Signer.Digest(c.RawTBSCertificate),
		notBefore: now, notAfter: notAfter}, nil
}

// sign has the HSM sign d and returns the final certificate, after checking
// its TBS is byte for byte the one linted and that it passes the lints
// again as assembled. The signature was verified by the Signer over
// d.e = SM3(Z‖TBS) of this very TBS, which is what verifying the
// certificate under the issuer computes; doing that again would cost a
// second SM2 verification and a Z per certificate for nothing.
func (e *Engine) sign(ctx context.Context, d *draft, iss *Issuer, usage lint.Usage) (*smx509.Certificate, error) {
	sig, err := e.hsmSign(ctx, iss.Signer, d.e)
	e.noteHSM(err)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errHSM, err)
	}
	der, err := assemble(d.tbs, sig)
	if err != nil {
		return nil, err
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	if !bytes.Equal(c.RawTBSCertificate, d.tbs) {
		return nil, fmt.Errorf("signed certificate's TBS differs from the linted one")
	}
	if err := lint.Certificate(der, iss.Cert, usage); err != nil {
		return nil, fmt.Errorf("signed certificate fails lint: %w", err)
	}
	return c, nil
}

var sm2WithSM3 = pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 501}}

// assemble wraps a TBS and its SM2-with-SM3 signature into a certificate
// or CRL (both are SEQUENCE { tbs, signatureAlgorithm, signatureValue }).
func assemble(tbs, sig []byte) ([]byte, error) {
	return asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, sm2WithSM3, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
}

// newThrowawayKey is the software key lint-before-sign uses; it signs
// nothing that leaves the engine.
func newThrowawayKey() (*sm2.PrivateKey, error) {
	return sm2.GenerateKey(rand.Reader)
}
