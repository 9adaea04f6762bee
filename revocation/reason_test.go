package revocation

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Reason
		ok   bool
	}{
		{"keyCompromise", KeyCompromise, true}, {"unspecified", Unspecified, true}, {"aACompromise", AACompromise, true},
		{"privilegeWithdrawn", PrivilegeWithdrawn, true}, {"cessationOfOperation", CessationOfOperation, true},
		{"certificateHold", 0, false}, {"removeFromCRL", 0, false}, {"KeyCompromise", 0, false}, {"", 0, false}, {"1", 0, false},
	} {
		got, err := Parse(tc.name)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.name {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.name)
		}
	}
	for _, r := range []Reason{-1, 7, 11} {
		if r.Revocable() {
			t.Errorf("%d revocable", r)
		}
	}
}
