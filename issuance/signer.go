package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	_ "crypto/sha256" // crypto.SHA256 and SHA384, the ECDSA digests
	_ "crypto/sha512"
	"fmt"
	"io"

	"github.com/emmansun/gmsm/sm2"

	"signerd/hsm"
)

// Signer is an issuing key: SM2 (signing e = SM3(Z‖TBS)) or, for the
// ceremonies' roots, ECDSA (signing the SHA-2 hash the curve calls for).
type Signer interface {
	crypto.Signer
	// Digest is what the key signs for msg.
	Digest(msg []byte) []byte
	// SignDigest returns a DER signature of digest. Issue verifies it, so
	// a signer need not.
	SignDigest(ctx context.Context, digest []byte) ([]byte, error)
}

// KeySigner is the Signer of a key in the HSM; sm2ID is the SM2 signer
// identity in Z (nil: hsm.DefaultSM2ID).
func KeySigner(k *hsm.Key, sm2ID []byte) (Signer, error) {
	switch k.Algorithm {
	case hsm.SM2:
		s, err := k.SM2Signer(sm2ID)
		if err != nil {
			return nil, err
		}
		return hsmSM2{s}, nil
	case hsm.ECDSAP256, hsm.ECDSAP384:
		s, err := k.ECDSASigner()
		if err != nil {
			return nil, err
		}
		return ecdsaSigner{s, ecdsaHash(k.Public.Curve)}, nil
	}
	return nil, fmt.Errorf("key %q: no signer for %v", k.Label, k.Algorithm)
}

// hsmSM2 leaves the verification of the HSM's signature to Issue, which
// makes it over the bytes issued: one SM2 verification per signature.
type hsmSM2 struct{ *hsm.SM2Signer }

func (s hsmSM2) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	return s.SM2Signer.SignDigestUnverified(ctx, e)
}

// ecdsaSigner is an ECDSA key, in the HSM or (a throwaway) in software.
type ecdsaSigner struct {
	signer crypto.Signer
	hash   crypto.Hash
}

func (s ecdsaSigner) Public() crypto.PublicKey { return s.signer.Public() }

func (s ecdsaSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.signer.Sign(r, digest, opts)
}

func (s ecdsaSigner) Digest(msg []byte) []byte {
	h := s.hash.New()
	h.Write(msg)
	return h.Sum(nil)
}

func (s ecdsaSigner) SignDigest(ctx context.Context, digest []byte) ([]byte, error) {
	if c, ok := s.signer.(interface {
		SignContext(context.Context, []byte, crypto.SignerOpts) ([]byte, error)
	}); ok {
		return c.SignContext(ctx, digest, s.hash)
	}
	return s.signer.Sign(rand.Reader, digest, s.hash)
}

// ecdsaHash is the hash Go's x509 pairs with the curve, which is the
// signature algorithm the encoder writes into the TBS.
func ecdsaHash(c elliptic.Curve) crypto.Hash {
	if c.Params().BitSize > 256 {
		return crypto.SHA384
	}
	return crypto.SHA256
}

// softSM2 is a software SM2 key with the default signer identity.
type softSM2 struct{ *sm2.PrivateKey }

func (s softSM2) Digest(msg []byte) []byte {
	e, err := sm2.CalculateSM2Hash(&s.PublicKey, msg, nil)
	if err != nil {
		panic(fmt.Sprintf("SM2 digest of a valid key: %v", err)) // only for a key not on the curve
	}
	return e
}

func (s softSM2) SignDigest(_ context.Context, e []byte) ([]byte, error) {
	return sm2.SignASN1(rand.Reader, s.PrivateKey, e, nil)
}

// Throwaway is a software key of alg's kind. Prepare lints what such a key
// signed; the ceremonies' dry runs use one in place of a key they do not
// generate. Nothing it signs may leave the process.
func Throwaway(alg hsm.Algorithm) (Signer, error) {
	switch alg {
	case hsm.SM2:
		k, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return softSM2{k}, nil
	case hsm.ECDSAP256, hsm.ECDSAP384:
		curve := elliptic.P256()
		if alg == hsm.ECDSAP384 {
			curve = elliptic.P384()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return nil, err
		}
		return ecdsaSigner{k, ecdsaHash(curve)}, nil
	}
	return nil, fmt.Errorf("no throwaway key for %v", alg)
}

// algorithmOf names the kind of key pub is.
func algorithmOf(pub crypto.PublicKey) (hsm.Algorithm, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	switch {
	case !ok:
		return 0, fmt.Errorf("%T key; CA keys are SM2 or ECDSA", pub)
	case sm2.IsSM2PublicKey(k):
		return hsm.SM2, nil
	case k.Curve == elliptic.P256():
		return hsm.ECDSAP256, nil
	case k.Curve == elliptic.P384():
		return hsm.ECDSAP384, nil
	}
	return 0, fmt.Errorf("ECDSA key on %s; CA keys are SM2, P-256 or P-384", k.Curve.Params().Name)
}

// verify checks sig is pub's signature of digest.
func verify(pub crypto.PublicKey, digest, sig []byte) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	if sm2.IsSM2PublicKey(k) {
		return sm2.VerifyASN1(k, digest, sig)
	}
	return ecdsa.VerifyASN1(k, digest, sig)
}
