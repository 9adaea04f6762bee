package engine

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"

	"github.com/emmansun/gmsm/smx509"
	"go.yaml.in/yaml/v3"

	"signerd/lint"
)

// Profile is a kind of certificate the CA issues (SPEC §5.1).
type Profile struct {
	Name string `yaml:"-"`
	// Usage is "signing" (digitalSignature, nonRepudiation) or
	// "encryption" (keyEncipherment, dataEncipherment, keyAgreement; the
	// key may come from the KMC instead of a CSR).
	Usage           string   `yaml:"usage"`
	KeyTypes        []string `yaml:"key_types"`
	MaxValidityDays int      `yaml:"max_validity_days"`
	// RequiredSubject lists subject attributes the RA must fill in:
	// CN, O, OU, C, ST, L, serialNumber.
	RequiredSubject []string `yaml:"required_subject"`
	ExtKeyUsage     []string `yaml:"ext_key_usage"`
	Policies        []string `yaml:"policies"`
	CRLDistribution []string `yaml:"crl_distribution_points"`
	// FreshestCRL asks for the Freshest CRL extension naming the
	// certificate's shard's delta CRL, where the issuer has deltas.
	FreshestCRL bool     `yaml:"freshest_crl"`
	OCSP        []string `yaml:"ocsp"`
	CAIssuers   []string `yaml:"ca_issuers"`
	// Identity lists the GM/T 0015 identity extensions a request may carry
	// (resident-id, passport, social-insurance, credit-code);
	// RequiredIdentity those it must.
	Identity         []string `yaml:"identity"`
	RequiredIdentity []string `yaml:"required_identity"`
	DNSNames         bool     `yaml:"dns_names"`
	Emails           bool     `yaml:"emails"`
}

// Key types a profile may allow.
const (
	KeySM2       = "sm2"
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
)

// identityOIDs are the GM/T 0015-2023 identity extensions. Each carries the
// number as a PrintableString.
var identityOIDs = map[string]asn1.ObjectIdentifier{
	"resident-id":      {1, 2, 156, 10260, 4, 1, 1, 1},
	"passport":         {1, 2, 156, 10260, 4, 1, 1, 2},
	"social-insurance": {1, 2, 156, 10260, 4, 1, 2},
	"credit-code":      {1, 2, 156, 10260, 4, 4},
}

var extKeyUsages = map[string]asn1.ObjectIdentifier{
	"serverAuth":      {1, 3, 6, 1, 5, 5, 7, 3, 1},
	"clientAuth":      {1, 3, 6, 1, 5, 5, 7, 3, 2},
	"codeSigning":     {1, 3, 6, 1, 5, 5, 7, 3, 3},
	"emailProtection": {1, 3, 6, 1, 5, 5, 7, 3, 4},
	"timeStamping":    {1, 3, 6, 1, 5, 5, 7, 3, 8},
	"cmcRA":           RACertificateEKU,
}

var subjectAttributes = []string{"CN", "O", "OU", "C", "ST", "L", "serialNumber"}

// BuiltinProfiles are the profiles a CA has without configuration: person,
// organization and device, each as a signing and an encryption certificate
// (GM/T 0015 dual certificates share the subject DN).
func BuiltinProfiles() map[string]*Profile {
	mk := func(name, usage string, subject, eku, identity []string) *Profile {
		return &Profile{Name: name, Usage: usage, KeyTypes: []string{KeySM2}, MaxValidityDays: 365,
			RequiredSubject: subject, ExtKeyUsage: eku, Identity: identity}
	}
	personID := []string{"resident-id", "passport", "social-insurance"}
	orgID := []string{"credit-code"}
	ps := map[string]*Profile{
		"person-sign":       mk("person-sign", "signing", []string{"CN"}, []string{"clientAuth", "emailProtection"}, personID),
		"person-enc":        mk("person-enc", "encryption", []string{"CN"}, nil, personID),
		"organization-sign": mk("organization-sign", "signing", []string{"CN", "O"}, []string{"clientAuth"}, orgID),
		"organization-enc":  mk("organization-enc", "encryption", []string{"CN", "O"}, nil, orgID),
		"device-sign":       mk("device-sign", "signing", []string{"CN"}, []string{"serverAuth", "clientAuth"}, nil),
		"device-enc":        mk("device-enc", "encryption", []string{"CN"}, nil, nil),
	}
	// ra-sign certifies an RA's own request-signing key (docs/api.md,
	// Signed RA requests): its EKU is cmcRA alone, so no citizen's,
	// organization's or device's certificate passes for an RA's.
	ps["ra-sign"] = mk("ra-sign", "signing", []string{"CN", "O"}, []string{"cmcRA"}, orgID)
	ps["person-sign"].Emails = true
	ps["person-enc"].Emails = true
	ps["device-sign"].DNSNames = true
	ps["device-enc"].DNSNames = true
	return ps
}

