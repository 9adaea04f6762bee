package hsm

import (
	"errors"
	"fmt"
	"strings"
)

// TokenSpec is how signerd's configuration and ceremony files name a
// module, a token in it, the user PIN's source and the SM2 mechanism
// profile. Token is a label or an RFC 7512 pkcs11: URI.
type TokenSpec struct {
	Module     string   `yaml:"module"`
	Token      string   `yaml:"token"`
	Serial     string   `yaml:"token_serial"`
	PINFile    string   `yaml:"pin_file"`
	PINCred    string   `yaml:"pin_credential"` // systemd LoadCredential= name
	PINShares  []string `yaml:"pin_shares"`     // custodians' share files (SPEC §4.3)
	SM2Profile string   `yaml:"sm2_profile"`    // a built-in profile name, or "none"
}

// Resolve applies a pkcs11: URI in Token and checks the spec is complete.
// With prompt false a PIN source must be named; with prompt true, none
// means asking on the terminal.
func (t *TokenSpec) Resolve(prompt bool) error {
	if strings.HasPrefix(t.Token, "pkcs11:") {
		u, err := ParseTokenURI(t.Token)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		for _, f := range []struct {
			name string
			from string
			to   *string
		}{{"token_serial", u.Serial, &t.Serial}, {"module", u.ModulePath, &t.Module}, {"pin_file", u.PINFile, &t.PINFile}} {
			if f.from == "" {
				continue
			}
			if *f.to != "" && *f.to != f.from {
				return fmt.Errorf("the token URI and %s disagree", f.name)
			}
			*f.to = f.from
		}
		t.Token = u.Token
	}
	sources := 0
	for _, set := range []bool{t.PINFile != "", t.PINCred != "", len(t.PINShares) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case t.Module == "":
		return errors.New("module is required")
	case t.Token == "" && t.Serial == "":
		return errors.New("token (label or pkcs11: URI) or token_serial is required")
	case sources > 1:
		return errors.New("name one PIN source: pin_file, pin_credential or pin_shares")
	case sources == 0 && !prompt:
		return errors.New("a PIN source is required: pin_file, pin_credential or pin_shares")
	}
	if t.SM2Profile != "" && t.SM2Profile != "none" {
		if _, err := Profile(t.SM2Profile); err != nil {
			return err
		}
	}
	return nil
}

// Name is the token as messages show it.
func (t TokenSpec) Name() string {
	if t.Token != "" {
		return fmt.Sprintf("%q", t.Token)
	}
	return "serial " + t.Serial
}

// ReadPIN reads the user PIN from the spec's source, or asks on the
// terminal when it names none. The caller zeroes it. Failures are
// ErrPINUnreadable.
func (t TokenSpec) ReadPIN() ([]byte, error) {
	src := PINSource{File: t.PINFile, Credential: t.PINCred, Shares: t.PINShares}
	if src.File == "" && src.Credential == "" && len(src.Shares) == 0 {
		src.Prompt = "User PIN for token " + t.Name() + ": "
	}
	pin, err := ReadPIN(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPINUnreadable, err)
	}
	return pin, nil
}

// Config is the hsm.Config for the spec with pin and sessions.
func (t TokenSpec) Config(pin []byte, sessions int) (Config, error) {
	cfg := Config{ModulePath: t.Module, TokenLabel: t.Token, TokenSerial: t.Serial, PIN: pin, Sessions: sessions}
	name := t.SM2Profile
	if name == "" {
		name = DefaultProfile
	}
	if name != "none" {
		p, err := Profile(name)
		if err != nil {
			return Config{}, err
		}
		cfg.SM2 = &p
	}
	return cfg, nil
}

// Open reads the PIN, opens the token and zeroes the PIN.
func (t TokenSpec) Open(sessions int) (*Module, error) {
	pin, err := t.ReadPIN()
	if err != nil {
		return nil, err
	}
	defer ZeroPIN(pin)
	cfg, err := t.Config(pin, sessions)
	if err != nil {
		return nil, err
	}
	return Open(cfg)
}
