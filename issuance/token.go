package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/hsm"
	"signerd/lint"
)

// kind is what a token will become once signed; each kind has its parser
// (an OCSP response would be a third).
type kind int

const (
	kindCertificate kind = iota
	kindCRL
)

// Token is what Prepare built and linted, waiting for the HSM: the TBS to
// record before signing and the digest to sign. It is good for one Issue.
type Token struct {
	issuer *Issuer
	kind   kind
	tbs    []byte
	digest []byte
	alg    []byte // the outer signatureAlgorithm, as the draft carries it
	draft  []byte
	lint   func(der []byte) error
	used   atomic.Bool
}

// TBS is the exact to-be-signed bytes, for the caller to record before the
// HSM signs. The caller must not change them: Issue would refuse the token.
func (t *Token) TBS() []byte { return t.tbs }

// Digest is what the issuer's key signs for the TBS.
func (t *Token) Digest() []byte { return t.digest }

// Draft is the object Prepare linted, signed by a throwaway key: a dry run
// shows it; it is never to be published.
func (t *Token) Draft() []byte { return t.draft }

// Issued is a signed, checked object: DER, and the parse of it.
type Issued struct {
	DER         []byte
	Certificate *smx509.Certificate    // for a certificate
	CRL         *smx509.RevocationList // for a CRL
}

// PrepareCertificate builds the end-entity certificate tmpl for pub, which
// lint.Certificate with usage must pass.
func (i *Issuer) PrepareCertificate(tmpl *smx509.Certificate, pub crypto.PublicKey, usage lint.Usage) (*Token, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs only its own CA certificate")
	}
	return i.prepareCertificate(tmpl, i.Cert, pub, func(der []byte) error { return lint.Certificate(der, i.Cert, usage) })
}

// PrepareCA builds the CA certificate tmpl for pub, which lint.CA must
// pass. A self-issuer's is its own root certificate. tmpl's SKI defaults
// to pub's key identifier; its AKI is the issuer's SKI.
func (i *Issuer) PrepareCA(tmpl *smx509.Certificate, pub crypto.PublicKey) (*Token, error) {
	t := *tmpl
	if len(t.SubjectKeyId) == 0 {
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%T key; CA keys are SM2 or ECDSA", pub)
		}
		t.SubjectKeyId = hsm.KeyID(k)
	}
	parent := i.Cert
	if parent == nil {
		parent = &t
	} else {
		// Set here, not left to the encoder, which omits it when issuer
		// and subject names are equal, as in a rollover's link
		// certificates.
		t.AuthorityKeyId = parent.SubjectKeyId
	}
	return i.prepareCertificate(&t, parent, pub, func(der []byte) error { return lint.CA(der, i.Cert) })
}

func (i *Issuer) prepareCertificate(tmpl, parent *smx509.Certificate, pub crypto.PublicKey, check func([]byte) error) (*Token, error) {
	// The throwaway key signs in the issuer's place, so the parent must
	// carry its public key; name and SKI (for the AKI) stay the issuer's.
	p := *parent
	p.PublicKey = i.lintKey.Public()
	draft, err := smx509.CreateCertificate(rand.Reader, tmpl, &p, pub, i.lintKey)
	if err != nil {
		// The same input fails the same way again: a lint failure, which
		// the caller's own checks were meant to catch first.
		return nil, refusef(ErrLint, "certificate cannot be built: %v", err)
	}
	return i.prepare(kindCertificate, draft, check)
}

// PrepareCRL builds the CRL tmpl, which lint.CRL must pass.
func (i *Issuer) PrepareCRL(tmpl *smx509.RevocationList) (*Token, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs no CRL")
	}
	draft, err := smx509.CreateRevocationList(rand.Reader, tmpl, i.Cert, i.lintKey)
	if err != nil {
		return nil, fmt.Errorf("cannot be built: %w", err)
	}
	return i.prepare(kindCRL, draft, func(der []byte) error { return lint.CRL(der, i.Cert) })
}

// prepare lints the throwaway-signed draft and keeps its TBS.
func (i *Issuer) prepare(k kind, draft []byte, check func([]byte) error) (*Token, error) {
	if err := check(draft); err != nil {
		return nil, refusef(ErrLint, "fails lint: %v", err)
	}
	tbs, alg, err := split(draft)
	if err != nil {
		return nil, err
	}
	return &Token{issuer: i, kind: k, tbs: tbs, digest: i.Signer.Digest(tbs), alg: alg, draft: draft, lint: check}, nil
}

