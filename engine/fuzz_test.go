package engine

import (
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"testing"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
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
		// Hostile values (issue 16): each must be refused with a 4xx code.
		`{"request_id":"ra-5","profile":"person-sign","subject":{"CN":"张三"},"emails":["张三@gov.example.cn"]}`,
		`{"request_id":"ra-6","profile":"person-sign","subject":{"CN":"abc\u202egpj.exe","O":"a\nb"}}`,
		`{"request_id":"ra-7","profile":"person-sign","subject":{"CN":"a\u0000b","OU":["x",""],"C":"12"}}`,
		`{"request_id":"ra-8","profile":"person-sign","subject":{"CN":" ","L":"\u2066x\u2069","ST":"\ufeff"}}`,
		`{"request_id":"ra-9","profile":"person-sign","subject":{"CN":"signerd Test Issuing CA","O":"signerd","C":"CN"}}`,
		`{"request_id":"ra-10","profile":"person-sign","subject":{"CN":"signerd audit key 00","serialNumber":"编号"}}`,
		`{"request_id":"ra-11","profile":"person-enc","subject":{"CN":"x"}}`,
		`{"request_id":"ra-12","profile":"signerd-audit-key","subject":{"CN":"x"}}`,
		`{"request_id":"ra-13","profile":"device-sign","subject":{"CN":"x"},"dns_names":["a.cn\n","政府.cn",""],"identity":{"":"1"}}`,
		`{"request_id":"ra-14","profile":"person-sign","subject":{"CN":"x"},"emails":["a..b@c.cn","\"a b\"@c.cn"],"validity_days":9223372036854775807}`,
	} {
		f.Add([]byte(req), csr)
		f.Add([]byte(req), csr[:len(csr)/2])
	}
	e := &Engine{profiles: BuiltinProfiles(), sm2ID: hsm.DefaultSM2ID, sealer: &sealer{}}
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
			if apiErr.Code.Retryable() || apiErr.Code == api.CodeLintFailed {
				t.Fatalf("an RA's request got a server error: %v", err)
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
