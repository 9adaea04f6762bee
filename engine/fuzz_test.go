package engine

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"testing"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
)

// FuzzCheck feeds request checking (SPEC §5.2) arbitrary requests and
// CSRs. Nothing panics; every refusal carries an API code; whatever is
// accepted has a CSR that parses and whose SM2 signature verifies.
func FuzzCheck(f *testing.F) {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	csr, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	for _, req := range []string{
		`{"request_id":"ra-1","profile":"person-sign","subject":{"CN":"张三","C":"CN"},"identity":{"resident-id":"11010519491231002X"}}`,
		`{"request_id":"ra-2","profile":"device-sign","subject":{"CN":"d"},"dns_names":["a.example.cn"],"validity_days":365}`,
		`{"request_id":"ra-3","profile":"organization-sign","subject":{"CN":"o","O":"某单位","OU":["a","b"]},"identity":{"credit-code":"91350100M000100Y43"}}`,
		`{"request_id":"signerd.x","profile":"person-sign","subject":{"CN":"x"}}`,
		`{"request_id":"ra-4","profile":"person-sign","subject":{"CN":""},"emails":["a@b.cn"],"validity_days":-1}`,
	} {
		f.Add([]byte(req), csr)
		f.Add([]byte(req), csr[:len(csr)/2])
	}
	e := &Engine{profiles: BuiltinProfiles(), sm2ID: hsm.DefaultSM2ID}
	f.Fuzz(func(t *testing.T, reqJSON, csr []byte) {
		var req Request
		if json.Unmarshal(reqJSON, &req) != nil {
			return
		}
		req.CSR = csr
		o, err := e.check(kindIssue, &req, nil)
		if err != nil {
			var apiErr *Error
			if !errors.As(err, &apiErr) || apiErr.Code == "" {
				t.Fatalf("refusal without an API code: %v", err)
			}
			return
		}
		parsed, err := smx509.ParseCertificateRequest(csr)
		if err != nil {
			t.Fatalf("accepted a CSR that does not parse: %v", err)
		}
		if err := e.checkCSRSignature(parsed); err != nil {
			t.Fatalf("accepted a CSR whose signature fails: %v", err)
		}
		if o.pub == nil || o.digest == nil {
			t.Fatal("accepted order without a key or digest")
		}
	})
}
