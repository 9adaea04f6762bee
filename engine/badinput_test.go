package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
)

// hostileRequest is one value an RA might send, applied to a request that
// is otherwise good, and the code it must get ("" for a certificate).
type hostileRequest struct {
	name string
	set  func(*engine.Request)
	want api.Code
}

// hostileRequests covers every field an RA controls. Whatever it sends, the
// answer is a certificate or a refusal with a stable 4xx code; never a
// retryable code (an RA would retry it for ever) nor lint_failed/internal.
func hostileRequests(ca *enginetest.CA) []hostileRequest {
	cn := func(v string) func(*engine.Request) { return func(r *engine.Request) { r.Subject.CommonName = v } }
	subject := func(s engine.Subject) func(*engine.Request) { return func(r *engine.Request) { r.Subject = s } }
	dns := func(v ...string) func(*engine.Request) {
		return func(r *engine.Request) { r.Profile, r.DNSNames = "device-sign", v }
	}
	email := func(v ...string) func(*engine.Request) { return func(r *engine.Request) { r.Emails = v } }
	identity := func(k, v string) func(*engine.Request) {
		return func(r *engine.Request) { r.Identity = map[string]string{k: v} }
	}
	days := func(n int) func(*engine.Request) { return func(r *engine.Request) { r.ValidityDays = n } }
	caName := engine.Subject{CommonName: ca.Cert.Subject.CommonName, Organization: ca.Cert.Subject.Organization[0],
		Country: ca.Cert.Subject.Country[0]}
	shouted := caName
	shouted.CommonName = strings.ToUpper(caName.CommonName)
	spaced := caName
	spaced.CommonName = strings.ReplaceAll(caName.CommonName, " ", "   ")
	// Look-alikes that RFC 4518 matching (NFKC, then case folding) takes
	// for the CA's name: full-width letters, and the long s that folds to s.
	fullWidth := caName
	fullWidth.CommonName = strings.Map(func(r rune) rune {
		if r >= '!' && r <= '~' {
			return r - '!' + '\uFF01'
		}
		return r
	}, caName.CommonName)
	longS := caName
	longS.CommonName = strings.ReplaceAll(caName.CommonName, "s", "\u017F")
	rootName := engine.Subject{CommonName: ca.Root.Subject.CommonName, Organization: ca.Root.Subject.Organization[0],
		Country: ca.Root.Subject.Country[0]}

	tests := []hostileRequest{
		// Subject attributes: control, format and bidirectional characters,
		// broken UTF-8, empty and blank values, RFC 5280 upper bounds.
		{"CN newline", cn("张三\n"), api.CodeBadRequest},
		{"CN inner newline", cn("张\n三"), api.CodeBadRequest},
		{"CN carriage return", cn("a\rb"), api.CodeBadRequest},
		{"CN NUL", cn("a\x00b"), api.CodeBadRequest},
		{"CN tab", cn("a\tb"), api.CodeBadRequest},
		{"CN DEL", cn("a\x7fb"), api.CodeBadRequest},
		{"CN C1 NEL", cn("a\u0085b"), api.CodeBadRequest},
		{"CN U+202E right-to-left override", cn("abc\u202Egpj.exe"), api.CodeBadRequest},
		{"CN U+200E LRM", cn("a\u200Eb"), api.CodeBadRequest},
		{"CN U+200F RLM", cn("a\u200Fb"), api.CodeBadRequest},
		{"CN U+202A LRE", cn("a\u202Ab"), api.CodeBadRequest},
		{"CN U+202B RLE", cn("a\u202Bb"), api.CodeBadRequest},
		{"CN U+202C PDF", cn("a\u202Cb"), api.CodeBadRequest},
		{"CN U+202D LRO", cn("a\u202Db"), api.CodeBadRequest},
		{"CN U+2066 LRI", cn("a\u2066b"), api.CodeBadRequest},
		{"CN U+2067 RLI", cn("a\u2067b"), api.CodeBadRequest},
		{"CN U+2068 FSI", cn("a\u2068b"), api.CodeBadRequest},
		{"CN U+2069 PDI", cn("a\u2069b"), api.CodeBadRequest},
		{"CN U+061C ALM", cn("a\u061Cb"), api.CodeBadRequest},
		{"CN zero-width space", cn("张\u200B三"), api.CodeBadRequest},
		{"CN byte order mark", cn("\uFEFF张三"), api.CodeBadRequest},
		{"CN line separator", cn("a\u2028b"), api.CodeBadRequest},
		{"CN paragraph separator", cn("a\u2029b"), api.CodeBadRequest},
		{"CN noncharacter", cn("a\uFFFEb"), api.CodeBadRequest},
		{"CN replacement character", cn("a\uFFFDb"), api.CodeBadRequest},
		{"CN tag character", cn("a\U000E0041b"), api.CodeBadRequest},
		{"CN invalid UTF-8", cn("a\xffb"), api.CodeBadRequest},
		{"CN truncated UTF-8", cn("张\xe4\xb8"), api.CodeBadRequest},
		{"CN encoded surrogate", cn("a\xed\xa0\x80"), api.CodeBadRequest},
		{"CN overlong slash", cn("a\xc0\xafb"), api.CodeBadRequest},
		{"CN blank", cn("   "), api.CodeBadRequest},
		{"CN ideographic space only", cn("\u3000"), api.CodeBadRequest},
		{"CN leading space", cn(" 张三"), api.CodeBadRequest},
		{"CN trailing space", cn("张三 "), api.CodeBadRequest},
		{"CN 65 characters", cn(strings.Repeat("张", 65)), api.CodeBadRequest},
		{"CN 64 characters", cn(strings.Repeat("张", 64)), ""},
		{"CN with joiners", cn("می\u200Cخواهم"), ""},
		{"O bidi", subject(engine.Subject{CommonName: "a", Organization: "某\u202E单位"}), api.CodeBadRequest},
		{"O 65 characters", subject(engine.Subject{CommonName: "a", Organization: strings.Repeat("o", 65)}), api.CodeBadRequest},
		{"OU empty entry", subject(engine.Subject{CommonName: "a", OrganizationalUnit: []string{"x", ""}}), api.CodeBadRequest},
		{"OU NUL", subject(engine.Subject{CommonName: "a", OrganizationalUnit: []string{"\x00"}}), api.CodeBadRequest},
		{"OU too many", subject(engine.Subject{CommonName: "a", OrganizationalUnit: strings.Split(strings.Repeat("u,", 16)+"u", ",")}), api.CodeBadRequest},
		{"ST 129 characters", subject(engine.Subject{CommonName: "a", Province: strings.Repeat("省", 129)}), api.CodeBadRequest},
		{"ST 128 characters", subject(engine.Subject{CommonName: "a", Province: strings.Repeat("省", 128)}), ""},
		{"L control", subject(engine.Subject{CommonName: "a", Locality: "北京\x1b[31m"}), api.CodeBadRequest},
		{"C lower case", subject(engine.Subject{CommonName: "a", Country: "cn"}), api.CodeBadRequest},
		{"C digits", subject(engine.Subject{CommonName: "a", Country: "12"}), api.CodeBadRequest},
		{"C non-ASCII", subject(engine.Subject{CommonName: "a", Country: "中国"}), api.CodeBadRequest},
		{"C one letter", subject(engine.Subject{CommonName: "a", Country: "C"}), api.CodeBadRequest},
		{"serialNumber not PrintableString", subject(engine.Subject{CommonName: "a", SerialNumber: "编号1"}), api.CodeBadRequest},
		{"serialNumber underscore", subject(engine.Subject{CommonName: "a", SerialNumber: "a_b"}), api.CodeBadRequest},
		{"serialNumber 65", subject(engine.Subject{CommonName: "a", SerialNumber: strings.Repeat("1", 65)}), api.CodeBadRequest},
		{"serialNumber printable", subject(engine.Subject{CommonName: "a", SerialNumber: "ID-2026/01 (x)"}), ""},
		// The CA's own names.
		{"subject is the issuing CA", subject(caName), api.CodeSubjectReserved},
		{"subject is the issuing CA, shouted", subject(shouted), api.CodeSubjectReserved},
		{"subject is the issuing CA, spaced", subject(spaced), api.CodeSubjectReserved},
		{"subject is the issuing CA, full-width", subject(fullWidth), api.CodeSubjectReserved},
		{"subject is the issuing CA, long s", subject(longS), api.CodeSubjectReserved},
		{"subject is the root CA", subject(rootName), api.CodeSubjectReserved},
		{"subject names an audit key", cn("signerd audit key 0011223344556677"), api.CodeSubjectReserved},
		{"subject merely like the CA", subject(engine.Subject{CommonName: caName.CommonName, Organization: "别的单位", Country: "CN"}), ""},
		// dns_names.
		{"DNS empty", dns(""), api.CodeBadRequest},
		{"DNS upper case", dns("WWW.A.CN"), api.CodeBadRequest},
		{"DNS empty label", dns("a..cn"), api.CodeBadRequest},
		{"DNS trailing dot", dns("a.cn."), api.CodeBadRequest},
		{"DNS leading hyphen", dns("-a.cn"), api.CodeBadRequest},
		{"DNS underscore", dns("a_b.cn"), api.CodeBadRequest},
		{"DNS newline", dns("a.cn\n"), api.CodeBadRequest},
		{"DNS NUL", dns("a.cn\x00.evil.cn"), api.CodeBadRequest},
		{"DNS U-label", dns("政府.cn"), api.CodeBadRequest},
		{"DNS wildcard", dns("*.a.cn"), api.CodeBadRequest},
		{"DNS label of 64", dns(strings.Repeat("a", 64) + ".cn"), api.CodeBadRequest},
		{"DNS name of 254", dns(strings.Repeat("a.", 126) + "cn"), api.CodeBadRequest},
		{"DNS A-label", dns("xn--mxtq1m.cn"), ""},
		{"DNS 101 names", func(r *engine.Request) {
			r.Profile = "device-sign"
			for i := range 101 {
				r.DNSNames = append(r.DNSNames, fmt.Sprintf("h%d.a.cn", i))
			}
		}, api.CodeBadRequest},
		{"DNS 100 names", func(r *engine.Request) {
			r.Profile = "device-sign"
			for i := range 100 {
				r.DNSNames = append(r.DNSNames, fmt.Sprintf("h%d.a.cn", i))
			}
		}, ""},
		// emails.
		{"email non-ASCII local part", email("张三@gov.example.cn"), api.CodeBadRequest},
		{"email accented local part", email("zoë@gov.example.cn"), api.CodeBadRequest},
		{"email U-label domain", email("a@政府.cn"), api.CodeBadRequest},
		{"email empty", email(""), api.CodeBadRequest},
		{"email no local part", email("@a.cn"), api.CodeBadRequest},
		{"email no domain", email("a@"), api.CodeBadRequest},
		{"email two ats", email("a@b@c.cn"), api.CodeBadRequest},
		{"email space", email("a b@c.cn"), api.CodeBadRequest},
		{"email newline", email("a\n@c.cn"), api.CodeBadRequest},
		{"email DEL", email("a\x7f@c.cn"), api.CodeBadRequest},
		{"email bidi", email("a\u202E@c.cn"), api.CodeBadRequest},
		{"email quoted", email(`"a b"@c.cn`), api.CodeBadRequest},
		{"email double dot", email("a..b@c.cn"), api.CodeBadRequest},
		{"email leading dot", email(".a@c.cn"), api.CodeBadRequest},
		{"email local part of 65", email(strings.Repeat("a", 65) + "@c.cn"), api.CodeBadRequest},
		{"email invalid UTF-8", email("a\xff@c.cn"), api.CodeBadRequest},
		{"email atext", email("a.b+tag!#$%&'*/=?^_`{|}~-@c.cn"), ""},
		// identity.
		{"identity empty", identity("resident-id", ""), api.CodeBadRequest},
		{"identity newline", identity("resident-id", "11010519491231002X\n"), api.CodeBadRequest},
		{"identity full-width digits", identity("resident-id", "１１０"), api.CodeBadRequest},
		{"identity 65", identity("resident-id", strings.Repeat("1", 65)), api.CodeBadRequest},
		{"identity unknown kind", identity("x\u202E", "1"), api.CodeBadRequest},
		{"identity empty kind", identity("", "1"), api.CodeBadRequest},
		// validity_days.
		{"validity negative", days(-1), api.CodeBadRequest},
		{"validity min int", days(-1 << 62), api.CodeBadRequest},
		{"validity max int", days(1<<63 - 1), api.CodeValidityTooLong},
		// csr and public_key.
		{"no key", func(r *engine.Request) { r.CSR = nil }, api.CodeBadRequest},
		{"CSR garbage", func(r *engine.Request) { r.CSR = []byte("\x30\x03\x02\x01\x00") }, api.CodeMalformedCSR},
		{"CSR truncated", func(r *engine.Request) { r.CSR = r.CSR[:len(r.CSR)/2] }, api.CodeMalformedCSR},
		{"CSR with trailing data", func(r *engine.Request) { r.CSR = append(r.CSR, 0) }, api.CodeMalformedCSR},
		{"public key on a signing profile", func(r *engine.Request) { r.PublicKey, r.CSR = []byte{0x30, 0}, nil }, api.CodeBadRequest},
		{"public key garbage", func(r *engine.Request) { r.Profile, r.PublicKey, r.CSR = "person-enc", []byte{0x30, 0}, nil }, api.CodeMalformedKey},
		// profile and request id.
		{"profile of signerd's own", func(r *engine.Request) { r.Profile = "signerd-audit-key" }, api.CodeUnknownProfile},
		{"request id of signerd's own", func(r *engine.Request) { r.ID = "signerd.audit-key.00" }, api.CodeBadRequest},
		{"request id with newline", func(r *engine.Request) { r.ID = "a\nb" }, api.CodeBadRequest},
	}
	return tests
}

