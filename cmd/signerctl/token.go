package main

import (
	"flag"
	"fmt"
	"io"

	"signerd/hsm"
)

// tokenFlags select a module and token and say where the user PIN is.
type tokenFlags struct {
	module, label, serial string
	pinFile, pinCred      string
	profile               string
}

func (f *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.module, "module", "", "PKCS#11 module (shared library) `path`")
	fs.StringVar(&f.label, "token", "", "token `label`")
	fs.StringVar(&f.serial, "token-serial", "", "token `serial` number (with or instead of -token)")
	fs.StringVar(&f.pinFile, "pin-file", "", "read the user PIN from `file` (mode 0600)")
	fs.StringVar(&f.pinCred, "pin-credential", "", "read the user PIN from systemd credential `name`")
	fs.StringVar(&f.profile, "sm2-profile", hsm.DefaultProfile, fmt.Sprintf("SM2 mechanism `profile` %v, or none", hsm.ProfileNames()))
}

// open logs in to the token. Without a PIN file or credential it prompts.
func (f *tokenFlags) open() (*hsm.Module, error) {
	if f.module == "" || (f.label == "" && f.serial == "") {
		return nil, usageError{"-module and -token (or -token-serial) are required"}
	}
	src := hsm.PINSource{File: f.pinFile, Credential: f.pinCred}
	if src.File == "" && src.Credential == "" {
		src.Prompt = "User PIN for token " + f.label + ": "
	}
	pin, err := hsm.ReadPIN(src)
	if err != nil {
		return nil, err
	}
	defer hsm.ZeroPIN(pin)
	cfg := hsm.Config{ModulePath: f.module, TokenLabel: f.label, TokenSerial: f.serial, PIN: pin, Sessions: 1}
	if f.profile != "none" {
		p, err := hsm.Profile(f.profile)
		if err != nil {
			return nil, usageError{err.Error()}
		}
		cfg.SM2 = &p
	}
	return hsm.Open(cfg)
}

func tokenInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token init", flag.ContinueOnError)
	module := fs.String("module", "", "PKCS#11 module (shared library) `path`")
	label := fs.String("label", "", "new token's `label`")
	soPINFile := fs.String("so-pin-file", "", "read the security officer PIN from `file` (mode 0600)")
	pinFile := fs.String("pin-file", "", "read the user PIN from `file` (mode 0600)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *module == "" || *label == "" || *soPINFile == "" || *pinFile == "" {
		return usageError{"-module, -label, -so-pin-file and -pin-file are required"}
	}
	soPIN, err := hsm.ReadPIN(hsm.PINSource{File: *soPINFile})
	if err != nil {
		return fmt.Errorf("SO %w", err)
	}
	defer hsm.ZeroPIN(soPIN)
	pin, err := hsm.ReadPIN(hsm.PINSource{File: *pinFile})
	if err != nil {
		return err
	}
	defer hsm.ZeroPIN(pin)
	serial, err := hsm.InitToken(*module, *label, soPIN, pin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token %q initialised, serial %s\n", *label, serial)
	return nil
}
