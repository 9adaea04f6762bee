package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	_ "crypto/sha512" // crypto.SHA384
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/miekg/pkcs11"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

func TestKeyAttributes(t *testing.T) {
	tests := []struct {
		name   string
		backup bool
		want   hsm.KeyAttributes
	}{
		{"signing key", false, hsm.KeyAttributes{Token: true, Private: true, Sensitive: true, AlwaysSensitive: true,
			NeverExtractable: true, Local: true, Sign: true, Modifiable: true}},
		{"backup key", true, hsm.KeyAttributes{Token: true, Private: true, Sensitive: true, AlwaysSensitive: true,
			Extractable: true, WrapWithTrusted: true, Local: true, Sign: true, Modifiable: true}},
	}
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "attrs")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := m.GenerateKey(ctx, hsm.KeySpec{Label: tt.name, Algorithm: hsm.SM2, Backup: tt.backup})
			if err != nil {
				t.Fatal(err)
			}
			got, err := k.Attributes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("attributes\n got %+v\nwant %+v", got, tt.want)
			}
			if v, err := k.PrivateAttribute(ctx, pkcs11.CKA_VALUE); !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
				t.Errorf("reading CKA_VALUE: got %d bytes, err %v; want CKR_ATTRIBUTE_SENSITIVE", len(v), err)
			}
			if want := hsm.KeyID(k.Public); string(k.ID) != string(want) {
				t.Errorf("CKA_ID %X, want SHA-1 of the public point %X", k.ID, want)
			}
		})
	}
}

func TestGenerateRefusesExistingLabelAndFindKeyReadsItBack(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "labels")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	k, err := m.GenerateKey(ctx, hsm.KeySpec{Label: "root", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.GenerateKey(ctx, hsm.KeySpec{Label: "root", Algorithm: hsm.ECDSAP256}); !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatalf("second key under the same label: err %v, want ErrKeyExists", err)
	}
	found, err := m.FindKey(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	if !found.Public.Equal(k.Public) || string(found.ID) != string(k.ID) || found.Algorithm != hsm.SM2 {
		t.Fatalf("FindKey returned another key: %+v", found)
	}
	if _, err := m.FindKey(ctx, "absent"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("FindKey(absent): err %v, want ErrKeyNotFound", err)
	}
}

func TestECDSAOnStockSoftHSM(t *testing.T) {
	tests := []struct {
		alg  hsm.Algorithm
		hash crypto.Hash
	}{{hsm.ECDSAP256, crypto.SHA256}, {hsm.ECDSAP384, crypto.SHA384}}
	tok := hsmtest.NewToken(t, hsmtest.StockModule(t), "ecdsa")
	m := tok.Open(t, tok.Config(nil))
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.alg.String(), func(t *testing.T) {
			k, err := m.GenerateKey(ctx, hsm.KeySpec{Label: tt.alg.String(), Algorithm: tt.alg})
			if err != nil {
				t.Fatal(err)
			}
			s, err := k.ECDSASigner()
			if err != nil {
				t.Fatal(err)
			}
			h := tt.hash.New()
			h.Write([]byte("message"))
			digest := h.Sum(nil)
			sig, err := s.Sign(nil, digest, tt.hash)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(k.Public, digest, sig) {
				t.Fatal("signature does not verify")
			}
		})
	}
	if _, err := m.GenerateKey(ctx, hsm.KeySpec{Label: "sm2", Algorithm: hsm.SM2}); err == nil {
		t.Fatal("SM2 key generated on a module without an SM2 profile")
	}
}

func TestProfileWithMissingMechanismFailsAtOpen(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.StockModule(t), "stock")
	_, err := hsm.Open(tok.Config(hsmtest.SoftHSMProfile(t)))
	if err == nil {
		t.Fatal("stock SoftHSM2 opened with the SM2 profile")
	}
	if want := fmt.Sprintf("0x%08X is not offered", hsm.CKMVendorSM2SignE); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the missing mechanism (%s)", err, want)
	}
}

