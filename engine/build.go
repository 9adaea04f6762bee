package engine

import (
	"crypto/ecdsa"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/hsm"
	"signerd/issuance"
)

// draft is a certificate ready for the HSM: its serial and the issuance
// token holding its linted TBS.
type draft struct {
	serial []byte
	tok    *issuance.Token
}

var ekuByName = map[string]smx509.ExtKeyUsage{
	"OCSPSigning":     smx509.ExtKeyUsageOCSPSigning,
	"serverAuth":      smx509.ExtKeyUsageServerAuth,
	"clientAuth":      smx509.ExtKeyUsageClientAuth,
	"codeSigning":     smx509.ExtKeyUsageCodeSigning,
	"emailProtection": smx509.ExtKeyUsageEmailProtection,
	"timeStamping":    smx509.ExtKeyUsageTimeStamping,
}

// build makes o's certificate with serial and validity from now, as a
// token of iss (whose CRLs shards lays out): its TBS built and linted,
// for the HSM to sign.
func build(o *order, iss *issuance.Issuer, serial []byte, now time.Time, shards CRLShards) (*draft, error) {
	pub, ok := o.pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, errorf(api.CodeInternal, "order %s: public key %T", o.id, o.pub)
	}
	p := o.profile
	// iss is valid at now: prepare refused the whole batch otherwise.
	notAfter := now.AddDate(0, 0, o.days).Add(-time.Second) // notAfter is inclusive
	if notAfter.After(iss.Cert.NotAfter) {
		return nil, errorf(api.CodeValidityTooLong, "certificate would end %s, after the issuing CA's %s",
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
	if p.Usage == usageOCSPSigning {
		tmpl.ExtraExtensions = append(slices.Clip(tmpl.ExtraExtensions), pkix.Extension{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}})
	}
	points, freshest, err := shards.distributionPoint(serial, p.FreshestCRL)
	if err != nil {
		return nil, errorf(api.CodeInternal, "certificate for %s: %v", o.id, err)
	}
	if points != nil {
		tmpl.CRLDistributionPoints = points
		tmpl.ExtraExtensions = append(slices.Clip(tmpl.ExtraExtensions), freshest...)
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
	tok, err := iss.PrepareCertificate(tmpl, pub, p.LintUsage())
	if err != nil {
		// A lint failure is not retryable: the same order would fail the
		// same way again. Request checking is meant to refuse whatever
		// gets here first.
		return nil, errorf(issuanceCode(err), "certificate for %s %v", o.id, err)
	}
	return &draft{serial: serial, tok: tok}, nil
}

// issuerValidAt refuses signing with iss at now if now is outside its
// certificate's validity. The RA is not to blame, so this is not
// validity_too_long (certificates) or lint_failed (CRLs).
func issuerValidAt(iss *issuance.Issuer, now time.Time) error {
	if err := iss.ValidAt(now); err != nil {
		return errorf(api.CodeIssuerExpired, "%v", err)
	}
	return nil
}

// issuanceCode is the code of an issuance refusal.
func issuanceCode(err error) api.Code {
	if errors.Is(err, issuance.ErrLint) {
		return api.CodeLintFailed
	}
	return api.CodeInternal
}
