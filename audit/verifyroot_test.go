package audit_test

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/audit"
	"signerd/hsm"
)

// caShape says how a software CA for a bundle deviates from a sound one:
// validity windows (relative to now, when the bundle's seals are made)
// and the names each certificate gives its issuer.
type caShape struct {
	rootFrom, rootTo time.Duration
	issFrom, issTo   time.Duration
	// issuerNamedAs and auditIssuerNamedAs, if set, are the issuer names
	// written into the issuing CA's and the audit key's certificates,
	// signed by the right key all the same.
	issuerNamedAs, auditIssuerNamedAs string
}

// soundShape is a CA without deviations: the root valid for 20 years and
// the issuing CA for 10, both from an hour ago.
var soundShape = caShape{rootFrom: -time.Hour, rootTo: 20 * 365 * 24 * time.Hour, issFrom: -time.Hour, issTo: 10 * 365 * 24 * time.Hour}

// newShapedCA is a softCA with the deviations of shape.
func newShapedCA(t testing.TB, shape caShape) *softCA {
	t.Helper()
	key := func() *sm2.PrivateKey {
		k, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	mk := func(tmpl, parent *smx509.Certificate, pub any, signer *sm2.PrivateKey) *smx509.Certificate {
		der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := smx509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	ca := func(cn string, serial int64, from, to time.Duration) *smx509.Certificate {
		return &smx509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(from), NotAfter: now.Add(to), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign}
	}
	named := func(c *smx509.Certificate, cn string) *smx509.Certificate {
		if cn == "" {
			return c
		}
		alias := *c
		alias.Subject, alias.RawSubject = pkix.Name{CommonName: cn}, nil
		return &alias
	}
	rootKey, issKey, auditKey := key(), key(), key()
	rootTmpl := ca("Root", 1, shape.rootFrom, shape.rootTo)
	root := mk(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	iss := mk(ca("Issuing", 2, shape.issFrom, shape.issTo), named(root, shape.issuerNamedAs), issKey.Public(), rootKey)
	id := hsm.KeyID(&auditKey.PublicKey)
	cert := mk(&smx509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: audit.KeySubjectPrefix + " test"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: audit.KeyUsage, SubjectKeyId: id},
		named(iss, shape.auditIssuerNamedAs), auditKey.Public(), issKey)
	return &softCA{root: root, auditKey: auditKey, key: audit.Key{KeyID: id, Certificate: cert.Raw, Issuer: iss.Raw},
		issKey: issKey, iss: iss}
}

// TestVerifyAgainstRoot: a bundle is OK only against a root, and only if
// its audit key's issuing CA chains to that root by name and signature,
// and the issuing CA and the root were valid when each seal was made.
func TestVerifyAgainstRoot(t *testing.T) {
	sound := soundShape
	with := func(edit func(*caShape)) caShape {
		s := sound
		edit(&s)
		return s
	}
	tests := []struct {
		name     string
		shape    caShape
		noRoot   bool
		problem  string // "" means none
		anchored bool
	}{
		{"sound, against its root", sound, false, "", true},
		{"sound, without a root", sound, true, "", false},
		{"issuing CA expired before the seals", with(func(s *caShape) { s.issTo = -time.Minute }), false,
			`outside the validity of issuing CA "CN=Issuing"`, true},
		{"issuing CA not yet valid at the seals", with(func(s *caShape) { s.issFrom = time.Hour }), false,
			`outside the validity of issuing CA "CN=Issuing"`, true},
		{"issuing CA expired, without a root", with(func(s *caShape) { s.issTo = -time.Minute }), true,
			`outside the validity of issuing CA "CN=Issuing"`, false},
		{"root expired before the seals", with(func(s *caShape) { s.rootTo = -time.Minute }), false,
			`outside the validity of root "CN=Root"`, true},
		{"issuing CA names another issuer than the root", with(func(s *caShape) { s.issuerNamedAs = "Other Root" }), false,
			`does not chain to root "CN=Root": it names issuer "CN=Other Root"`, false},
		{"audit key certificate names another issuer", with(func(s *caShape) { s.auditIssuerNamedAs = "Other Issuing" }), false,
			`names issuer "CN=Other Issuing", not "CN=Issuing" beside it`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newShapedCA(t, tt.shape)
			opts := audit.Options{Root: ca.root}
			if tt.noRoot {
				opts.Root = nil
			}
			rep := audit.Verify(ca.bundle(t, 4), opts)
			found := tt.problem == ""
			for _, p := range rep.Problems {
				found = found || strings.Contains(p.Message, tt.problem)
			}
			if !found || (tt.problem == "") != rep.Consistent() || rep.Anchored != tt.anchored {
				t.Fatalf("consistent %v, anchored %v, problems %v; want problem %q, anchored %v",
					rep.Consistent(), rep.Anchored, rep.Problems, tt.problem, tt.anchored)
			}
			if wantOK := tt.problem == "" && !tt.noRoot; rep.OK() != wantOK {
				t.Fatalf("OK() = %v, want %v (OK only against a root, with no problem)", rep.OK(), wantOK)
			}
		})
	}
}
