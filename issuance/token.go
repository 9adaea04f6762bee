package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	encasn1 "encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/crl"
	"signerd/hsm"
	"signerd/lint"
	"signerd/ocsp"
)

// kind is what a token will become once signed; each kind has its parser.
type kind int

const (
	kindCertificate kind = iota
	kindCRL
	kindOCSP
)

// Token is what Prepare built and linted, waiting for the HSM: the TBS to
// record before signing and the digest to sign. It is good for one Issue.
type Token struct {
	issuer *Issuer
	kind   kind
	tbs    []byte
	linted []byte // tbs as Prepare linted it, which the caller cannot change
	digest []byte
	alg    []byte   // the outer signatureAlgorithm: the one the TBS names (an OCSP response's names none)
	certs  [][]byte // an OCSP response's certs: the delegated responder's certificate
	// lint lints the signed object: a nil Issued if it does not parse
	// (a certificate), else the object with what the lints found.
	lint func(der []byte) (*Issued, error)
	used atomic.Bool
}

// TBS is the exact to-be-signed bytes, for the caller to record before the
// HSM signs. The caller must not change them: Issue would refuse the token.
func (t *Token) TBS() []byte { return t.tbs }

// Digest is what the issuer's key signs for the TBS: a copy, so that what
// Issue verifies against stays the digest of the linted TBS.
func (t *Token) Digest() []byte { return bytes.Clone(t.digest) }

// Draft is the object Prepare linted, with an empty signature: what a dry
// run shows; it parses, and verifies under no key.
func (t *Token) Draft() []byte {
	if t.kind == kindOCSP {
		der, _ := ocsp.Assemble(t.linted, t.alg, nil, t.certs)
		return der
	}
	der, _ := lint.Unsigned(t.linted) // it linted, so it wraps
	return der
}

// Issued is a signed, checked object: DER, and for a certificate the
// parse of it. A CRL is not parsed: its entries are many, and the lints
// walk its DER instead. An OCSP response's DER is the whole OCSPResponse,
// as a responder serves it.
type Issued struct {
	DER         []byte
	Certificate *smx509.Certificate // for a certificate
}

// PrepareCertificate builds the end-entity certificate tmpl for pub, which
// the lints of usage must pass.
func (i *Issuer) PrepareCertificate(tmpl *smx509.Certificate, pub crypto.PublicKey, usage lint.Usage) (*Token, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs only its own CA certificate")
	}
	if err := i.notResponder(); err != nil {
		return nil, err
	}
	tbs, err := i.certificateTBS(tmpl, i.Cert, pub)
	if err != nil {
		return nil, err
	}
	// The signed certificate is linted on the parse of its TBS made here:
	// Issue has it carry this TBS byte for byte.
	draft, lintErr := lint.CertificateDraft(tbs, i.Cert, usage)
	return i.prepare(kindCertificate, tbs, lintErr, func(der []byte) (*Issued, error) {
		c, err := lint.SignedCertificate(der, draft, i.Cert, usage)
		return &Issued{DER: der, Certificate: c}, err
	})
}

// PrepareCA builds the CA certificate tmpl for pub, which the CA lints must
// pass. A self-issuer's is its own root certificate. tmpl's SKI defaults
// to pub's key identifier; its AKI is the issuer's SKI.
func (i *Issuer) PrepareCA(tmpl *smx509.Certificate, pub crypto.PublicKey) (*Token, error) {
	if err := i.notResponder(); err != nil {
		return nil, err
	}
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
	tbs, err := i.certificateTBS(&t, parent, pub)
	if err != nil {
		return nil, err
	}
	return i.prepare(kindCertificate, tbs, lint.CATBS(tbs, i.Cert), func(der []byte) (*Issued, error) {
		c, err := smx509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return &Issued{DER: der, Certificate: c}, lint.CA(der, i.Cert)
	})
}