// LoadProfiles returns the built-in profiles with the YAML document's
// profiles laid over them: a named built-in keeps every field the document
// does not set, a new name starts empty. Every profile is validated.
//
//	profiles:
//	  person-sign:
//	    crl_distribution_points: [http://crl.example.cn/issuing.crl]
//	  server-tls:
//	    usage: signing
//	    ...
func LoadProfiles(doc []byte) (map[string]*Profile, error) {
	// First pass is strict, so a misspelt field is an error, not a default.
	var strict struct {
		Profiles map[string]Profile `yaml:"profiles"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&strict); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	var nodes struct {
		Profiles map[string]yaml.Node `yaml:"profiles"`
	}
	if err := yaml.Unmarshal(doc, &nodes); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	ps := BuiltinProfiles()
	for name, node := range nodes.Profiles {
		p := ps[name]
		if p == nil {
			p = &Profile{}
		}
		if err := node.Decode(p); err != nil {
			return nil, fmt.Errorf("profile %q: %w", name, err)
		}
		p.Name = name
		ps[name] = p
	}
	names := make([]string, 0, len(ps))
	for name := range ps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ps[name].Validate(); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// Validate checks that every field of p has a meaning.
func (p *Profile) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("profile %q: "+format, append([]any{p.Name}, args...)...)
	}
	if p.Name == "" {
		return bad("no name")
	}
	if isInternalProfile(p.Name) {
		return bad("names starting %q are signerd's own profiles", internalProfilePrefix)
	}
	if p.Usage != "signing" && p.Usage != "encryption" {
		return bad("usage %q: must be signing or encryption", p.Usage)
	}
	if len(p.KeyTypes) == 0 {
		return bad("key_types: at least one of sm2, ecdsa-p256, ecdsa-p384")
	}
	for _, k := range p.KeyTypes {
		if k != KeySM2 && k != KeyECDSAP256 && k != KeyECDSAP384 {
			return bad("key_types: %q is not sm2, ecdsa-p256 or ecdsa-p384", k)
		}
	}
	if p.MaxValidityDays < 1 || p.MaxValidityDays > 3650 {
		return bad("max_validity_days %d: must be 1..3650", p.MaxValidityDays)
	}
	for _, a := range p.RequiredSubject {
		if !slices.Contains(subjectAttributes, a) {
			return bad("required_subject: %q is not one of %v", a, subjectAttributes)
		}
	}
	for _, e := range p.ExtKeyUsage {
		if extKeyUsages[e] == nil {
			return bad("ext_key_usage: unknown %q", e)
		}
	}
	for _, o := range p.Policies {
		if _, err := smx509.ParseOID(o); err != nil {
			return bad("policies: %q: %v", o, err)
		}
	}
	for field, urls := range map[string][]string{"crl_distribution_points": p.CRLDistribution, "ocsp": p.OCSP, "ca_issuers": p.CAIssuers} {
		for _, u := range urls {
			if v, err := url.Parse(u); err != nil || (v.Scheme != "http" && v.Scheme != "ldap") || v.Host == "" {
				return bad("%s: %q is not an http or ldap URL", field, u)
			}
		}
	}
	for _, id := range p.Identity {
		if identityOIDs[id] == nil {
			return bad("identity: unknown %q (resident-id, passport, social-insurance, credit-code)", id)
		}
	}
	for _, id := range p.RequiredIdentity {
		if !slices.Contains(p.Identity, id) {
			return bad("required_identity: %q is not listed in identity", id)
		}
	}
	return nil
}

// LintUsage is the lint package's name for the profile's usage.
func (p *Profile) LintUsage() lint.Usage {
	switch p.Usage {
	case "encryption":
		return lint.Encryption
	case usageAuditLog:
		return lint.AuditLog
	case usageOCSPSigning:
		return lint.OCSPSigning
	}
	return lint.Signing
}
