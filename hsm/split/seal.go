package split

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/emmansun/gmsm/sm4"
	"golang.org/x/crypto/scrypt"
)

// A custodian may protect a share with a passphrase of their own, so a
// share file found on its own is useless. The share data is sealed with
// SM4-GCM under a key scrypt derives from the passphrase; the share's
// identity (purpose, set, index) is bound in as associated data.

const (
	sealName       = "scrypt-sm4-gcm"
	scryptN        = 1 << 15
	minPassphrase  = 8
	saltSize       = 16
	sealedOverhead = 16
)

// ErrPassphrase: the passphrase does not open the share (or it was altered).
var ErrPassphrase = errors.New("wrong passphrase, or the share was altered")

// Seal protects s's data with passphrase.
func (s *Share) Seal(passphrase []byte) error {
	if s.Sealed() {
		return errors.New("share is already sealed")
	}
	if len(passphrase) < minPassphrase {
		return fmt.Errorf("passphrase is %d characters; at least %d are required", len(passphrase), minPassphrase)
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	aead, err := s.aead(passphrase, salt)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	sealed := aead.Seal(nil, nonce, s.Data, s.boundData())
	clear(s.Data)
	s.Data = append(append(salt, nonce...), sealed...)
	s.Protection = sealName
	return nil
}

// Sealed reports whether the share needs its custodian's passphrase.
func (s *Share) Sealed() bool { return s.Protection != "" }

// Open undoes Seal.
func (s *Share) Open(passphrase []byte) error {
	if s.Protection != sealName {
		return fmt.Errorf("share protection %q is not supported", s.Protection)
	}
	if len(s.Data) < saltSize+12+sealedOverhead {
		return errors.New("sealed share is too short")
	}
	salt := s.Data[:saltSize]
	aead, err := s.aead(passphrase, salt)
	if err != nil {
		return err
	}
	nonce := s.Data[saltSize : saltSize+aead.NonceSize()]
	plain, err := aead.Open(nil, nonce, s.Data[saltSize+aead.NonceSize():], s.boundData())
	if err != nil {
		return fmt.Errorf("share %d (%s): %w", s.Index, s.Custodian, ErrPassphrase)
	}
	s.Data, s.Protection = plain, ""
	return nil
}

func (s *Share) aead(passphrase, salt []byte) (cipher.AEAD, error) {
	key, err := scrypt.Key(passphrase, salt, scryptN, 8, 1, 16)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := sm4.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *Share) boundData() []byte {
	return fmt.Appendf(nil, "%s\x00%x\x00%d\x00%d\x00%d", s.Purpose, s.Set, s.Index, s.Total, s.Threshold)
}
