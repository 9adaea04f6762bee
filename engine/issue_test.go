package engine_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/store"
)

var ra = store.Actor{UID: 1001, GID: 1001, PID: 4242, Role: "ra"}

const profilesYAML = `
profiles:
  person-sign:
    crl_distribution_points: [http://crl.example.cn/issuing.crl]
    ca_issuers: [http://ca.example.cn/issuing.cer]
    ocsp: [http://ocsp.example.cn]
    policies: [1.2.156.112559.1.1.1]
    required_identity: [resident-id]
  person-enc:
    crl_distribution_points: [http://crl.example.cn/issuing.crl]
`

func issue(t *testing.T, e *engine.Engine, req engine.Request) *store.Certificate {
	t.Helper()
	c, err := e.Issue(context.Background(), ra, req)
	if err != nil {
		t.Fatalf("issue %s: %v", req.ID, err)
	}
	return c
}

// verifyChain checks c with gmsm up to the root and with openssl verify.
func verifyChain(t *testing.T, ca *enginetest.CA, ders ...[]byte) {
	t.Helper()
	roots, inter := smx509.NewCertPool(), smx509.NewCertPool()
	roots.AddCert(ca.Root)
	inter.AddCert(ca.Cert)
	for _, der := range ders {
		c, err := smx509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(smx509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []smx509.ExtKeyUsage{smx509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("gmsm verify %x: %v", c.SerialNumber, err)
		}
	}
	for _, der := range ders {
		ca.OpenSSLVerify(t, der)
	}
}

func TestIssueFollowsProfile(t *testing.T) { onEachStore(t, testIssueFollowsProfile) }

func testIssueFollowsProfile(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	profiles, err := engine.LoadProfiles([]byte(profilesYAML))
	if err != nil {
		t.Fatal(err)
	}
	e := ca.Engine(t, se.Open(t), engine.Config{Profiles: profiles})
	subject := engine.Subject{CommonName: "张三", Organization: "北京市政务服务中心", Country: "CN"}
	tests := []struct {
		profile  string
		kmc      bool // key from the KMC instead of a CSR
		identity map[string]string
		dns      []string
		ku       smx509.KeyUsage
		eku      []smx509.ExtKeyUsage
		cdp      bool
	}{
		{profile: "person-sign", identity: map[string]string{"resident-id": "11010519491231002X"},
			ku:  smx509.KeyUsageDigitalSignature | smx509.KeyUsageContentCommitment,
			eku: []smx509.ExtKeyUsage{smx509.ExtKeyUsageClientAuth, smx509.ExtKeyUsageEmailProtection}, cdp: true},
		{profile: "person-enc", kmc: true, ku: smx509.KeyUsageKeyEncipherment | smx509.KeyUsageDataEncipherment | smx509.KeyUsageKeyAgreement, cdp: true},
		{profile: "organization-sign", identity: map[string]string{"credit-code": "91110000802100433B"},
			ku: smx509.KeyUsageDigitalSignature | smx509.KeyUsageContentCommitment, eku: []smx509.ExtKeyUsage{smx509.ExtKeyUsageClientAuth}},
		{profile: "organization-enc", kmc: true, ku: smx509.KeyUsageKeyEncipherment | smx509.KeyUsageDataEncipherment | smx509.KeyUsageKeyAgreement},
		{profile: "device-sign", dns: []string{"www.gov.example.cn"}, ku: smx509.KeyUsageDigitalSignature | smx509.KeyUsageContentCommitment,
			eku: []smx509.ExtKeyUsage{smx509.ExtKeyUsageServerAuth, smx509.ExtKeyUsageClientAuth}},
		{profile: "device-enc", kmc: true, ku: smx509.KeyUsageKeyEncipherment | smx509.KeyUsageDataEncipherment | smx509.KeyUsageKeyAgreement},
	}
	var ders [][]byte
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			key, csr := enginetest.NewCSR(t)
			req := engine.Request{ID: "req-" + tt.profile, Profile: tt.profile, Subject: subject, CSR: csr,
				Identity: tt.identity, DNSNames: tt.dns}
			if tt.kmc {
				req.CSR = nil
				req.PublicKey, _ = smx509.MarshalPKIXPublicKey(&key.PublicKey)
			}
			rec := issue(t, e, req)
			c, err := smx509.ParseCertificate(rec.DER)
			if err != nil {
				t.Fatal(err)
			}
			if !c.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
				t.Error("certificate does not hold the applicant's key")
			}
			if c.Subject.CommonName != subject.CommonName || c.Subject.Organization[0] != subject.Organization {
				t.Errorf("subject %v, want the vetted subject", c.Subject)
			}
			if c.KeyUsage != tt.ku {
				t.Errorf("key usage %b, want %b", c.KeyUsage, tt.ku)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.eku) {
				t.Errorf("EKU %v, want %v", c.ExtKeyUsage, tt.eku)
			}
			if c.IsCA || c.KeyUsage&(smx509.KeyUsageCertSign|smx509.KeyUsageCRLSign) != 0 {
				t.Error("end-entity certificate may sign certificates")
			}
			if !bytes.Equal(c.SubjectKeyId, hsm.KeyID(&key.PublicKey)) || !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Errorf("SKI %x / AKI %x wrong", c.SubjectKeyId, c.AuthorityKeyId)
			}
			if got := c.NotAfter.Sub(c.NotBefore).Hours(); got < 365*24-1 || got > 365*24 {
				t.Errorf("validity %v hours, want one year", got)
			}
			if tt.cdp != (len(c.CRLDistributionPoints) == 1) {
				t.Errorf("CRL distribution points %v", c.CRLDistributionPoints)
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNS names %v, want %v", c.DNSNames, tt.dns)
			}
			for kind, want := range tt.identity {
				if got := identityValue(t, c, kind); got != want {
					t.Errorf("identity %s = %q, want %q", kind, got, want)
				}
			}
			if tt.profile == "person-sign" {
				if !slices.Equal(c.IssuingCertificateURL, []string{"http://ca.example.cn/issuing.cer"}) ||
					!slices.Equal(c.OCSPServer, []string{"http://ocsp.example.cn"}) || len(c.Policies) != 1 {
					t.Errorf("AIA %v / OCSP %v / policies %v not from the profile", c.IssuingCertificateURL, c.OCSPServer, c.Policies)
				}
			}
			if rec.Status != store.StatusGood || rec.Profile != tt.profile || rec.Issuer != ca.Issuer.ID() {
				t.Errorf("record %+v", rec)
			}
			ders = append(ders, rec.DER)
		})
	}
	verifyChain(t, ca, ders...)
	validityEncoding(t, ders[0])
}