func TestConcurrentSigningNeverSharesASession(t *testing.T) {
	const sessions, signers, each = 3, 24, 8
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "pool")
	cfg := tok.Config(hsmtest.SoftHSMProfile(t))
	cfg.Sessions = sessions
	m := tok.Open(t, cfg)
	k, s := newSM2Signer(t, m)
	var wg sync.WaitGroup
	errs := make(chan error, signers*each)
	for g := range signers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msg := fmt.Appendf(nil, "goroutine %d message %d", g, i)
				sig, err := s.Sign(nil, msg, sm2.DefaultSM2SignerOpts)
				if err == nil && !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
					err = fmt.Errorf("bad signature for %q", msg)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak := m.PeakSessions(); peak > sessions || peak < 2 {
		t.Errorf("peak sessions in use %d, want 2..%d (pool bound respected, signing concurrent)", peak, sessions)
	}
}

func TestRecoversFromLostSessionsAndLogout(t *testing.T) {
	faults := []struct {
		name  string
		fault func(t *testing.T, p11 *pkcs11.Ctx, slot uint)
	}{
		{"all sessions closed", func(t *testing.T, p11 *pkcs11.Ctx, slot uint) {
			if err := p11.CloseAllSessions(slot); err != nil {
				t.Fatal(err)
			}
		}},
		{"logged out", func(t *testing.T, p11 *pkcs11.Ctx, slot uint) {
			h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
			if err != nil {
				t.Fatal(err)
			}
			if err := p11.Logout(h); err != nil {
				t.Fatal(err)
			}
			p11.CloseSession(h)
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "faults")
			m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
			k, s := newSM2Signer(t, m)
			p11, slot := tok.BehindTheBack(t)
			for round := range 3 {
				f.fault(t, p11, slot)
				msg := fmt.Appendf(nil, "round %d", round)
				// The hsm package does not retry inside: the call that meets
				// the fault reports it, and the pool is restored for the next.
				if _, err := s.SignMessage(nil, msg, nil); !errors.Is(err, hsm.ErrTransient) {
					t.Fatalf("round %d: first sign after fault: %v, want ErrTransient", round, err)
				}
				sig, err := s.SignMessage(nil, msg, nil)
				if err != nil {
					t.Fatalf("round %d: sign after recovery: %v", round, err)
				}
				if !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
					t.Fatalf("round %d: bad signature after recovery", round)
				}
			}
		})
	}
}