// certificateTBS has the encoder build tmpl's TBSCertificate, signed by
// nobody: the key it is given keeps the TBS it is asked to sign and fails
// (see tbsKeeper).
func (i *Issuer) certificateTBS(tmpl, parent *smx509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	t := *tmpl
	var err error
	if t.SignatureAlgorithm, err = i.signatureAlgorithm(tmpl.SignatureAlgorithm); err != nil {
		return nil, err
	}
	k := &tbsKeeper{pub: i.Signer.Public()}
	_, err = smx509.CreateCertificate(rand.Reader, &t, parent, pub, k)
	if !errors.Is(err, errTBSKept) {
		// The same input fails the same way again: a lint failure, which
		// the caller's own checks were meant to catch first.
		return nil, refusef(ErrLint, "certificate cannot be built: %v", err)
	}
	return k.tbs, nil
}

// NewCRL starts the CRL of scope s: the issuer's certificate names it,
// the algorithm the issuer's key signs with signs it. Its entries are
// added as the caller scans them; PrepareCRL finishes it.
func (i *Issuer) NewCRL(s crl.Scope) (*crl.TBS, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs no CRL")
	}
	if err := i.notResponder(); err != nil {
		return nil, err
	}
	alg, err := i.signatureAlgorithm(smx509.UnknownSignatureAlgorithm)
	if err != nil {
		return nil, err
	}
	b, err := crl.NewTBS(i.Cert, alg, s)
	if err != nil {
		return nil, refusef(ErrLint, "%v", err)
	}
	return b, nil
}

// PrepareCRL finishes b, begun by NewCRL, which the CRL lints must pass.
// Neither here nor in Issue is the CRL parsed into entries: the lints
// walk its DER, so a CRL of many entries costs its bytes and no more.
func (i *Issuer) PrepareCRL(b *crl.TBS) (*Token, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs no CRL")
	}
	if err := i.notResponder(); err != nil {
		return nil, err
	}
	tbs, err := b.Finish()
	if err != nil {
		return nil, refusef(ErrLint, "CRL cannot be built: %v", err)
	}
	return i.prepare(kindCRL, tbs, lint.CRLTBS(tbs, i.Cert), func(der []byte) (*Issued, error) {
		return &Issued{DER: der}, lint.CRL(der, i.Cert)
	})
}

// PrepareOCSP builds the OCSP response s of a certificate of the issuing
// CA, produced at producedAt, naming the certificate by a CertID hashed
// with each of hashes (ocsp.ResponseTBS), which the OCSP lints must pass.
// The issuer signs it as the issuing CA itself, or, if it is a delegated
// responder (NewOCSPResponder), as that responder, whose certificate the
// response then carries.
func (i *Issuer) PrepareOCSP(s ocsp.Single, producedAt time.Time, hashes ...ocsp.HashAlg) (*Token, error) {
	if i.Cert == nil {
		return nil, errors.New("a self-issuer signs no OCSP response")
	}
	ca, responder := i.Cert, (*smx509.Certificate)(nil)
	var certs [][]byte
	if i.ocspFor != nil {
		ca, responder, certs = i.ocspFor, i.Cert, [][]byte{i.Cert.Raw}
	}
	sigAlg, err := i.signatureAlgorithm(smx509.UnknownSignatureAlgorithm)
	if err != nil {
		return nil, err
	}
	alg, err := ocsp.AlgorithmIdentifier(sigAlg)
	if err != nil {
		return nil, err
	}
	rb, err := i.responseBuilder(ca, hashes)
	if err != nil {
		return nil, refusef(ErrLint, "OCSP response cannot be built: %v", err)
	}
	tbs, err := rb.TBS(s, producedAt)
	if err != nil {
		return nil, refusef(ErrLint, "OCSP response cannot be built: %v", err)
	}
	if err := lint.OCSPResponseTBS(tbs, responder, ca); err != nil {
		return nil, refusef(ErrLint, "fails lint: %v", err)
	}
	return &Token{issuer: i, kind: kindOCSP, tbs: tbs, linted: bytes.Clone(tbs), digest: i.Signer.Digest(tbs), alg: alg, certs: certs,
		lint: func(der []byte) (*Issued, error) { return &Issued{DER: der}, lint.OCSPResponse(der, responder, ca) }}, nil
}

