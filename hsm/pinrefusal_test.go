package hsm_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// Once the token refuses the PIN, the module never calls C_Login again on
// its own: not when later operations find the login gone, not when the
// token would now accept the PIN. Logins are counted by the
// fault-injecting module between signerd and SoftHSM2.
func TestRefusedPINIsNeverPresentedAgain(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "refused")
	faults, cfg := throughFaultModule(t, tok)
	cfg.Sessions = 4

	// At open: a refused PIN is presented once, and Open fails.
	faults.Set(t, "pin-locked")
	if _, err := hsm.Open(cfg); !errors.Is(err, hsm.ErrPINLocked) || !hsm.PINRefused(err) {
		t.Fatalf("open with the PIN locked: %v, want ErrPINLocked", err)
	}
	if got := faults.Logins(t); len(got) != 1 {
		t.Fatalf("C_Login calls at a refused open %q, want one", got)
	}

	// While serving: the login is lost and the PIN locked in one step.
	faults.Set(t, "ok")
	m := tok.Open(t, cfg)
	_, s := newSM2Signer(t, m)
	select {
	case <-m.LoginRefused():
		t.Fatal("LoginRefused closed before any refusal")
	default:
	}
	faults.Set(t, "logout-locked")
	if _, err := s.SignMessage(nil, []byte("x"), nil); !errors.Is(err, hsm.ErrPINLocked) || errors.Is(err, hsm.ErrTransient) {
		t.Fatalf("sign as the PIN is locked: %v, want ErrPINLocked and not ErrTransient", err)
	}
	<-m.LoginRefused() // closed by now, or the test hangs and fails
	if err := m.LoginRefusal(); !errors.Is(err, hsm.ErrPINLocked) {
		t.Fatalf("LoginRefusal %v, want ErrPINLocked", err)
	}
	want := faults.Logins(t)
	if len(want) != 3 || !strings.HasSuffix(want[2], "rv=a4") {
		t.Fatalf("C_Login calls %q: want the refused open, the open, and one refused relogin", want)
	}

	// The token would take the PIN again; the module does not try it.
	faults.Set(t, "ok")
	ctx := context.Background()
	for i, op := range []func() error{
		func() error { _, err := s.SignMessage(nil, []byte("x"), nil); return err },
		func() error { _, err := m.FindKey(ctx, "no-such-key"); return err },
		func() error { _, err := m.Objects(ctx); return err },
		func() error { _, err := m.Random().Read(make([]byte, 16)); return err },
		func() error { return m.SelfTest(ctx, s) },
		func() error { _, err := s.SignMessage(nil, []byte("y"), nil); return err },
	} {
		if err := op(); !errors.Is(err, hsm.ErrPINLocked) {
			t.Errorf("operation %d after the refusal: %v, want ErrPINLocked", i, err)
		}
	}
	if got := faults.Logins(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("C_Login calls after the refusal %q, want still %q", got, want)
	}
}

// A token that goes away and comes back with its PIN locked: the module,
// initialised anew to find it, presents the PIN once, and never again,
// even when the token goes and comes back once more.
func TestTokenBackWithItsPINLockedIsTriedOnce(t *testing.T) {
	d := hsmtest.NewDir(t)
	tok := d.NewToken(t, hsmtest.SM2Module(t), "away-locked")
	faults, cfg := throughFaultModule(t, tok)
	m := tok.Open(t, cfg)
	_, s := newSM2Signer(t, m)
	msg := []byte("token back, PIN locked")
	away := func() (back func()) {
		t.Helper()
		if err := os.Rename(d.Path, d.Path+".away"); err != nil {
			t.Fatal(err)
		}
		return func() {
			t.Helper()
			if err := os.Rename(d.Path+".away", d.Path); err != nil {
				t.Fatal(err)
			}
		}
	}
	back := away()
	if _, err := s.SignMessage(nil, msg, nil); !errors.Is(err, hsm.ErrTransient) {
		t.Fatalf("sign with the token gone: %v, want ErrTransient", err)
	}
	faults.Set(t, "pin-locked")
	back()
	// Recovery re-initialises the module at most once a second; poll.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := s.SignMessage(nil, msg, nil)
		if errors.Is(err, hsm.ErrPINLocked) {
			break
		}
		if !errors.Is(err, hsm.ErrTransient) {
			t.Fatalf("sign as the token comes back locked: %v, want ErrTransient until ErrPINLocked", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("token back for 10s and still: %v", err)
		}
	}
	want := faults.Logins(t)
	if len(want) != 2 || !strings.HasSuffix(want[1], "rv=a4") {
		t.Fatalf("C_Login calls %q, want the open and one refused", want)
	}
	faults.Set(t, "ok")
	back = away()
	back()
	for i := range 3 {
		if _, err := s.SignMessage(nil, msg, nil); !errors.Is(err, hsm.ErrPINLocked) {
			t.Fatalf("sign %d after the refusal: %v, want ErrPINLocked", i, err)
		}
	}
	if got := faults.Logins(t); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("C_Login calls %q, want still %q", got, want)
	}
}
