package ceremony

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
// each to its custodian's file (mode 0600), then syncs their folders so
// the files outlast a crash. written lists the files this run created
// (those whose exclusive open succeeded: never a file someone else put at
// a share's path), also on failure, for a caller that must take them back.
func (r *runner) writeShares(spec SplitSpec, shares []split.Share, passphrases [][]byte) (written []string, err error) {
	for i, c := range spec.Custodians {
		s := shares[i]
		how := "not sealed"
		if passphrases[i] != nil {
			if err := s.Seal(passphrases[i]); err != nil {
				return written, fmt.Errorf("seal the share of %s: %w", c.Name, err)
			}
			how = "sealed with the custodian's passphrase"
		}
		created, err := r.create(c.Share, s.Marshal(), true)
		if created {
			written = append(written, c.Share) // also when the write then failed
		}
		if err != nil {
			return written, err
		}
		r.step("  share %d of %d (threshold %d) for %s, %s; set %X", s.Index, s.Total, s.Threshold, c.Name, how, s.Set)
	}
	synced := map[string]bool{}
	for _, path := range written {
		dir := filepath.Dir(path)
		if synced[dir] {
			continue
		}
		synced[dir] = true
		if err := syncDir(dir); err != nil {
			return written, fmt.Errorf("sync the folder of %s: %w", path, err)
		}
	}
	return written, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkSharesWritten reads back every share file and proves it: its bytes
// are the share as sealed, a sealed one opens with its custodian's
// passphrase, and the shares read back rebuild secret, both the first
// threshold of them and the last.
func (r *runner) checkSharesWritten(purpose string, spec SplitSpec, passphrases [][]byte, secret []byte) error {
	back, err := readShares(spec.Custodians, passphrases)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range back {
			clear(s.Data)
		}
	}()
	n, m := len(back), spec.Threshold
	for _, subset := range [][]split.Share{back[:m], back[n-m:]} {
		rebuilt, err := split.Combine(purpose, append([]split.Share(nil), subset...))
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		same := bytes.Equal(rebuilt, secret)
		clear(rebuilt)
		if !same {
			return errors.New("read back: the share files rebuild another secret")
		}
	}
	r.step("checked: all %d share files read back; the first %d and the last %d rebuild the secret", n, m, m)
	return nil
}

// removeShares takes back share files a failed ceremony created, so that
// nothing refers to a secret no token holds and the ceremony can run again.
// A path that no longer names the file the run created (replaced since)
// is left as it is.
func (r *runner) removeShares(paths []string) {
	for _, p := range paths {
		if !r.createdHere(p) {
			r.step("  left %s: not the file this ceremony created", p)
			continue
		}
		if err := os.Remove(p); err != nil {
			r.step("  could not remove %s: %v; remove it before running the ceremony again", p, err)
			continue
		}
		r.step("  removed %s", p)
	}
}

// readBackShares rebuilds the secret from the first threshold share files
// as written, so the ceremony proves the files, not its memory.
func (r *runner) readBackShares(purpose string, spec SplitSpec, passphrases [][]byte) ([]byte, error) {
	shares, err := readShares(spec.Custodians[:spec.Threshold], passphrases)
	if err != nil {
		return nil, err
	}
	return split.Combine(purpose, shares)
}

// readShares reads the share files of custodians as written, opening a
// sealed one with its custodian's passphrase (passphrases[i] is
// custodians[i]'s). On an error, the shares read so far are cleared.
func readShares(custodians []Custodian, passphrases [][]byte) ([]split.Share, error) {
	var shares []split.Share
	for i, c := range custodians {
		s, err := readShare(c.Share, passphrases[i])
		if err != nil {
			for _, s := range shares {
				clear(s.Data)
			}
			return nil, err
		}
		shares = append(shares, s)
	}
	return shares, nil
}

func readShare(path string, passphrase []byte) (split.Share, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return split.Share{}, fmt.Errorf("read back: %w", err)
	}
	s, err := split.Parse(data)
	if err != nil {
		return split.Share{}, fmt.Errorf("read back %s: %w", path, err)
	}
	if s.Sealed() {
		if err := s.Open(passphrase); err != nil {
			return split.Share{}, fmt.Errorf("read back %s: %w", path, err)
		}
	}
	return s, nil
}
