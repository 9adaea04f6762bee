// Package split divides a secret — a token's user PIN, a key-backup KEK —
// m of n among custodians with Shamir's secret sharing (SPEC §4.3), and
// reads and writes each custodian's share as a self-describing PEM block.
//
// Every share carries the split's random set ID and a commitment to the
// secret, so shares of different splits are refused before combining, and
// a wrong or altered share is caught after: a token never sees a PIN that
// m honest shares did not make, so custodians cannot lock it by accident.
package split

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emmansun/gmsm/sm3"
	"github.com/hashicorp/vault/shamir"
)

// What a secret is; a share of one is never taken for the other.
const (
	PIN = "token-user-pin"
	KEK = "key-backup-kek"
)

// MaxShares is the scheme's limit: share x-coordinates are one byte.
const MaxShares = 255

// Share is one custodian's part of a secret.
type Share struct {
	Purpose   string // PIN or KEK
	Set       []byte // random, the same in every share of one split
	Index     int    // 1..Total, for people ("share 2 of 5")
	Threshold int
	Total     int
	Custodian string
	Check     []byte // commitment to the secret: SM3(domain ‖ Set ‖ secret)
	Data      []byte // the Shamir share, or sealed under a passphrase
	// Protection names how Data is sealed; empty when it is not.
	Protection string
}

// Split divides secret among custodians (one share each); any threshold
// of them recombine it, fewer learn nothing about it.
func Split(purpose string, secret []byte, threshold int, custodians []string) ([]Share, error) {
	n := len(custodians)
	switch {
	case purpose != PIN && purpose != KEK:
		return nil, fmt.Errorf("split: unknown purpose %q", purpose)
	case len(secret) == 0:
		return nil, errors.New("split: secret is empty")
	case threshold < 2:
		return nil, fmt.Errorf("split: threshold %d, want at least 2", threshold)
	case n < threshold || n > MaxShares:
		return nil, fmt.Errorf("split: %d custodians for threshold %d, want %d..%d", n, threshold, threshold, MaxShares)
	}
	seen := map[string]bool{}
	for _, c := range custodians {
		if c == "" || strings.ContainsAny(c, "\r\n") || seen[c] {
			return nil, fmt.Errorf("split: custodian names must be non-empty, one line and distinct (%q)", c)
		}
		seen[c] = true
	}
	set := make([]byte, 8)
	if _, err := rand.Read(set); err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	parts, err := shamir.Split(secret, n, threshold)
	if err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	check := commitment(purpose, set, secret)
	shares := make([]Share, n)
	for i, p := range parts {
		shares[i] = Share{Purpose: purpose, Set: set, Index: i + 1, Threshold: threshold, Total: n,
			Custodian: custodians[i], Check: check, Data: p}
	}
	return shares, nil
}

// Combine rebuilds the secret from at least Threshold shares of one split.
// Fewer shares, shares of other splits or purposes, repeats, and a set that
// does not reproduce the committed secret are all refused.
func Combine(purpose string, shares []Share) ([]byte, error) {
	if len(shares) == 0 {
		return nil, errors.New("combine: no shares")
	}
	first := shares[0]
	parts := make([][]byte, 0, len(shares))
	seen := map[int]bool{}
	for _, s := range shares {
		switch {
		case s.Sealed():
			return nil, fmt.Errorf("combine: share %d (%s) is sealed; open it with its passphrase first", s.Index, s.Custodian)
		case s.Purpose != purpose:
			return nil, fmt.Errorf("combine: share %d is of a %s, want a %s", s.Index, s.Purpose, purpose)
		case !bytes.Equal(s.Set, first.Set) || !bytes.Equal(s.Check, first.Check) ||
			s.Threshold != first.Threshold || s.Total != first.Total:
			return nil, fmt.Errorf("combine: share %d (%s) is from another split (set %X, not %X)", s.Index, s.Custodian, s.Set, first.Set)
		case seen[s.Index]:
			return nil, fmt.Errorf("combine: share %d given twice", s.Index)
		}
		seen[s.Index] = true
		parts = append(parts, s.Data)
	}
	if len(parts) < first.Threshold {
		return nil, fmt.Errorf("combine: %d of %d shares given; %d are needed", len(parts), first.Total, first.Threshold)
	}
	secret, err := shamir.Combine(parts)
	if err != nil {
		return nil, fmt.Errorf("combine: %w", err)
	}
	if subtle.ConstantTimeCompare(commitment(purpose, first.Set, secret), first.Check) != 1 {
		clear(secret)
		return nil, errors.New("combine: the shares do not rebuild the secret they were split from: at least one is wrong or altered")
	}
	return secret, nil
}

func commitment(purpose string, set, secret []byte) []byte {
	h := sm3.New()
	h.Write([]byte("signerd split commitment v1\x00" + purpose + "\x00"))
	h.Write(set)
	h.Write(secret)
	return h.Sum(nil)
}

const pemType = "SIGNERD SECRET SHARE"

// Marshal encodes s as a PEM block whose headers say, for the custodian
// and the ceremony, what the share is.
func (s Share) Marshal() []byte {
	h := map[string]string{
		"Purpose":   s.Purpose,
		"Set":       hex.EncodeToString(s.Set),
		"Share":     fmt.Sprintf("%d of %d", s.Index, s.Total),
		"Threshold": strconv.Itoa(s.Threshold),
		"Custodian": s.Custodian,
		"Check":     hex.EncodeToString(s.Check),
	}
	if s.Sealed() {
		h["Protection"] = s.Protection
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Headers: h, Bytes: s.Data})
}

// Parse reads one share written by Marshal.
func Parse(data []byte) (Share, error) {
	b, rest := pem.Decode(data)
	if b == nil || b.Type != pemType {
		return Share{}, fmt.Errorf("not a %s PEM block", pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return Share{}, errors.New("trailing data after the share")
	}
	h := b.Headers
	s := Share{Purpose: h["Purpose"], Custodian: h["Custodian"], Data: b.Bytes, Protection: h["Protection"]}
	var err error
	bad := func(field string) (Share, error) {
		return Share{}, fmt.Errorf("share header %s: %q is malformed", field, h[field])
	}
	if s.Set, err = hex.DecodeString(h["Set"]); err != nil || len(s.Set) != 8 {
		return bad("Set")
	}
	if s.Check, err = hex.DecodeString(h["Check"]); err != nil || len(s.Check) != sm3.Size {
		return bad("Check")
	}
	if _, err := fmt.Sscanf(h["Share"], "%d of %d", &s.Index, &s.Total); err != nil || s.Index < 1 || s.Index > s.Total || s.Total > MaxShares {
		return bad("Share")
	}
	if s.Threshold, err = strconv.Atoi(h["Threshold"]); err != nil || s.Threshold < 2 || s.Threshold > s.Total {
		return bad("Threshold")
	}
	if len(s.Data) < 2 {
		return Share{}, errors.New("share data is too short")
	}
	return s, nil
}
