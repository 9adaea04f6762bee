package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
)

// Known answers. The SM3 vector is GB/T 32905 appendix A.1 ("abc"). The SM2
// vector was made by OpenSSL 3 (pkeyutl -rawin -digest sm3, default ID), an
// implementation independent of the one verifying it here.
var (
	katSM3In  = []byte("abc")
	katSM3Out = mustHex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")

	katSM2Msg = []byte("signerd power-on self-test")
	katSM2Pub = mustHex("046f69f248c35adbd9d82df1047e015edf805152d1d6b5f273bdf4a3a35c85c5" +
		"96cd521534bd70a91a50a8212c73ce92b8f44cb2861c46176390a67f4444984bf1")
	katSM2Sig = mustHex("3046022100e47c0031d21b6119f7ae27ded419b95e7983a8b328dad525639327078bd2e2dd" +
		"022100ce7f1ef9694cced058939622eedb0a77697d0eabb872f26c4fa680aaa2d8bc0f")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// SelfTest is the power-on self-test of SPEC §3.7: SM3 and SM2 known-answer
// tests in software, the token's RNG, and a sign + verify with each signer.
// Any failure means the daemon must not start.
func (m *Module) SelfTest(ctx context.Context, signers ...crypto.Signer) error {
	if err := softwareKAT(); err != nil {
		return fmt.Errorf("self-test: %w", err)
	}
	if err := rngSanity(m.Random()); err != nil {
		return fmt.Errorf("self-test: HSM RNG: %w", err)
	}
	msg := []byte("signerd self-test signature")
	for _, s := range signers {
		var err error
		switch s := s.(type) {
		case *SM2Signer:
			_, err = s.SignDigest(ctx, s.Digest(msg)) // verified inside
		case *ECDSASigner:
			d := sha256.Sum256(msg)
			_, err = s.SignContext(ctx, d[:], crypto.SHA256)
		default:
			err = fmt.Errorf("signer %T is not from the hsm package", s)
		}
		if err != nil {
			return fmt.Errorf("self-test: %w", err)
		}
	}
	return nil
}

func softwareKAT() error {
	if got := sm3.Sum(katSM3In); !bytes.Equal(got[:], katSM3Out) {
		return errors.New("SM3 known-answer test failed")
	}
	pub, err := sm2.NewPublicKey(katSM2Pub)
	if err != nil {
		return fmt.Errorf("SM2 known-answer key: %w", err)
	}
	if !sm2.VerifyASN1WithSM2(pub, nil, katSM2Msg, katSM2Sig) {
		return errors.New("SM2 known-answer test failed: good signature rejected")
	}
	bad := append([]byte(nil), katSM2Msg...)
	bad[0] ^= 1
	if sm2.VerifyASN1WithSM2(pub, nil, bad, katSM2Sig) {
		return errors.New("SM2 known-answer test failed: altered message accepted")
	}
	return nil
}

// rngSanity catches a stuck or absent generator: two draws must differ and
// neither may be constant.
func rngSanity(r io.Reader) error {
	a, b := make([]byte, 32), make([]byte, 32)
	if _, err := io.ReadFull(r, a); err != nil {
		return err
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if bytes.Equal(a, b) || bytes.Count(a, a[:1]) == len(a) || bytes.Count(b, b[:1]) == len(b) {
		return errors.New("C_GenerateRandom output is repeating or constant")
	}
	return nil
}
