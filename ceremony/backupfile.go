package ceremony

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
)

// A backup file is one PEM block holding the wrapped key, with headers
// saying what it is and an HMAC-SM3 under a key derived from the KEK over
// all of it. Only the custodians' shares can check it, and only a check
// that passes lets a restore begin: a flipped byte anywhere, or shares of
// another backup, stop it before the HSM sees the blob.
const (
	backupPEMType  = "SIGNERD WRAPPED KEY"
	wrapMechanism  = "CKM_AES_KEY_WRAP_PAD"
	backupMACLabel = "signerd backup MAC key v1"
)

type backupFile struct {
	hsm.WrappedKey
	Set []byte // the KEK split's set ID, to match shares to backups
	MAC []byte
}

func (b *backupFile) mac(kek []byte) ([]byte, error) {
	spki, err := smx509.MarshalPKIXPublicKey(b.Public)
	if err != nil {
		return nil, err
	}
	k := hmac.New(sm3.New, kek)
	k.Write([]byte(backupMACLabel))
	m := hmac.New(sm3.New, k.Sum(nil))
	fmt.Fprintf(m, "signerd-wrapped-key-v1\n%s\n%s\n%s\n%x\n%x\n%x\n", b.Label, b.Algorithm, wrapMechanism, b.Set, spki, b.Blob)
	return m.Sum(nil), nil
}

func (b *backupFile) seal(kek []byte) error {
	var err error
	b.MAC, err = b.mac(kek)
	return err
}

// check verifies the MAC with the KEK the shares rebuilt.
func (b *backupFile) check(kek []byte) error {
	want, err := b.mac(kek)
	if err != nil {
		return err
	}
	if !hmac.Equal(want, b.MAC) {
		return errors.New("backup file fails its MAC under the rebuilt KEK: the file was altered, or the shares belong to another backup")
	}
	return nil
}

func (b *backupFile) marshal() ([]byte, error) {
	spki, err := smx509.MarshalPKIXPublicKey(b.Public)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: backupPEMType, Headers: map[string]string{
		"Label":      b.Label,
		"Algorithm":  b.Algorithm.String(),
		"Mechanism":  wrapMechanism,
		"Public-Key": base64.StdEncoding.EncodeToString(spki),
		"KEK-Set":    hex.EncodeToString(b.Set),
		"MAC":        hex.EncodeToString(b.MAC),
	}, Bytes: b.Blob}), nil
}

func parseBackupFile(data []byte) (*backupFile, error) {
	p, rest := pem.Decode(data)
	if p == nil || p.Type != backupPEMType {
		return nil, fmt.Errorf("not a %s PEM block", backupPEMType)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("trailing data after the wrapped key")
	}
	h := p.Headers
	if h["Mechanism"] != wrapMechanism {
		return nil, fmt.Errorf("wrapping mechanism %q, want %s", h["Mechanism"], wrapMechanism)
	}
	b := &backupFile{WrappedKey: hsm.WrappedKey{Label: h["Label"], Blob: p.Bytes}}
	var err error
	if b.Algorithm, err = hsm.ParseAlgorithm(h["Algorithm"]); err != nil {
		return nil, err
	}
	spki, err := base64.StdEncoding.DecodeString(h["Public-Key"])
	if err != nil {
		return nil, fmt.Errorf("Public-Key: %w", err)
	}
	pub, err := smx509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("Public-Key: %w", err)
	}
	var ok bool
	if b.Public, ok = pub.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("Public-Key: %T, want an EC key", pub)
	}
	if b.Set, err = hex.DecodeString(h["KEK-Set"]); err != nil {
		return nil, fmt.Errorf("KEK-Set: %w", err)
	}
	if b.MAC, err = hex.DecodeString(h["MAC"]); err != nil || len(b.MAC) != sm3.Size {
		return nil, errors.New("MAC: malformed")
	}
	if b.Label == "" || len(b.Blob) == 0 {
		return nil, errors.New("label or wrapped key missing")
	}
	return b, nil
}
