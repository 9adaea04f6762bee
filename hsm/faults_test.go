package hsm_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// Through a module that fails and corrupts signatures on demand, the
// signer never returns a signature it has not verified, and a lost
// session or login is restored for the next call.
func TestFaultyModuleNeverYieldsAnUnverifiedSignature(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "faulty")
	faults, cfg := throughFaultModule(t, tok)
	m := tok.Open(t, cfg)
	k, s := newSM2Signer(t, m)
	msg := []byte("through the fault module")
	signed := func(t *testing.T) {
		t.Helper()
		sig, err := s.SignMessage(nil, msg, nil)
		if err != nil || !sm2.VerifyASN1WithSM2(k.Public, nil, msg, sig) {
			t.Fatalf("sign with no fault: %v", err)
		}
	}
	signed(t)
	tests := []struct {
		fault   string
		oneShot bool
		want    error // nil: any error but ErrBadSignature and ErrTransient
	}{
		{"sign-error", false, nil},
		{"sign-corrupt", false, hsm.ErrBadSignature},
		{"close-sessions", true, hsm.ErrTransient},
		{"logout", true, hsm.ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.fault, func(t *testing.T) {
			faults.Set(t, tt.fault)
			for range 3 {
				sig, err := s.SignMessage(nil, msg, nil)
				switch {
				case sig != nil:
					t.Fatalf("a signature came back under fault %s", tt.fault)
				case tt.want != nil && !errors.Is(err, tt.want):
					t.Fatalf("error %v, want %v", err, tt.want)
				case tt.want == nil && (err == nil || errors.Is(err, hsm.ErrBadSignature) || errors.Is(err, hsm.ErrTransient)):
					t.Fatalf("error %v, want the module's own failure", err)
				}
				if tt.oneShot {
					faults.AwaitDone(t, time.Second)
					break
				}
			}
			faults.Set(t, "ok")
			signed(t)
		})
	}
}

// throughFaultModule builds the fault module around tok's module, puts
// what it reads from the environment in this process's (restored when t
// ends), and returns it with tok's configuration loading it.
func throughFaultModule(t *testing.T, tok *hsmtest.Token) (*hsmtest.FaultModule, hsm.Config) {
	t.Helper()
	faults := hsmtest.NewFaultModule(t, tok.Module)
	for _, kv := range faults.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	cfg := tok.Config(hsmtest.SoftHSMProfile(t))
	cfg.ModulePath = faults.Path
	return faults, cfg
}