// responseBuilder is the builder of i's OCSP responses for certificates
// of ca with CertIDs hashed with hashes: the last one made, if for the
// same hashes (a signer asks with the same every time), else a new one.
func (i *Issuer) responseBuilder(ca *smx509.Certificate, hashes []ocsp.HashAlg) (*ocsp.ResponseBuilder, error) {
	if last := i.ocspBuilder.Load(); last != nil && slices.Equal(last.hashes, hashes) {
		return last.builder, nil
	}
	rb, err := ocsp.NewResponseBuilder(i.Signer.Public(), ca, hashes...)
	if err != nil {
		return nil, err
	}
	i.ocspBuilder.Store(&responseBuilder{hashes: slices.Clone(hashes), builder: rb})
	return rb, nil
}

// responseBuilder is an OCSP response builder with the hashes it names.
type responseBuilder struct {
	hashes  []ocsp.HashAlg
	builder *ocsp.ResponseBuilder
}

// notResponder refuses, for a delegated OCSP responder, what only a CA
// signs: its certificate is no CA's, and what it signed would not chain.
func (i *Issuer) notResponder() error {
	if i.ocspFor != nil {
		return fmt.Errorf("OCSP responder %s signs OCSP responses only", i.ID())
	}
	return nil
}

// prepare makes the token of a TBS whose lints gave linted.
func (i *Issuer) prepare(k kind, tbs []byte, linted error, check func([]byte) (*Issued, error)) (*Token, error) {
	if linted != nil {
		return nil, refusef(ErrLint, "fails lint: %v", linted)
	}
	// The signed object repeats outside the TBS the algorithm inside it.
	alg, err := lint.SignatureAlgorithm(tbs)
	if err != nil {
		return nil, err
	}
	return &Token{issuer: i, kind: k, tbs: tbs, linted: bytes.Clone(tbs), digest: i.Signer.Digest(tbs), alg: alg, lint: check}, nil
}

// signatureAlgorithm is the algorithm the issuer's Digest is for, which
// the TBS must name: a template asking for another (an ECDSA key with
// another hash) would have the HSM sign a digest of one algorithm under
// the name of another, a signature no relying party could verify.
func (i *Issuer) signatureAlgorithm(asked smx509.SignatureAlgorithm) (smx509.SignatureAlgorithm, error) {
	alg, err := algorithmOf(i.Signer.Public())
	if err != nil {
		return 0, err
	}
	want := map[hsm.Algorithm]smx509.SignatureAlgorithm{
		hsm.SM2: smx509.SM2WithSM3, hsm.ECDSAP256: smx509.ECDSAWithSHA256, hsm.ECDSAP384: smx509.ECDSAWithSHA384,
	}[alg]
	if asked != smx509.UnknownSignatureAlgorithm && asked != want {
		return 0, refusef(ErrLint, "signature algorithm %v asked for; the issuer's %v key signs %v", asked, alg, want)
	}
	return want, nil
}

// errTBSKept ends the encoder's run once it has built the TBS.
var errTBSKept = errors.New("TBS kept, not signed")

// tbsKeeper stands in for the issuer's key when a certificate or CRL is
// built: the encoder passes it the whole TBS (crypto.SignMessage, which it
// uses for every algorithm), and it keeps the bytes and fails, so that
// nothing is signed by any key before the TBS is linted and recorded.
// That is SPEC §5.4's lint of the TBS itself, instead of a certificate
// signed by a throwaway key: the same checks, less work.
type tbsKeeper struct {
	pub crypto.PublicKey
	tbs []byte
}

func (k *tbsKeeper) Public() crypto.PublicKey { return k.pub }

// Sign would be handed a digest, not the TBS: never used by the encoder
// for a key that signs messages.
func (k *tbsKeeper) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("tbsKeeper signs nothing")
}

