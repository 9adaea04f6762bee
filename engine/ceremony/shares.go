package ceremony

import (
	"bytes"
	"fmt"
	"os"

	"signerd/hsm"
	"signerd/hsm/split"
)

func (s *SplitSpec) resolve(dir string) {
	for i := range s.Custodians {
		resolvePaths(dir, &s.Custodians[i].Share, &s.Custodians[i].PassphraseFile)
	}
}

func (s *SplitSpec) outputs() []string {
	var out []string
	for _, c := range s.Custodians {
		out = append(out, c.Share)
	}
	return out
}

func (s *SplitSpec) names() []string {
	var out []string
	for _, c := range s.Custodians {
		out = append(out, c.Name)
	}
	return out
}

// passphrases collects each custodian's passphrase (nil for none) before
// anything changes, so a mistyped one stops the ceremony early.
func (s *SplitSpec) passphrases() ([][]byte, error) {
	out := make([][]byte, len(s.Custodians))
	for i, c := range s.Custodians {
		var err error
		switch {
		case c.PassphraseFile != "":
			out[i], err = hsm.ReadPIN(hsm.PINSource{File: c.PassphraseFile})
		case c.Passphrase == "prompt":
			out[i], err = promptTwice(c.Name)
		}
		if err != nil {
			zeroAll(out)
			return nil, fmt.Errorf("passphrase of custodian %s: %w", c.Name, err)
		}
	}
	return out, nil
}

func promptTwice(name string) ([]byte, error) {
	p1, err := hsm.ReadPIN(hsm.PINSource{Prompt: "Passphrase for " + name + "'s share: "})
	if err != nil {
		return nil, err
	}
	p2, err := hsm.ReadPIN(hsm.PINSource{Prompt: "Again: "})
	if err != nil {
		clear(p1)
		return nil, err
	}
	defer clear(p2)
	if !bytes.Equal(p1, p2) {
		clear(p1)
		return nil, fmt.Errorf("the two entries differ")
	}
	return p1, nil
}

// writeShares seals shares whose custodian has a passphrase and writes
// each to its custodian's file (mode 0600).
func (r *runner) writeShares(spec SplitSpec, shares []split.Share, passphrases [][]byte) error {
	for i, c := range spec.Custodians {
		s := shares[i]
		how := "not sealed"
		if passphrases[i] != nil {
			if err := s.Seal(passphrases[i]); err != nil {
				return fmt.Errorf("seal the share of %s: %w", c.Name, err)
			}
			how = "sealed with the custodian's passphrase"
		}
		if err := r.write(c.Share, s.Marshal(), true); err != nil {
			return err
		}
		r.step("  share %d of %d (threshold %d) for %s, %s; set %X", s.Index, s.Total, s.Threshold, c.Name, how, s.Set)
	}
	return nil
}

// readBackShares rebuilds the secret from the first threshold share files
// as written, so the ceremony proves the files, not its memory.
func (r *runner) readBackShares(purpose string, spec SplitSpec, passphrases [][]byte) ([]byte, error) {
	var shares []split.Share
	for i, c := range spec.Custodians[:spec.Threshold] {
		data, err := os.ReadFile(c.Share)
		if err != nil {
			return nil, fmt.Errorf("read back: %w", err)
		}
		s, err := split.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("read back %s: %w", c.Share, err)
		}
		if s.Sealed() {
			if err := s.Open(passphrases[i]); err != nil {
				return nil, fmt.Errorf("read back %s: %w", c.Share, err)
			}
		}
		shares = append(shares, s)
	}
	return split.Combine(purpose, shares)
}
