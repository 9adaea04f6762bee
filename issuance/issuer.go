package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/lint"
)

var (
	// ErrIssuerNotValid: the time is outside the issuer's validity, so
	// nothing it signed then could chain (RFC 5280 §6.1.3).
	ErrIssuerNotValid = errors.New("issuer not valid at this time")
	// ErrLint: what would be signed cannot be built or fails a lint.
	ErrLint = errors.New("lint")
	// ErrTokenUsed: the token was given to Issue before.
	ErrTokenUsed = errors.New("token already issued")
)

// refusal is an error of a kind (errors.Is) whose message is its own.
type refusal struct {
	kind error
	msg  string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refusef(kind error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Issuer is a CA key in the HSM and the certificate that names it.
type Issuer struct {
	// Cert is nil for an issuer that signs only its own certificate (a
	// root being made).
	Cert   *smx509.Certificate
	Signer Signer
	id     string
	// ocspFor is, for a delegated OCSP responder, the issuing CA whose
	// certificates' status it signs; Cert is then the responder's own.
	ocspFor *smx509.Certificate
	// ocspBuilder holds what the OCSP responses it signs share.
	ocspBuilder atomic.Pointer[responseBuilder]
}

// NewIssuer pairs a CA certificate with its key, checking they belong
// together and that the certificate may issue certificates and CRLs.
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
	}
	alg, err := algorithmOf(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("issuer %q: %w", name, err)
	}
	if alg == hsm.SM2 && cert.SignatureAlgorithm != smx509.SM2WithSM3 {
		// An SM2 hierarchy is SM2 throughout: a relying party that trusts
		// only SM2-SM3 must be able to check every link.
		return nil, fmt.Errorf("issuer %q: certificate is signed with %v, not SM2-SM3", name, cert.SignatureAlgorithm)
	}
	return &Issuer{Cert: cert, Signer: signer, id: hex.EncodeToString(cert.SubjectKeyId)}, nil
}

// NewOCSPResponder pairs a delegated OCSP responder's certificate with its
// key: an Issuer that signs OCSP responses, and nothing else, for the
// certificates of ca. It is an Issuer so that its responses take the one
// path every signature takes (Prepare, the HSM, Issue) through the same
// signing queue; the responder's certificate is its Cert, the CA its
// parent, which the lints check certified it for OCSP signing with
// ocsp-nocheck (RFC 6960 §4.2.2.2).
func NewOCSPResponder(cert *smx509.Certificate, signer Signer, ca *smx509.Certificate) (*Issuer, error) {
	name := cert.Subject.String()
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("OCSP responder %q: the HSM key is not the certificate's key", name)
	}
	if _, err := algorithmOf(signer.Public()); err != nil {
		return nil, fmt.Errorf("OCSP responder %q: %w", name, err)
	}
	if err := lint.OCSPResponder(cert, ca); err != nil {
		return nil, fmt.Errorf("OCSP responder %q: %w", name, err)
	}
	id := hex.EncodeToString(cert.SubjectKeyId)
	if len(cert.SubjectKeyId) == 0 {
		id = hex.EncodeToString(hsm.KeyID(cert.PublicKey.(*ecdsa.PublicKey)))
	}
	return &Issuer{Cert: cert, Signer: signer, id: id, ocspFor: ca}, nil
}

// SelfIssuer is a key that is to sign its own certificate, before it has
// one: PrepareCA with it makes a root.
func SelfIssuer(signer Signer) (*Issuer, error) {
	if _, err := algorithmOf(signer.Public()); err != nil {
		return nil, err
	}
	return &Issuer{Signer: signer}, nil
}

// LoadIssuer finds the SM2 key labelled label in m and pairs it with the
// certificate in certPath (PEM or DER). sm2ID is the signer identity in Z
// (nil: hsm.DefaultSM2ID). It also returns the key's signer as the hsm
// package makes it, which verifies its own signatures, for a self-test.
func LoadIssuer(ctx context.Context, m *hsm.Module, label, certPath string, sm2ID []byte) (*Issuer, *hsm.SM2Signer, error) {
	key, err := m.FindKey(ctx, label)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer %q: %w", label, err)
	}
	s, err := key.SM2Signer(sm2ID)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer %q: %w", label, err)
	}
	cert, err := ReadCertificate(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer %q: certificate %w", label, err)
	}
	iss, err := NewIssuer(cert, hsmSM2{s})
	if err != nil {
		return nil, nil, err
	}
	return iss, s, nil
}

// ReadCertificate reads one PEM or DER certificate.
func ReadCertificate(path string) (*smx509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q, want CERTIFICATE", path, b.Type)
		}
		data = b.Bytes
	}
	c, err := smx509.ParseCertificate(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ID names the issuer in the store: the hex of its key identifier.
func (i *Issuer) ID() string { return i.id }

// ValidAt refuses signing at now if now is outside the issuer's validity:
// what it signed could not chain, and it is for an operator to roll the
// issuer over or correct the clock.
func (i *Issuer) ValidAt(now time.Time) error {
	switch {
	case now.After(i.Cert.NotAfter):
		return refusef(ErrIssuerNotValid, "the issuing CA %s expired %s and the clock reads %s: an operator must roll it over (or correct the clock)",
			i.ID(), i.Cert.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	case now.Before(i.Cert.NotBefore):
		return refusef(ErrIssuerNotValid, "the issuing CA %s is valid from %s and the clock reads %s: correct the clock",
			i.ID(), i.Cert.NotBefore.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}

// NewSerial draws a certificate serial (SPEC §5.3) from r: 16 random
// bytes with the top bit clear, so the INTEGER is positive and 16 octets,
// and the first byte not zero, so that every serial has 16 octets and
// serials sort by their leading bits, which pick their CRL shard
// (crl.Shard): more than 126 random bits.
func NewSerial(r io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("draw serial: %w", err)
		}
		b[0] &= 0x7f
		if b[0] != 0 {
			return new(big.Int).SetBytes(b), nil
		}
	}
}