func (k *tbsKeeper) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	k.tbs = bytes.Clone(msg)
	return nil, errTBSKept
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
	// Compared with the private copy rather than hashed again: the digest
	// is the copy's, made at Prepare.
	if !bytes.Equal(tok.tbs, tok.linted) {
		return nil, errors.New("the TBS is not the one prepared and linted")
	}
	if !verify(i.Signer.Public(), tok.digest, sig) {
		return nil, fmt.Errorf("the signature does not verify over the TBS under the issuer's key: %w", hsm.ErrBadSignature)
	}
	var der []byte
	var err error
	if tok.kind == kindOCSP {
		der, err = ocsp.Assemble(tok.linted, tok.alg, sig, tok.certs)
	} else {
		der, err = lint.Assemble(tok.linted, tok.alg, sig)
	}
	if err != nil {
		return nil, err
	}
	out, err := tok.lint(der)
	var tbs []byte
	switch {
	case out == nil || tok.kind == kindCertificate && out.Certificate == nil:
		return nil, fmt.Errorf("parse the signed object: %w", err)
	case tok.kind == kindCertificate:
		tbs = out.Certificate.RawTBSCertificate
	case tok.kind == kindOCSP:
		var splitErr error
		if tbs, splitErr = lint.OCSPResponseData(out.DER); splitErr != nil {
			return nil, fmt.Errorf("split the signed OCSP response: %w", splitErr)
		}
	default:
		var splitErr error
		if tbs, splitErr = lint.SignedTBS(out.DER); splitErr != nil {
			return nil, fmt.Errorf("split the signed CRL: %w", splitErr)
		}
	}
	if !bytes.Equal(tbs, tok.linted) {
		return nil, errors.New("the signed object's TBS differs from the linted one")
	}
	if err != nil {
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

// ParseTBSKey returns the public key a TBSCertificate certifies and its
// keyUsage (0 without the extension), reading no more of it than that:
// its subjectPublicKeyInfo, parsed as smx509 parses it, and its keyUsage
// extension's bits as smx509 reads them. The other fields are skipped, not
// checked; ParseTBSCertificate parses the whole.
func ParseTBSKey(tbs []byte) (crypto.PublicKey, smx509.KeyUsage, error) {
	in := cryptobyte.String(tbs)
	var body, spki cryptobyte.String
	if !in.ReadASN1(&body, casn1.SEQUENCE) || !in.Empty() ||
		!body.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // version
		!body.SkipASN1(casn1.INTEGER) || // serialNumber
		!body.SkipASN1(casn1.SEQUENCE) || // signature
		!body.SkipASN1(casn1.SEQUENCE) || // issuer
		!body.SkipASN1(casn1.SEQUENCE) || // validity
		!body.SkipASN1(casn1.SEQUENCE) || // subject
		!body.ReadASN1Element(&spki, casn1.SEQUENCE) ||
		!body.SkipOptionalASN1(casn1.Tag(1).ContextSpecific()) || // issuerUniqueID
		!body.SkipOptionalASN1(casn1.Tag(2).ContextSpecific()) { // subjectUniqueID
		return nil, 0, errors.New("TBS certificate: malformed")
	}
	pub, err := smx509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, 0, fmt.Errorf("TBS certificate: %w", err)
	}
	var exts cryptobyte.String
	var present bool
	if !body.ReadOptionalASN1(&exts, &present, casn1.Tag(3).Constructed().ContextSpecific()) || !body.Empty() ||
		present && !exts.ReadASN1(&exts, casn1.SEQUENCE) {
		return nil, 0, errors.New("TBS certificate: malformed extensions")
	}
	for !exts.Empty() {
		var ext, value cryptobyte.String
		var id encasn1.ObjectIdentifier
		if !exts.ReadASN1(&ext, casn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&id) ||
			!ext.SkipOptionalASN1(casn1.BOOLEAN) || !ext.ReadASN1(&value, casn1.OCTET_STRING) {
			return nil, 0, errors.New("TBS certificate: malformed extension")
		}
		if !id.Equal(oidKeyUsage) {
			continue
		}
		var bits encasn1.BitString
		if !value.ReadASN1BitString(&bits) || !value.Empty() {
			return nil, 0, errors.New("TBS certificate: malformed keyUsage")
		}
		var usage smx509.KeyUsage
		for i := range 9 { // the bits RFC 5280 names, as smx509 reads them
			if bits.At(i) != 0 {
				usage |= 1 << i
			}
		}
		return pub, usage, nil
	}
	return pub, 0, nil
}

var oidKeyUsage = encasn1.ObjectIdentifier{2, 5, 29, 15}

// ParseTBSCertificate parses a TBSCertificate, such as a recorded Token's
// TBS, as the certificate it would be with an empty signature.
func ParseTBSCertificate(tbs []byte) (*smx509.Certificate, error) {
	der, err := lint.Unsigned(tbs)
	if err != nil {
		return nil, err
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("TBS certificate: %w", err)
	}
	return c, nil
}
