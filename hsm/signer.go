package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// DefaultSM2ID is the signer identity of GM/T 0009 used in Z when a CA has
// not configured another.
var DefaultSM2ID = []byte("1234567812345678")

// SM2Signer signs with an SM2 key in the token. It computes
// Z = SM3(ENTL‖ID‖a‖b‖xG‖yG‖xA‖yA) once, e = SM3(Z‖M) per message, has the
// module sign e, and returns DER SEQUENCE{r, s} after verifying it.
type SM2Signer struct {
	key *Key
	z   []byte
}

// SM2Signer returns a signer for k with the signer identity id (nil means
// DefaultSM2ID).
func (k *Key) SM2Signer(id []byte) (*SM2Signer, error) {
	if k.Algorithm != SM2 {
		return nil, fmt.Errorf("key %q is %v, not sm2", k.Label, k.Algorithm)
	}
	if len(id) == 0 {
		id = DefaultSM2ID
	}
	z, err := sm2.CalculateZA(k.Public, id)
	if err != nil {
		return nil, fmt.Errorf("key %q: compute Z: %w", k.Label, err)
	}
	return &SM2Signer{key: k, z: z}, nil
}

// Public is the key's *ecdsa.PublicKey on the SM2 curve.
func (s *SM2Signer) Public() crypto.PublicKey { return s.key.Public }

// Usable checks the key without signing (Key.Usable).
func (s *SM2Signer) Usable(ctx context.Context) error { return s.key.Usable(ctx) }

// Digest returns e = SM3(Z‖msg), the value the module signs.
func (s *SM2Signer) Digest(msg []byte) []byte {
	h := sm3.New()
	h.Write(s.z)
	h.Write(msg)
	return h.Sum(nil)
}

// Sign follows gmsm's contract for SM2 private keys: with an
// *sm2.SM2SignerOption (as smx509 passes) data is the whole message and Z
// uses this signer's identity; with a zero hash (as pkcs7's digest paths
// pass) data is e itself. Any other hash is refused: SM2 signs SM3 only.
func (s *SM2Signer) Sign(_ io.Reader, data []byte, opts crypto.SignerOpts) ([]byte, error) {
	if _, ok := opts.(*sm2.SM2SignerOption); ok {
		return s.SignDigest(context.Background(), s.Digest(data))
	}
	if opts != nil && opts.HashFunc() != 0 {
		return nil, fmt.Errorf("SM2 sign: hash %v is not SM3 over Z; pass sm2.DefaultSM2SignerOpts", opts.HashFunc())
	}
	return s.SignDigest(context.Background(), data)
}

// SignMessage signs the whole message (crypto.MessageSigner).
func (s *SM2Signer) SignMessage(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	return s.SignDigest(context.Background(), s.Digest(msg))
}

// SignDigest has the module sign e and returns the verified DER signature.
func (s *SM2Signer) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	der, err := s.SignDigestUnverified(ctx, e)
	if err != nil {
		return nil, err
	}
	if !sm2.VerifyASN1(s.key.Public, e, der) {
		return nil, fmt.Errorf("SM2 sign with %q: %w", s.key.Label, ErrBadSignature)
	}
	return der, nil
}

// SignDigestUnverified has the module sign e and returns its signature as
// DER without verifying it. It is for a caller that verifies every
// signature itself over the bytes it publishes (package issuance does),
// so that no signature costs two verifications; anyone else uses
// SignDigest.
func (s *SM2Signer) SignDigestUnverified(ctx context.Context, e []byte) ([]byte, error) {
	if len(e) != sm3.Size {
		return nil, fmt.Errorf("SM2 sign with %q: e is %d bytes, want %d", s.key.Label, len(e), sm3.Size)
	}
	prof := s.key.m.sm2
	out, err := s.key.sign(ctx, prof.SignE, e)
	if err != nil {
		return nil, err
	}
	if prof.Format == DER {
		return out, nil
	}
	der, err := rawToDER(out, 32)
	if err != nil {
		return nil, fmt.Errorf("SM2 sign with %q: %w", s.key.Label, err)
	}
	return der, nil
}

// ECDSASigner signs digests with an ECDSA key in the token (CKM_ECDSA).
type ECDSASigner struct {
	key *Key
}

// ECDSASigner returns a signer for an ECDSA key.
func (k *Key) ECDSASigner() (*ECDSASigner, error) {
	if k.Algorithm != ECDSAP256 && k.Algorithm != ECDSAP384 {
		return nil, fmt.Errorf("key %q is %v, not ECDSA", k.Label, k.Algorithm)
	}
	return &ECDSASigner{key: k}, nil
}

// Public is the key's *ecdsa.PublicKey.
func (s *ECDSASigner) Public() crypto.PublicKey { return s.key.Public }

// Sign signs digest (crypto.Signer) and returns the verified DER signature.
func (s *ECDSASigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context for waiting on a session.
func (s *ECDSASigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 && len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("ECDSA sign with %q: digest is %d bytes, %v wants %d",
			s.key.Label, len(digest), opts.HashFunc(), opts.HashFunc().Size())
	}
	raw, err := s.key.sign(ctx, pkcs11.CKM_ECDSA, digest)
	if err != nil {
		return nil, err
	}
	der, err := rawToDER(raw, (s.key.Public.Curve.Params().BitSize+7)/8)
	if err != nil {
		return nil, fmt.Errorf("ECDSA sign with %q: %w", s.key.Label, err)
	}
	if !ecdsa.VerifyASN1(s.key.Public, digest, der) {
		return nil, fmt.Errorf("ECDSA sign with %q: %w", s.key.Label, ErrBadSignature)
	}
	return der, nil
}

// sign runs C_SignInit + C_Sign on a session of its own.
func (k *Key) sign(ctx context.Context, mech uint, data []byte) ([]byte, error) {
	var sig []byte
	err := k.m.do(ctx, func(s *session) error {
		h, err := k.privateHandle(s)
		if err != nil {
			return err
		}
		p11 := k.m.lib.ctx
		if err := p11.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, h); err != nil {
			return fmt.Errorf("C_SignInit: %w", err)
		}
		sig, err = p11.Sign(s.h, data)
		if err != nil {
			return fmt.Errorf("C_Sign: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sign with %q: %w", k.Label, err)
	}
	return sig, nil
}

// rawToDER turns r‖s (size bytes each) into DER SEQUENCE{r, s}.
func rawToDER(raw []byte, size int) ([]byte, error) {
	if len(raw) != 2*size {
		return nil, fmt.Errorf("module returned %d signature bytes, want r‖s of %d", len(raw), 2*size)
	}
	r := new(big.Int).SetBytes(raw[:size])
	s := new(big.Int).SetBytes(raw[size:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, errors.New("module returned a signature with r or s zero")
	}
	// cryptobyte writes the DER encoding/asn1 did, without its reflection
	// (as much CPU as the rest of the signature's handling in signerd).
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}