var identityOIDs = map[string]asn1.ObjectIdentifier{
	"resident-id": {1, 2, 156, 10260, 4, 1, 1, 1},
	"credit-code": {1, 2, 156, 10260, 4, 4},
}

func identityValue(t *testing.T, c *smx509.Certificate, kind string) string {
	t.Helper()
	for _, ext := range c.Extensions {
		if ext.Id.Equal(identityOIDs[kind]) {
			var v string
			if _, err := asn1.Unmarshal(ext.Value, &v); err != nil {
				t.Fatalf("identity %s: %v", kind, err)
			}
			return v
		}
	}
	return ""
}

// validityEncoding checks the certificate's times are UTCTime (tag 23), as
// RFC 5280 wants before 2050, by reading the TBS with openssl.
func validityEncoding(t *testing.T, der []byte) {
	t.Helper()
	path := enginetest.WritePEM(t, t.TempDir(), "c.pem", "CERTIFICATE", der)
	out, err := enginetest.OpenSSL(t, "asn1parse", "-in", path)
	if err != nil {
		t.Fatalf("asn1parse: %v\n%s", err, out)
	}
	if strings.Count(out, "UTCTIME") != 2 || strings.Contains(out, "GENERALIZEDTIME") {
		t.Errorf("validity not encoded as two UTCTimes:\n%s", out)
	}
}
