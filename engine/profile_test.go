package engine_test

import (
	"slices"
	"strings"
	"testing"

	"signerd/engine"
)

func TestLoadProfiles(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // error substring; "" means success
	}{
		{"empty document keeps built-ins", ``, ""},
		{"override one field", "profiles:\n  person-sign:\n    max_validity_days: 730\n", ""},
		{"new profile", "profiles:\n  tls:\n    usage: signing\n    key_types: [sm2, ecdsa-p256]\n    max_validity_days: 90\n    dns_names: true\n", ""},
		{"misspelt field", "profiles:\n  person-sign:\n    max_validty_days: 30\n", "max_validty_days"},
		{"new profile without usage", "profiles:\n  x:\n    key_types: [sm2]\n    max_validity_days: 1\n", `profile "x": usage ""`},
		{"bad key type", "profiles:\n  person-sign:\n    key_types: [rsa]\n", `key_types: "rsa"`},
		{"too long", "profiles:\n  person-sign:\n    max_validity_days: 5000\n", "max_validity_days 5000"},
		{"unknown subject attribute", "profiles:\n  person-sign:\n    required_subject: [EMAIL]\n", `"EMAIL"`},
		{"unknown EKU", "profiles:\n  person-sign:\n    ext_key_usage: [anything]\n", `unknown "anything"`},
		{"bad policy", "profiles:\n  person-sign:\n    policies: [not.an.oid]\n", "policies"},
		{"https CDP", "profiles:\n  person-sign:\n    crl_distribution_points: [ftp://x/crl]\n", "not an http or ldap URL"},
		{"unknown identity", "profiles:\n  person-sign:\n    identity: [driving-licence]\n", `unknown "driving-licence"`},
		{"required identity not allowed", "profiles:\n  device-sign:\n    required_identity: [passport]\n", "not listed in identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := engine.LoadProfiles([]byte(tt.doc))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("LoadProfiles = %v, want error containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) < 6 {
				t.Fatalf("%d profiles, built-ins missing", len(ps))
			}
		})
	}
	ps, _ := engine.LoadProfiles([]byte("profiles:\n  person-sign:\n    max_validity_days: 730\n"))
	p := ps["person-sign"]
	if p.MaxValidityDays != 730 || p.Usage != "signing" || !slices.Equal(p.KeyTypes, []string{"sm2"}) || len(p.ExtKeyUsage) != 2 {
		t.Fatalf("override lost the built-in's other fields: %+v", p)
	}
}
