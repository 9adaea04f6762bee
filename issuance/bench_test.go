package issuance_test

import (
	"context"
	"crypto/x509/pkix"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/lint"
)

// BenchmarkPrepareIssueCertificate measures signerd's own CPU for one
// end-entity certificate in issuance: building and linting the TBS, then
// checking what the HSM signed (signature verified, TBS compared, lints
// again). The HSM signs outside the timer.
func BenchmarkPrepareIssueCertificate(b *testing.B) {
	f := newFixture(b)
	policy, err := smx509.ParseOID("1.2.156.112559.1.1.1")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		tmpl := f.leaf(int64(i + 1))
		// As a profile's certificate: where its CRL and issuer are, a policy, an EKU.
		tmpl.Subject = pkix.Name{CommonName: "Zhang San", Organization: []string{"signerd"}, Country: []string{"CN"}}
		tmpl.CRLDistributionPoints = []string{"http://crl.example.cn/issuing-2026.crl"}
		tmpl.OCSPServer = []string{"http://ocsp.example.cn"}
		tmpl.IssuingCertificateURL = []string{"http://ca.example.cn/issuing-2026.cer"}
		tmpl.Policies = []smx509.OID{policy}
		tmpl.ExtKeyUsage = []smx509.ExtKeyUsage{smx509.ExtKeyUsageClientAuth, smx509.ExtKeyUsageEmailProtection}
		tok, err := f.iss.PrepareCertificate(tmpl, f.pub, lint.Signing)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		sig, err := f.iss.Signer.SignDigest(context.Background(), tok.Digest())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := f.iss.Issue(tok, sig); err != nil {
			b.Fatal(err)
		}
	}
}