// A token that goes away (its file removed, as when an HSM restarts) and
// comes back is found again without reopening the Module.
func TestRecoversWhenTheTokenGoesAndComesBack(t *testing.T) {
	d := hsmtest.NewDir(t)
	tok := d.NewToken(t, hsmtest.SM2Module(t), "away")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	k, s := newSM2Signer(t, m)
	msg := []byte("token back")
	if _, err := s.SignMessage(nil, msg, nil); err != nil {
		t.Fatal(err)
	}
	// With the folder gone, SoftHSM2 cannot even be initialised again.
	away := d.Path + ".away"
	if err := os.Rename(d.Path, away); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.SignMessage(nil, msg, nil); !errors.Is(err, hsm.ErrTransient) {
			t.Fatalf("sign %d with the token gone: %v, want ErrTransient", i, err)
		}
	}
	if err := os.Rename(away, d.Path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sig, err := s.SignMessage(nil, msg, nil)
		if err == nil {
			if !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
				t.Fatal("bad signature after the token came back")
			}
			return
		}
		if !errors.Is(err, hsm.ErrTransient) {
			t.Fatalf("sign after the token came back: %v, want success or ErrTransient", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("token back for 10s and still: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWrongPINIsRefusedOnceAndNotInErrors(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "pin")
	cfg := tok.Config(hsmtest.SoftHSMProfile(t))
	cfg.PIN = []byte("wrong-pin-7361")
	_, err := hsm.Open(cfg)
	if !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Fatalf("open with wrong PIN: %v, want ErrPINIncorrect", err)
	}
	if strings.Contains(err.Error(), string(cfg.PIN)) {
		t.Fatalf("error reveals the PIN: %q", err)
	}
}

func TestPINChangedBehindTheBackIsNeverRetried(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "pin-retry")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	_, s := newSM2Signer(t, m)
	p11, slot := tok.BehindTheBack(t)
	setPIN := func(old, new string) {
		t.Helper()
		h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p11.CloseSession(h)
		if err := p11.Login(h, pkcs11.CKU_USER, old); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			t.Fatal(err)
		}
		if err := p11.SetPIN(h, old, new); err != nil {
			t.Fatal(err)
		}
	}
	setPIN(string(tok.PIN), "changed-pin")
	if err := p11.CloseAllSessions(slot); err != nil { // forces a relogin
		t.Fatal(err)
	}
	for i := range 2 {
		_, err := s.SignMessage(nil, []byte("x"), nil)
		if !errors.Is(err, hsm.ErrPINIncorrect) || errors.Is(err, hsm.ErrTransient) {
			t.Fatalf("sign %d after PIN change: %v, want ErrPINIncorrect and not ErrTransient", i, err)
		}
	}
	// With the old PIN back, a module that retried logins would now succeed.
	setPIN("changed-pin", string(tok.PIN))
	p11.CloseAllSessions(slot)
	if _, err := s.SignMessage(nil, []byte("x"), nil); !errors.Is(err, hsm.ErrPINIncorrect) {
		t.Fatalf("sign after PIN restored: %v; the refused PIN must not be tried again", err)
	}
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	credDir := filepath.Join(dir, "creds")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, "token-pin"), []byte("credential-pin"), 0o400); err != nil { // as systemd makes it
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", credDir)
	tests := []struct {
		name    string
		src     hsm.PINSource
		want    string
		wantErr string
	}{
		{"file with newline", hsm.PINSource{File: write("pin", "1234\n", 0o600)}, "1234", ""},
		{"file without newline", hsm.PINSource{File: write("pin2", "5678", 0o400)}, "5678", ""},
		{"world-readable file", hsm.PINSource{File: write("pin3", "1234", 0o604)}, "", "has mode 0604"},
		{"empty file", hsm.PINSource{File: write("pin4", "\n", 0o600)}, "", "empty"},
		{"zero-byte file", hsm.PINSource{File: write("pin5", "", 0o600)}, "", "empty"},
		{"256-byte PIN", hsm.PINSource{File: write("pin6", strings.Repeat("7", 256), 0o600)}, strings.Repeat("7", 256), ""},
		{"oversize file", hsm.PINSource{File: write("pin7", strings.Repeat("7", 257), 0o600)}, "", "longer than 256"},
		{"missing file", hsm.PINSource{File: filepath.Join(dir, "nope")}, "", "no such file"},
		{"systemd credential", hsm.PINSource{Credential: "token-pin"}, "credential-pin", ""},
		{"credential path escape", hsm.PINSource{Credential: "../pin"}, "", "not a credential name"},
		{"two sources", hsm.PINSource{File: "a", Credential: "b"}, "", "exactly one"},
		{"no source", hsm.PINSource{}, "", "exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pin, err := hsm.ReadPIN(tt.src)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(pin) != tt.want {
				t.Fatalf("got %q, %v; want %q", pin, err, tt.want)
			}
		})
	}
}

func TestSelfTestAndRandom(t *testing.T) {
	m, k := sm2Key(t)
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SelfTest(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3000) // more than one C_GenerateRandom call
	if _, err := m.Random().Read(buf); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(buf[2000:]); sum == sha256.Sum256(make([]byte, 1000)) {
		t.Fatal("tail of a long random read is zero")
	}
}
