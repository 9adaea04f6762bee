// Package revocation is the RFC 5280 CRLReason: the reasons a certificate
// is revoked for, by number and by name, shared by the engine that revokes,
// the ceremonies that sign a root's CRL and the API that reads an RA's
// reason.
package revocation

import (
	"fmt"
	"sort"
	"strings"
)

// Reason is an RFC 5280 CRLReason code (§5.3.1).
type Reason int

// The codes RFC 5280 defines; 7 is unused.
const (
	Unspecified          Reason = 0
	KeyCompromise        Reason = 1
	CACompromise         Reason = 2
	AffiliationChanged   Reason = 3
	Superseded           Reason = 4
	CessationOfOperation Reason = 5
	CertificateHold      Reason = 6
	RemoveFromCRL        Reason = 8
	PrivilegeWithdrawn   Reason = 9
	AACompromise         Reason = 10
)

var names = map[Reason]string{
	Unspecified: "unspecified", KeyCompromise: "keyCompromise", CACompromise: "cACompromise",
	AffiliationChanged: "affiliationChanged", Superseded: "superseded", CessationOfOperation: "cessationOfOperation",
	CertificateHold: "certificateHold", RemoveFromCRL: "removeFromCRL", PrivilegeWithdrawn: "privilegeWithdrawn",
	AACompromise: "aACompromise",
}

// String is the reason's RFC 5280 name, or its number if it has none.
func (r Reason) String() string {
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("reason %d", int(r))
}

// Revocable reports whether a certificate may be revoked for good with r:
// certificateHold is a hold (set by a hold, lifted by a restore), and
// removeFromCRL belongs to delta CRLs.
func (r Reason) Revocable() bool {
	_, known := names[r]
	return known && r != CertificateHold && r != RemoveFromCRL
}

// Parse returns the reason a certificate may be revoked for by its RFC 5280
// name (as Revocable).
func Parse(name string) (Reason, error) {
	for r, n := range names {
		if n == name && r.Revocable() {
			return r, nil
		}
	}
	var ok []string
	for r, n := range names {
		if r.Revocable() {
			ok = append(ok, n)
		}
	}
	sort.Strings(ok)
	return 0, fmt.Errorf("revocation reason %q: not one of %s", name, strings.Join(ok, ", "))
}