// TestHostileRequestValuesGetStableRefusals sends each hostile value in an
// otherwise good request through the real engine (SoftHSM2, bbolt).
func TestHostileRequestValuesGetStableRefusals(t *testing.T) {
	ca := enginetest.NewCA(t)
	e := ca.Engine(t, enginetest.OpenStore(t), engine.Config{})
	for i, tt := range hostileRequests(ca) {
		t.Run(tt.name, func(t *testing.T) {
			_, csr := enginetest.NewCSR(t)
			req := engine.Request{ID: fmt.Sprintf("hostile-%d", i), Profile: "person-sign",
				Subject: engine.Subject{CommonName: "张三"}, CSR: csr}
			tt.set(&req)
			_, err := e.Issue(context.Background(), ra, req)
			code := engine.CodeOf(err)
			if err == nil {
				code = ""
			}
			var ee *engine.Error
			switch {
			case err != nil && !errors.As(err, &ee):
				t.Fatalf("refusal without a code: %v", err)
			case code.Retryable() || code == api.CodeLintFailed:
				t.Fatalf("Issue = %v: an RA's bad value got a server error (retryable %v)", err, code.Retryable())
			case code != tt.want:
				t.Fatalf("Issue = %v, want code %q", err, tt.want)
			}
		})
	}
}
