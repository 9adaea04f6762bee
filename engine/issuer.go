package engine

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"signerd/api"
	"time"

	"github.com/emmansun/gmsm/smx509"
)

// Signer is an issuing key: SM2 in the HSM, signing e = SM3(Z‖TBS).
// *hsm.SM2Signer is the implementation; the interface is what the engine
// needs of it.
type Signer interface {
	Public() crypto.PublicKey
	Digest(msg []byte) []byte
	// SignDigest returns a DER signature of e that it has verified under
	// Public(); the engine relies on that and does not verify again.
	SignDigest(ctx context.Context, e []byte) ([]byte, error)
}

// Issuer is an issuing CA: its certificate and its key in the HSM.
type Issuer struct {
	Cert   *smx509.Certificate
	Signer Signer
	id     string
}

// NewIssuer pairs an issuing CA certificate with its HSM key, checking
// they belong together and that the certificate may issue certificates and
// CRLs.
func NewIssuer(cert *smx509.Certificate, signer Signer) (*Issuer, error) {
	name := cert.Subject.String()
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := signer.Public().(equaler)
	switch {
	case !ok || !pub.Equal(cert.PublicKey):
		return nil, fmt.Errorf("issuer %q: the HSM key is not the certificate's key", name)
	case !cert.IsCA || !cert.BasicConstraintsValid:
		return nil, fmt.Errorf("issuer %q: certificate is not a CA", name)
	case cert.KeyUsage&smx509.KeyUsageCertSign == 0 || cert.KeyUsage&smx509.KeyUsageCRLSign == 0:
		return nil, fmt.Errorf("issuer %q: certificate lacks keyCertSign or cRLSign", name)
	case len(cert.SubjectKeyId) == 0:
		return nil, errors.New("issuer " + name + ": certificate has no subjectKeyIdentifier")
	case cert.SignatureAlgorithm != smx509.SM2WithSM3:
		return nil, fmt.Errorf("issuer %q: certificate is signed with %v, not SM2-SM3", name, cert.SignatureAlgorithm)
	}
	return &Issuer{Cert: cert, Signer: signer, id: hex.EncodeToString(cert.SubjectKeyId)}, nil
}

// ID names the issuer in the store: the hex of its key identifier.
func (i *Issuer) ID() string { return i.id }

// issuerValidAt refuses signing with iss at now if now is outside its
// certificate's validity: what it would sign could not chain (RFC 5280
// §6.1.3), and the RA is not to blame, so this is not validity_too_long
// (certificates) or lint_failed (CRLs).
func issuerValidAt(iss *Issuer, now time.Time) error {
	switch {
	case now.After(iss.Cert.NotAfter):
		return errorf(api.CodeIssuerExpired, "the issuing CA %s expired %s and the clock reads %s: an operator must roll it over (or correct the clock)",
			iss.ID(), iss.Cert.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	case now.Before(iss.Cert.NotBefore):
		return errorf(api.CodeIssuerExpired, "the issuing CA %s is valid from %s and the clock reads %s: correct the clock",
			iss.ID(), iss.Cert.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}
