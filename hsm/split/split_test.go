package split_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"signerd/hsm/split"
)

var custodians = []string{"Li Na", "Wang Fang", "Zhang Wei", "Liu Yang", "Chen Jie"}

func mustSplit(t *testing.T, secret []byte) []split.Share {
	t.Helper()
	shares, err := split.Split(split.KEK, secret, 3, custodians)
	if err != nil {
		t.Fatal(err)
	}
	return shares
}

func TestAnyThresholdOfSharesCombine(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares := mustSplit(t, secret)
	n := 0
	for i := range shares {
		for j := i + 1; j < len(shares); j++ {
			for k := j + 1; k < len(shares); k++ {
				got, err := split.Combine(split.KEK, []split.Share{shares[k], shares[i], shares[j]})
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("shares %d,%d,%d: %q, %v", i+1, j+1, k+1, got, err)
				}
				n++
			}
		}
	}
	if n != 10 {
		t.Fatalf("tried %d subsets, want 10", n)
	}
	if got, err := split.Combine(split.KEK, shares); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("all five: %v", err)
	}
}

func TestCombineRefuses(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares := mustSplit(t, secret)
	other := mustSplit(t, secret)
	flipped := shares[1]
	flipped.Data = bytes.Clone(flipped.Data)
	flipped.Data[0] ^= 1
	for _, tc := range []struct {
		name    string
		purpose string
		shares  []split.Share
		want    string
	}{
		{"none", split.KEK, nil, "no shares"},
		{"too few", split.KEK, shares[:2], "3 are needed"},
		{"repeated", split.KEK, []split.Share{shares[0], shares[1], shares[1]}, "given twice"},
		{"other split", split.KEK, []split.Share{shares[0], shares[1], other[2]}, "another split"},
		{"wrong purpose", split.PIN, shares[:3], "want a token-user-pin"},
		{"altered share", split.KEK, []split.Share{shares[0], flipped, shares[2]}, "at least one is wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := split.Combine(tc.purpose, tc.shares)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Combine = %q, %v; want error containing %q", got, err, tc.want)
			}
		})
	}
}

func TestSplitRefuses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		purpose    string
		secret     []byte
		threshold  int
		custodians []string
	}{
		{"threshold 1", split.PIN, []byte("x"), 1, custodians},
		{"threshold above n", split.PIN, []byte("x"), 6, custodians},
		{"empty secret", split.PIN, nil, 3, custodians},
		{"unknown purpose", "password", []byte("x"), 3, custodians},
		{"repeated custodian", split.PIN, []byte("x"), 2, []string{"a", "a", "b"}},
		{"multi-line custodian", split.PIN, []byte("x"), 2, []string{"a", "b\nPurpose: kek"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := split.Split(tc.purpose, tc.secret, tc.threshold, tc.custodians); err == nil {
				t.Fatal("Split succeeded")
			}
		})
	}
}

func TestMarshalParse(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares := mustSplit(t, secret)
	var parsed []split.Share
	for _, s := range shares[2:] {
		data := s.Marshal()
		for _, want := range []string{"Custodian: " + s.Custodian, "Threshold: 3", "Purpose: key-backup-kek"} {
			if !bytes.Contains(data, []byte(want)) {
				t.Fatalf("share file lacks %q:\n%s", want, data)
			}
		}
		p, err := split.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		parsed = append(parsed, p)
	}
	if got, err := split.Combine(split.KEK, parsed); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("parsed shares: %v", err)
	}
	for name, data := range map[string]string{
		"not PEM":        "hello",
		"other PEM":      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"bad threshold":  strings.Replace(string(shares[0].Marshal()), "Threshold: 3", "Threshold: 9", 1),
		"bad index":      strings.Replace(string(shares[0].Marshal()), "Share: 1 of 5", "Share: 0 of 5", 1),
		"trailing bytes": string(shares[0].Marshal()) + "more",
	} {
		if _, err := split.Parse([]byte(data)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestSealOpen(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	shares := mustSplit(t, secret)
	pass := []byte("correct horse battery")
	if err := shares[0].Seal([]byte("short")); err == nil {
		t.Fatal("a 5-character passphrase was accepted")
	}
	if err := shares[0].Seal(pass); err != nil {
		t.Fatal(err)
	}
	s, err := split.Parse(shares[0].Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Sealed() {
		t.Fatal("parsed share is not sealed")
	}
	if _, err := split.Combine(split.KEK, []split.Share{s, shares[1], shares[2]}); err == nil {
		t.Fatal("a sealed share combined")
	}
	moved := s
	moved.Index = 4 // the seal binds the share's identity
	moved.Data = bytes.Clone(s.Data)
	if err := moved.Open(pass); !errors.Is(err, split.ErrPassphrase) {
		t.Fatalf("share with an altered index opened: %v", err)
	}
	wrong := s
	wrong.Data = bytes.Clone(s.Data)
	if err := wrong.Open([]byte("incorrect horse battery")); !errors.Is(err, split.ErrPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := s.Open(pass); err != nil {
		t.Fatal(err)
	}
	if got, err := split.Combine(split.KEK, []split.Share{s, shares[1], shares[2]}); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("opened share: %v", err)
	}
}
