package hsm

import (
	"fmt"
	"sort"

	"github.com/miekg/pkcs11"
)

// SignatureFormat is how a module encodes an SM2 signature.
type SignatureFormat int

const (
	// RawRS is r‖s, 32 bytes each (GM/T 0018 style).
	RawRS SignatureFormat = iota
	// DER is SEQUENCE { r INTEGER, s INTEGER }.
	DER
)

// CKMVendorSM2SignE is the sign-e mechanism our SoftHSM2 build adds
// (testdata/softhsm): CKM_VENDOR_DEFINED | "SM2" in ASCII. It takes a 32-byte
// e = SM3(Z‖M) and returns r‖s.
const CKMVendorSM2SignE = pkcs11.CKM_VENDOR_DEFINED | 0x534D32

// MechanismProfile says how one module exposes SM2. GM/T HSMs use
// vendor-defined PKCS#11 codes that differ per vendor (SPEC §3.2).
type MechanismProfile struct {
	Name string
	// KeyType is CKA_KEY_TYPE of SM2 keys: CKK_EC or a vendor code.
	KeyType uint
	// KeyGen is the key-pair generation mechanism.
	KeyGen uint
	// CurveParams: the public template carries CKA_EC_PARAMS = the SM2
	// curve OID. Modules with a vendor key type usually imply the curve.
	CurveParams bool
	// SignE is the mechanism that signs a precomputed e.
	SignE uint
	// Format of what SignE returns.
	Format SignatureFormat
}

// DefaultProfile matches the SoftHSM2 build in testdata/softhsm.
const DefaultProfile = "softhsm"

var presets = map[string]MechanismProfile{
	"softhsm": {Name: "softhsm", KeyType: pkcs11.CKK_EC, KeyGen: pkcs11.CKM_EC_KEY_PAIR_GEN,
		CurveParams: true, SignE: CKMVendorSM2SignE, Format: RawRS},
	// Codes published by other projects for these vendors' modules.
	"sansec": {Name: "sansec", KeyType: 0x80000004, KeyGen: 0x80008001, SignE: 0x80008104, Format: RawRS},
	"tass":   {Name: "tass", KeyType: 0x80000004, KeyGen: 0x80008001, SignE: 0x80008000, Format: DER},
	"luna":   {Name: "luna", KeyType: 0x80000016, KeyGen: 0x80000B20, SignE: 0x80000B21, Format: RawRS},
}

// Profile returns a built-in mechanism profile by name.
func Profile(name string) (MechanismProfile, error) {
	p, ok := presets[name]
	if !ok {
		return MechanismProfile{}, fmt.Errorf("unknown SM2 mechanism profile %q (built-in: %v)", name, ProfileNames())
	}
	return p, nil
}

// ProfileNames lists the built-in profiles.
func ProfileNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate checks a profile, such as one an operator wrote in config.
func (p MechanismProfile) Validate() error {
	switch {
	case p.Name == "":
		return fmt.Errorf("SM2 mechanism profile: name is empty")
	case p.KeyGen == 0 || p.SignE == 0:
		return fmt.Errorf("SM2 mechanism profile %q: key-gen and sign mechanisms are required", p.Name)
	case p.KeyType != pkcs11.CKK_EC && p.KeyType < pkcs11.CKK_VENDOR_DEFINED:
		return fmt.Errorf("SM2 mechanism profile %q: key type 0x%X is neither CKK_EC nor vendor-defined", p.Name, p.KeyType)
	case p.KeyType == pkcs11.CKK_EC && !p.CurveParams:
		return fmt.Errorf("SM2 mechanism profile %q: CKK_EC keys need the SM2 curve in CKA_EC_PARAMS", p.Name)
	case p.Format != RawRS && p.Format != DER:
		return fmt.Errorf("SM2 mechanism profile %q: unknown signature format %d", p.Name, p.Format)
	}
	return nil
}
