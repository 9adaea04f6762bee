package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine/enginetest"
)

// callHeaders is call that also returns the answer's headers.
func (d *daemonProc) callHeaders(t *testing.T, method, path, body string) (reply, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://signerd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseReply(resp.StatusCode, raw), resp.Header
}

// TestBadRequestValuesGet400OverTheSocket: values an RA controls that used
// to get a retryable 500 (a non-ASCII e-mail local part), a 500 lint_failed
// (the issuing CA's name as subject) or a certificate (bidi controls in a
// subject, a CSR or the holder's signing key on an encryption profile) get
// a 400 with a stable code and no Retry-After from the running daemon.
func TestBadRequestValuesGet400OverTheSocket(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	signingKey, signingCSR := enginetest.NewCSR(t)
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: signingCSR}))
	signed := certView(t, d.call(t, "POST", "/v1/certificates", mustJSON(t, map[string]any{"request_id": "holder-sign",
		"profile": "person-sign", "subject": map[string]any{"CN": "张三"}, "csr": csrPEM})))
	spki, err := smx509.MarshalPKIXPublicKey(&signingKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	signingKeyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	_, freshCSR := enginetest.NewCSR(t)
	freshPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: freshCSR}))
	ca := d.ca.Cert.Subject

	tests := []struct {
		name string
		body map[string]any
		code api.Code
	}{
		{"non-ASCII e-mail local part", map[string]any{"profile": "person-sign", "subject": map[string]any{"CN": "张三"},
			"emails": []string{"张三@gov.example.cn"}, "csr": freshPEM}, api.CodeBadRequest},
		{"subject is the issuing CA", map[string]any{"profile": "person-sign", "csr": freshPEM,
			"subject": map[string]any{"CN": ca.CommonName, "O": ca.Organization[0], "C": ca.Country[0]}}, api.CodeSubjectReserved},
		{"right-to-left override in CN", map[string]any{"profile": "person-sign", "subject": map[string]any{"CN": "abc\u202Egpj.exe"},
			"csr": freshPEM}, api.CodeBadRequest},
		{"newline in O", map[string]any{"profile": "person-sign", "subject": map[string]any{"CN": "a", "O": "甲\n乙"}, "csr": freshPEM}, api.CodeBadRequest},
		{"empty OU", map[string]any{"profile": "person-sign", "subject": map[string]any{"CN": "a", "OU": []string{""}}, "csr": freshPEM}, api.CodeBadRequest},
		{"CSR on an encryption profile", map[string]any{"profile": "person-enc", "subject": map[string]any{"CN": "张三"}, "csr": freshPEM}, api.CodeBadRequest},
		{"the holder's signing key for encryption", map[string]any{"profile": "person-enc", "subject": map[string]any{"CN": "张三"},
			"public_key": signingKeyPEM}, api.CodeKeyReused},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.body["request_id"] = "bad-" + string(rune('a'+i))
			r, h := d.callHeaders(t, "POST", "/v1/certificates", mustJSON(t, tt.body))
			want(t, tt.name, r, http.StatusBadRequest, string(tt.code))
			if api.Code(r.code).Retryable() || h.Get("Retry-After") != "" {
				t.Fatalf("%s: marked retryable (Retry-After %q)", tt.name, h.Get("Retry-After"))
			}
		})
	}
	// A renewal's values are checked the same way.
	r := d.call(t, "POST", "/v1/certificates/"+signed.Serial+"/renew", mustJSON(t, map[string]any{"request_id": "renew-bad",
		"profile": "person-sign", "subject": map[string]any{"CN": "张三\u2066"}, "csr": freshPEM}))
	want(t, "renew with a bidi control", r, http.StatusBadRequest, string(api.CodeBadRequest))
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
