package hsm

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// KEKSize is the size of a key-backup KEK: AES-256.
const KEKSize = 32

// WrappedKey is a private key wrapped inside the HSM under a KEK with
// CKM_AES_KEY_WRAP_PAD (RFC 5649), and what restoring it needs to know.
type WrappedKey struct {
	Label     string
	Algorithm Algorithm
	Public    *ecdsa.PublicKey
	Blob      []byte
}

// ErrNotBackupKey: the key was not generated for split-control backup, so
// the token will not let it out even wrapped (SPEC §3.5).
var ErrNotBackupKey = errors.New("key is not extractable under a trusted KEK (generate it with backup enabled)")

// BackupKey wraps the private key labelled label under kek inside the token
// (SPEC §4.3). The key's CKA_WRAP_WITH_TRUSTED lets only a trusted KEK wrap
// it, and only the security officer can mark a key trusted, so: the SO logs
// in and creates the KEK as a trusted, public session object; the SO logs
// out; the user logs in (cfg.PIN) and wraps. The KEK dies with the session.
func BackupKey(cfg Config, soPIN []byte, label string, kek []byte) (*WrappedKey, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("backup key %q: KEK is %d bytes, want %d", label, len(kek), KEKSize)
	}
	lib, err := openLibrary(cfg.ModulePath)
	if err != nil {
		return nil, err
	}
	defer lib.release()
	slot, err := lib.findSlot(cfg.TokenLabel, cfg.TokenSerial)
	if err != nil {
		return nil, fmt.Errorf("backup key %q: %w", label, err)
	}
	h, err := lib.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("backup key %q: open session: %w", label, err)
	}
	defer lib.ctx.CloseSession(h)

	kekH, err := createTrustedKEK(lib.ctx, h, soPIN, kek)
	if err != nil {
		return nil, fmt.Errorf("backup key %q: %w", label, err)
	}
	defer lib.ctx.DestroyObject(h, kekH)

	cfg.Sessions = 1
	m, err := Open(cfg) // the user's login covers h too
	if err != nil {
		return nil, fmt.Errorf("backup key %q: %w", label, err)
	}
	defer m.Close()
	key, err := m.FindKey(context.Background(), label)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	attrs, err := key.Attributes(context.Background())
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if !attrs.Extractable || !attrs.WrapWithTrusted || !attrs.Sensitive {
		return nil, fmt.Errorf("backup key %q: %w", label, ErrNotBackupKey)
	}
	// Private handles are per login; find the key again on the KEK's session.
	privH, err := m.findPrivateKey(&session{h: h}, label)
	if err != nil {
		return nil, fmt.Errorf("backup key %q: %w", label, err)
	}
	blob, err := lib.ctx.WrapKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, kekH, privH)
	if err != nil {
		return nil, fmt.Errorf("backup key %q: C_WrapKey: %w", label, err)
	}
	return &WrappedKey{Label: label, Algorithm: key.Algorithm, Public: key.Public, Blob: blob}, nil
}

// createTrustedKEK logs the SO in on h, creates kek there as a trusted
// session object that can wrap and nothing else, and logs out. The SO may
// create only public objects, which is why it is not CKA_PRIVATE.
func createTrustedKEK(p11 *pkcs11.Ctx, h pkcs11.SessionHandle, soPIN, kek []byte) (pkcs11.ObjectHandle, error) {
	if err := p11.Login(h, pkcs11.CKU_SO, pinString(soPIN)); err != nil {
		return 0, fmt.Errorf("SO %w", loginError(err))
	}
	kekH, err := p11.CreateObject(h, kekTemplate(kek, true))
	if lerr := p11.Logout(h); err == nil && lerr != nil {
		p11.DestroyObject(h, kekH)
		return 0, fmt.Errorf("SO logout: %w", lerr)
	}
	if err != nil {
		return 0, fmt.Errorf("create trusted KEK: %w", err)
	}
	return kekH, nil
}

// kekTemplate is an AES KEK that lives only in its session: trusted ones
// wrap, the others unwrap.
func kekTemplate(kek []byte, trusted bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_TRUSTED, trusted),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, trusted),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, !trusted),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, kek),
	}
}

// RestoreKey unwraps w under kek into this token as the key pair labelled
// label: the private key sensitive, non-extractable and sign-only, the public
// key from w. Nothing is left behind if any step fails. The caller proves
// the restored key by signing with it: every signature is verified against
// w.Public before it leaves this package.
func (m *Module) RestoreKey(ctx context.Context, w *WrappedKey, label string, kek []byte) (*Key, error) {
	switch {
	case len(kek) != KEKSize:
		return nil, fmt.Errorf("restore key %q: KEK is %d bytes, want %d", label, len(kek), KEKSize)
	case len(w.Blob) == 0: // the binding panics on an empty blob
		return nil, fmt.Errorf("restore key %q: wrapped key is empty", label)
	case w.Public == nil:
		return nil, fmt.Errorf("restore key %q: public key missing", label)
	}
	_, keyType, params, err := m.keyGen(w.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("restore key %q: %w", label, err)
	}
	var key *Key
	err = m.do(ctx, func(s *session) error {
		p11 := m.lib.ctx
		if err := m.labelUnused(s, label); err != nil {
			return err
		}
		kekH, err := p11.CreateObject(s.h, kekTemplate(kek, false))
		if err != nil {
			return fmt.Errorf("create KEK: %w", err)
		}
		defer p11.DestroyObject(s.h, kekH)
		id := KeyID(w.Public)
		privT := privateKeyTemplate(keyType, label, id, false)
		privH, err := p11.UnwrapKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, kekH, w.Blob, privT)
		if err != nil {
			return fmt.Errorf("C_UnwrapKey (wrong KEK or damaged blob): %w", err)
		}
		pubT := append(publicKeyTemplate(keyType, label, id, params),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, ecPointAttribute(w.Public)))
		if _, err := p11.CreateObject(s.h, pubT); err != nil {
			p11.DestroyObject(s.h, privH)
			return fmt.Errorf("create public key: %w", err)
		}
		key = &Key{m: m, Label: label, ID: id, Algorithm: w.Algorithm, Public: w.Public, gen: s.gen, handle: privH, found: true}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore %s key %q: %w", w.Algorithm, label, err)
	}
	return key, nil
}

// DestroyKey removes both halves of the key pair labelled label. Only a
// restore that failed its proof uses it.
func (m *Module) DestroyKey(ctx context.Context, label string) error {
	return m.do(ctx, func(s *session) error {
		objs, err := m.findObjects(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)})
		if err != nil {
			return err
		}
		for _, h := range objs {
			if err := m.lib.ctx.DestroyObject(s.h, h); err != nil {
				return fmt.Errorf("destroy %q: %w", label, err)
			}
		}
		return nil
	})
}

// ecPointAttribute is CKA_EC_POINT as PKCS#11 v2.40 has it: the DER
// OCTET STRING of the uncompressed point.
func ecPointAttribute(pub *ecdsa.PublicKey) []byte {
	point := marshalPoint(pub)
	return append([]byte{0x04, byte(len(point))}, point...)
}
