package issuance_test

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
)

// TestIssueRefusesAlgorithmTheDigestIsNot: an ECDSA issuer's Digest is the
// hash its curve calls for; a template naming another hash is refused at
// prepare, so no certificate names an algorithm its signature is not of.
func TestIssueRefusesAlgorithmTheDigestIsNot(t *testing.T) {
	tests := []struct {
		name string
		key  hsm.Algorithm
		alg  smx509.SignatureAlgorithm
	}{
		{"P-256 key, SHA-384 named", hsm.ECDSAP256, smx509.ECDSAWithSHA384},
		{"P-256 key, SHA-512 named", hsm.ECDSAP256, smx509.ECDSAWithSHA512},
		{"P-384 key, SHA-256 named", hsm.ECDSAP384, smx509.ECDSAWithSHA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := issuance.Throwaway(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			iss, err := issuance.SelfIssuer(k)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().Truncate(time.Second)
			tmpl := &smx509.Certificate{
				SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
				NotBefore: now, NotAfter: now.AddDate(10, 0, 0),
				KeyUsage:              smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
				BasicConstraintsValid: true, IsCA: true,
				SignatureAlgorithm: tt.alg,
			}
			tok, err := iss.PrepareCA(tmpl, k.Public())
			if errors.Is(err, issuance.ErrLint) {
				return // refused before signing
			}
			if err != nil {
				t.Fatal(err)
			}
			out, err := iss.SignAndIssue(context.Background(), tok)
			if err != nil {
				return // refused after signing: holds
			}
			if err := out.Certificate.CheckSignatureFrom(out.Certificate); err != nil {
				t.Errorf("Issue returned a certificate naming %v whose signature does not verify: %v", out.Certificate.SignatureAlgorithm, err)
			}
		})
	}
}