// Issue makes the signed object of tok and sig, the issuer's signature
// of tok.Digest(). It refuses a token used before or prepared by another
// issuer, a TBS changed since Prepare, and a signature that does not
// verify (hsm.ErrBadSignature: the HSM's fault); then the object must
// parse with the linted TBS byte for byte and pass the lints again.
func (i *Issuer) Issue(tok *Token, sig []byte) (*Issued, error) {
	if tok.issuer != i {
		return nil, errors.New("the token was prepared by another issuer")
	}
	if !tok.used.CompareAndSwap(false, true) {
		return nil, ErrTokenUsed
	}
	if !bytes.Equal(i.Signer.Digest(tok.tbs), tok.digest) {
		return nil, errors.New("the TBS is not the one prepared and linted")
	}
	if !verify(i.Signer.Public(), tok.digest, sig) {
		return nil, fmt.Errorf("the signature does not verify over the TBS under the issuer's key: %w", hsm.ErrBadSignature)
	}
	der, err := assemble(tok.tbs, tok.alg, sig)
	if err != nil {
		return nil, err
	}
	out := &Issued{DER: der}
	var tbs []byte
	switch tok.kind {
	case kindCertificate:
		if out.Certificate, err = smx509.ParseCertificate(der); err == nil {
			tbs = out.Certificate.RawTBSCertificate
		}
	case kindCRL:
		if out.CRL, err = smx509.ParseRevocationList(der); err == nil {
			tbs = out.CRL.RawTBSRevocationList
		}
	}
	if err != nil {
		return nil, fmt.Errorf("parse the signed object: %w", err)
	}
	if !bytes.Equal(tbs, tok.tbs) {
		return nil, errors.New("the signed object's TBS differs from the linted one")
	}
	if err := tok.lint(der); err != nil {
		return nil, refusef(ErrLint, "as signed, fails lint: %v", err)
	}
	return out, nil
}

// SignAndIssue has the issuer's key sign tok, then issues it: for a
// caller with nothing to do between the two.
func (i *Issuer) SignAndIssue(ctx context.Context, tok *Token) (*Issued, error) {
	sig, err := i.Signer.SignDigest(ctx, tok.Digest())
	if err != nil {
		return nil, fmt.Errorf("sign in the HSM: %w", err)
	}
	return i.Issue(tok, sig)
}

// split returns the TBS and the outer signatureAlgorithm of a signed
// object: SEQUENCE { tbs, signatureAlgorithm, signatureValue }, as
// certificates, CRLs and OCSP responses' basic responses all are.
func split(der []byte) (tbs, alg []byte, err error) {
	in := cryptobyte.String(der)
	var outer, t, a cryptobyte.String
	if !in.ReadASN1(&outer, casn1.SEQUENCE) || !in.Empty() ||
		!outer.ReadASN1Element(&t, casn1.SEQUENCE) || !outer.ReadASN1Element(&a, casn1.SEQUENCE) {
		return nil, nil, errors.New("draft is not SEQUENCE { tbs, signatureAlgorithm, signature }")
	}
	return t, a, nil
}

// assemble wraps a TBS, its signature algorithm and the signature into the
// signed object.
func assemble(tbs, alg, sig []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(alg)
		b.AddASN1BitString(sig)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("assemble the signed object: %w", err)
	}
	return der, nil
}

// ParseTBSCertificate parses a TBSCertificate, such as a recorded Token's
// TBS, by wrapping it as a certificate with an empty signature under the
// algorithm the TBS names (the parser wants inner and outer to agree).
func ParseTBSCertificate(tbs []byte) (*smx509.Certificate, error) {
	s := cryptobyte.String(tbs)
	var body cryptobyte.String
	var alg []byte
	if !s.ReadASN1(&body, casn1.SEQUENCE) || !s.Empty() ||
		!body.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.SkipASN1(casn1.INTEGER) ||
		!body.ReadASN1Element((*cryptobyte.String)(&alg), casn1.SEQUENCE) {
		return nil, errors.New("TBS certificate does not parse")
	}
	der, err := assemble(tbs, alg, nil)
	if err != nil {
		return nil, err
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("TBS certificate: %w", err)
	}
	return c, nil
}
