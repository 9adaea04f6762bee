package hsm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// The vendor mechanism of testdata/softhsm, called directly: what a GM/T
// module's sign-e mechanism promises, and what it refuses.
func TestPatchedSoftHSMVendorMechanism(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "patch")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	for _, spec := range []hsm.KeySpec{{Label: "sm2", Algorithm: hsm.SM2}, {Label: "p256", Algorithm: hsm.ECDSAP256}} {
		if _, err := m.GenerateKey(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	p11, slot := tok.BehindTheBack(t)
	info, err := p11.GetMechanismInfo(slot, []*pkcs11.Mechanism{pkcs11.NewMechanism(hsm.CKMVendorSM2SignE, nil)})
	if err != nil {
		t.Fatalf("C_GetMechanismInfo: %v", err)
	}
	if info.Flags&(pkcs11.CKF_SIGN|pkcs11.CKF_VERIFY) != pkcs11.CKF_SIGN|pkcs11.CKF_VERIFY || info.MaxKeySize != 256 {
		t.Errorf("mechanism info %+v: want sign+verify, 256-bit keys", info)
	}
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION) // shares the pool's login
	if err != nil {
		t.Fatal(err)
	}
	defer p11.CloseSession(h)
	find := func(label string) pkcs11.ObjectHandle {
		t.Helper()
		if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}); err != nil {
			t.Fatal(err)
		}
		defer p11.FindObjectsFinal(h)
		objs, _, err := p11.FindObjects(h, 2)
		if err != nil || len(objs) != 1 {
			t.Fatalf("find %q: %v, %d objects", label, err, len(objs))
		}
		return objs[0]
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(hsm.CKMVendorSM2SignE, nil)}
	tests := []struct {
		name     string
		key      string
		input    []byte
		wantInit pkcs11.Error
		wantSign pkcs11.Error
		wantLen  int
	}{
		{"SM2 key, 32-byte e", "sm2", make([]byte, 32), pkcs11.CKR_OK, pkcs11.CKR_OK, 64},
		{"SM2 key, 31-byte e", "sm2", make([]byte, 31), pkcs11.CKR_OK, pkcs11.CKR_DATA_LEN_RANGE, 0},
		{"SM2 key, 33-byte e", "sm2", make([]byte, 33), pkcs11.CKR_OK, pkcs11.CKR_DATA_LEN_RANGE, 0},
		{"P-256 key", "p256", make([]byte, 32), pkcs11.CKR_KEY_TYPE_INCONSISTENT, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p11.SignInit(h, mech, find(tt.key))
			if !sameRV(err, tt.wantInit) {
				t.Fatalf("C_SignInit: %v, want %v", err, tt.wantInit)
			}
			if tt.wantInit != pkcs11.CKR_OK {
				return
			}
			sig, err := p11.Sign(h, tt.input)
			if !sameRV(err, tt.wantSign) {
				t.Fatalf("C_Sign: %v, want %v", err, tt.wantSign)
			}
			if len(sig) != tt.wantLen {
				t.Fatalf("signature is %d bytes, want %d", len(sig), tt.wantLen)
			}
		})
	}
}

func sameRV(err error, want pkcs11.Error) bool {
	if want == pkcs11.CKR_OK {
		return err == nil
	}
	return errors.Is(err, want)
}
