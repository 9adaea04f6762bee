package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/emmansun/gmsm/sm2"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

func TestBackupRestore(t *testing.T) {
	for _, tc := range []struct {
		name string
		alg  hsm.Algorithm
		sm2  bool
	}{
		{"sm2", hsm.SM2, true},
		{"ecdsa-p256", hsm.ECDSAP256, false},
		{"ecdsa-p384", hsm.ECDSAP384, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var module string
			var profile *hsm.MechanismProfile
			if tc.sm2 {
				module, profile = hsmtest.SM2Module(t), hsmtest.SoftHSMProfile(t)
			} else {
				module = hsmtest.StockModule(t)
			}
			dir := hsmtest.NewDir(t)
			src := dir.NewToken(t, module, "primary")
			dst := dir.NewToken(t, module, "standby")
			ctx := context.Background()

			m, err := hsm.Open(src.Config(profile))
			if err != nil {
				t.Fatal(err)
			}
			orig, err := m.GenerateKey(ctx, hsm.KeySpec{Label: "issuing", Algorithm: tc.alg, Backup: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.GenerateKey(ctx, hsm.KeySpec{Label: "plain", Algorithm: tc.alg}); err != nil {
				t.Fatal(err)
			}
			m.Close() // the SO must be able to log in

			kek := make([]byte, hsm.KEKSize)
			rand.Read(kek)
			if _, err := hsm.BackupKey(src.Config(profile), src.SOPIN, "plain", kek); !errors.Is(err, hsm.ErrNotBackupKey) {
				t.Fatalf("backup of a non-backup key: %v, want ErrNotBackupKey", err)
			}
			if _, err := hsm.BackupKey(src.Config(profile), src.PIN, "issuing", kek); !errors.Is(err, hsm.ErrPINIncorrect) {
				t.Fatalf("backup with the user PIN as SO PIN: %v, want ErrPINIncorrect", err)
			}
			w, err := hsm.BackupKey(src.Config(profile), src.SOPIN, "issuing", kek)
			if err != nil {
				t.Fatal(err)
			}
			if !w.Public.Equal(orig.Public) || w.Algorithm != tc.alg || len(w.Blob) == 0 {
				t.Fatalf("wrapped key: %+v", w)
			}

			r := dst.Open(t, dst.Config(profile))
			wrongKEK := make([]byte, hsm.KEKSize)
			rand.Read(wrongKEK)
			flipped := *w
			flipped.Blob = append([]byte(nil), w.Blob...)
			flipped.Blob[len(flipped.Blob)/2] ^= 1
			empty := *w
			empty.Blob = nil
			for name, try := range map[string]func() error{
				"wrong KEK":    func() error { _, err := r.RestoreKey(ctx, w, "issuing", wrongKEK); return err },
				"flipped byte": func() error { _, err := r.RestoreKey(ctx, &flipped, "issuing", kek); return err },
				"empty blob":   func() error { _, err := r.RestoreKey(ctx, &empty, "issuing", kek); return err },
			} {
				if err := try(); err == nil {
					t.Errorf("restore with %s succeeded", name)
				}
			}
			if _, err := r.FindKey(ctx, "issuing"); !errors.Is(err, hsm.ErrKeyNotFound) {
				t.Fatalf("failed restores left a key behind: %v", err)
			}

			k, err := r.RestoreKey(ctx, w, "issuing", kek)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.RestoreKey(ctx, w, "issuing", kek); !errors.Is(err, hsm.ErrKeyExists) {
				t.Fatalf("second restore under the same label: %v, want ErrKeyExists", err)
			}
			found, err := r.FindKey(ctx, "issuing")
			if err != nil {
				t.Fatal(err)
			}
			if !found.Public.Equal(orig.Public) || string(found.ID) != string(orig.ID) {
				t.Fatal("restored key's public key or CKA_ID differs from the original's")
			}
			attrs, err := found.Attributes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !attrs.Sensitive || attrs.Extractable || !attrs.Sign || attrs.Decrypt || attrs.Unwrap || attrs.Derive {
				t.Fatalf("restored key attributes: %+v", attrs)
			}
			// The hsm package verifies every signature against the recorded
			// public key; verify here too, independently.
			msg := []byte("restored")
			if tc.sm2 {
				s, err := k.SM2Signer(nil)
				if err != nil {
					t.Fatal(err)
				}
				sig, err := s.Sign(rand.Reader, msg, sm2.DefaultSM2SignerOpts)
				if err != nil {
					t.Fatal(err)
				}
				if !sm2.VerifyASN1WithSM2(orig.Public, nil, msg, sig) {
					t.Fatal("signature from the restored key does not verify under the original public key")
				}
				return
			}
			s, err := k.ECDSASigner()
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256(msg)
			sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(orig.Public, digest[:], sig) {
				t.Fatal("signature from the restored key does not verify under the original public key")
			}
		})
	}
}
