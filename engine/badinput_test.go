package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"signerd/engine"
	"signerd/engine/enginetest"
)

// hostileRequest is one value an RA might send, applied to a request that
// is otherwise good, and the code it must get ("" for a certificate).
type hostileRequest struct {
	name string
	set  func(*engine.Request)
	want engine.Code
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
		{"CN newline", cn("张三\n"), engine.CodeBadRequest},
		{"CN inner newline", cn("张\n三"), engine.CodeBadRequest},
		{"CN carriage return", cn("a\rb"), engine.CodeBadRequest},
		{"CN NUL", cn("a\x00b"), engine.CodeBadRequest},
		{"CN tab", cn("a\tb"), engine.CodeBadRequest},
		{"CN DEL", cn("a\x7fb"), engine.CodeBadRequest},
		{"CN C1 NEL", cn("a\u0085b"), engine.CodeBadRequest},
		{"CN U+202E right-to-left override", cn("abc\u202Egpj.exe"), engine.CodeBadRequest},
		{"CN U+200E LRM", cn("a\u200Eb"), engine.CodeBadRequest},
		{"CN U+200F RLM", cn("a\u200Fb"), engine.CodeBadRequest},
		{"CN U+202A LRE", cn("a\u202Ab"), engine.CodeBadRequest},
		{"CN U+202B RLE", cn("a\u202Bb"), engine.CodeBadRequest},
		{"CN U+202C PDF", cn("a\u202Cb"), engine.CodeBadRequest},
		{"CN U+202D LRO", cn("a\u202Db"), engine.CodeBadRequest},
		{"CN U+2066 LRI", cn("a\u2066b"), engine.CodeBadRequest},
		{"CN U+2067 RLI", cn("a\u2067b"), engine.CodeBadRequest},
		{"CN U+2068 FSI", cn("a\u2068b"), engine.CodeBadRequest},
		{"CN U+2069 PDI", cn("a\u2069b"), engine.CodeBadRequest},
		{"CN U+061C ALM", cn("a\u061Cb"), engine.CodeBadRequest},
		{"CN zero-width space", cn("张\u200B三"), engine.CodeBadRequest},
		{"CN byte order mark", cn("\uFEFF张三"), engine.CodeBadRequest},
		{"CN line separator", cn("a\u2028b"), engine.CodeBadRequest},
		{"CN paragraph separator", cn("a\u2029b"), engine.CodeBadRequest},
		{"CN noncharacter", cn("a\uFFFEb"), engine.CodeBadRequest},
		{"CN replacement character", cn("a\uFFFDb"), engine.CodeBadRequest},
		{"CN tag character", cn("a\U000E0041b"), engine.CodeBadRequest},
		{"CN invalid UTF-8", cn("a\xffb"), engine.CodeBadRequest},
		{"CN truncated UTF-8", cn("张\xe4\xb8"), engine.CodeBadRequest},
		{"CN encoded surrogate", cn("a\xed\xa0\x80"), engine.CodeBadRequest},
		{"CN overlong slash", cn("a\xc0\xafb"), engine.CodeBadRequest},
		{"CN blank", cn("   "), engine.CodeBadRequest},
		{"CN ideographic space only", cn("\u3000"), engine.CodeBadRequest},
		{"CN leading space", cn(" 张三"), engine.CodeBadRequest},
		{"CN trailing space", cn("张三 "), engine.CodeBadRequest},
		{"CN 65 characters", cn(strings.Repeat("张", 65)), engine.CodeBadRequest},
		{"CN 64 characters", cn(strings.Repeat("张", 64)), ""},
		{"CN with joiners", cn("می\u200Cخواهم"), ""},
		{"O bidi", subject(engine.Subject{CommonName: "a", Organization: "某\u202E单位"}), engine.CodeBadRequest},
		{"O 65 characters", subject(engine.Subject{CommonName: "a", Organization: strings.Repeat("o", 65)}), engine.CodeBadRequest},
		{"OU empty entry", subject(engine.Subject{CommonName: "a", OrganizationalUnit: []string{"x", ""}}), engine.CodeBadRequest},
		{"OU NUL", subject(engine.Subject{CommonName: "a", OrganizationalUnit: []string{"\x00"}}), engine.CodeBadRequest},
		{"OU too many", subject(engine.Subject{CommonName: "a", OrganizationalUnit: strings.Split(strings.Repeat("u,", 16)+"u", ",")}), engine.CodeBadRequest},
		{"ST 129 characters", subject(engine.Subject{CommonName: "a", Province: strings.Repeat("省", 129)}), engine.CodeBadRequest},
		{"ST 128 characters", subject(engine.Subject{CommonName: "a", Province: strings.Repeat("省", 128)}), ""},
		{"L control", subject(engine.Subject{CommonName: "a", Locality: "北京\x1b[31m"}), engine.CodeBadRequest},
		{"C lower case", subject(engine.Subject{CommonName: "a", Country: "cn"}), engine.CodeBadRequest},
		{"C digits", subject(engine.Subject{CommonName: "a", Country: "12"}), engine.CodeBadRequest},
		{"C non-ASCII", subject(engine.Subject{CommonName: "a", Country: "中国"}), engine.CodeBadRequest},
		{"C one letter", subject(engine.Subject{CommonName: "a", Country: "C"}), engine.CodeBadRequest},
		{"serialNumber not PrintableString", subject(engine.Subject{CommonName: "a", SerialNumber: "编号1"}), engine.CodeBadRequest},
		{"serialNumber underscore", subject(engine.Subject{CommonName: "a", SerialNumber: "a_b"}), engine.CodeBadRequest},
		{"serialNumber 65", subject(engine.Subject{CommonName: "a", SerialNumber: strings.Repeat("1", 65)}), engine.CodeBadRequest},
		{"serialNumber printable", subject(engine.Subject{CommonName: "a", SerialNumber: "ID-2026/01 (x)"}), ""},
		// The CA's own names.
		{"subject is the issuing CA", subject(caName), engine.CodeSubjectReserved},
		{"subject is the issuing CA, shouted", subject(shouted), engine.CodeSubjectReserved},
		{"subject is the issuing CA, spaced", subject(spaced), engine.CodeSubjectReserved},
		{"subject is the issuing CA, full-width", subject(fullWidth), engine.CodeSubjectReserved},
		{"subject is the issuing CA, long s", subject(longS), engine.CodeSubjectReserved},
		{"subject is the root CA", subject(rootName), engine.CodeSubjectReserved},
		{"subject names an audit key", cn("signerd audit key 0011223344556677"), engine.CodeSubjectReserved},
		{"subject merely like the CA", subject(engine.Subject{CommonName: caName.CommonName, Organization: "别的单位", Country: "CN"}), ""},
		// dns_names.
		{"DNS empty", dns(""), engine.CodeBadRequest},
		{"DNS upper case", dns("WWW.A.CN"), engine.CodeBadRequest},
		{"DNS empty label", dns("a..cn"), engine.CodeBadRequest},
		{"DNS trailing dot", dns("a.cn."), engine.CodeBadRequest},
		{"DNS leading hyphen", dns("-a.cn"), engine.CodeBadRequest},
		{"DNS underscore", dns("a_b.cn"), engine.CodeBadRequest},
		{"DNS newline", dns("a.cn\n"), engine.CodeBadRequest},
		{"DNS NUL", dns("a.cn\x00.evil.cn"), engine.CodeBadRequest},
		{"DNS U-label", dns("政府.cn"), engine.CodeBadRequest},
		{"DNS wildcard", dns("*.a.cn"), engine.CodeBadRequest},
		{"DNS label of 64", dns(strings.Repeat("a", 64) + ".cn"), engine.CodeBadRequest},
		{"DNS name of 254", dns(strings.Repeat("a.", 126) + "cn"), engine.CodeBadRequest},
		{"DNS A-label", dns("xn--mxtq1m.cn"), ""},
		{"DNS 101 names", func(r *engine.Request) {
			r.Profile = "device-sign"
			for i := range 101 {
				r.DNSNames = append(r.DNSNames, fmt.Sprintf("h%d.a.cn", i))
			}
		}, engine.CodeBadRequest},
		{"DNS 100 names", func(r *engine.Request) {
			r.Profile = "device-sign"
			for i := range 100 {
				r.DNSNames = append(r.DNSNames, fmt.Sprintf("h%d.a.cn", i))
			}
		}, ""},
		// emails.
		{"email non-ASCII local part", email("张三@gov.example.cn"), engine.CodeBadRequest},
		{"email accented local part", email("zoë@gov.example.cn"), engine.CodeBadRequest},
		{"email U-label domain", email("a@政府.cn"), engine.CodeBadRequest},
		{"email empty", email(""), engine.CodeBadRequest},
		{"email no local part", email("@a.cn"), engine.CodeBadRequest},
		{"email no domain", email("a@"), engine.CodeBadRequest},
		{"email two ats", email("a@b@c.cn"), engine.CodeBadRequest},
		{"email space", email("a b@c.cn"), engine.CodeBadRequest},
		{"email newline", email("a\n@c.cn"), engine.CodeBadRequest},
		{"email DEL", email("a\x7f@c.cn"), engine.CodeBadRequest},
		{"email bidi", email("a\u202E@c.cn"), engine.CodeBadRequest},
		{"email quoted", email(`"a b"@c.cn`), engine.CodeBadRequest},
		{"email double dot", email("a..b@c.cn"), engine.CodeBadRequest},
		{"email leading dot", email(".a@c.cn"), engine.CodeBadRequest},
		{"email local part of 65", email(strings.Repeat("a", 65) + "@c.cn"), engine.CodeBadRequest},
		{"email invalid UTF-8", email("a\xff@c.cn"), engine.CodeBadRequest},
		{"email atext", email("a.b+tag!#$%&'*/=?^_`{|}~-@c.cn"), ""},
		// identity.
		{"identity empty", identity("resident-id", ""), engine.CodeBadRequest},
		{"identity newline", identity("resident-id", "11010519491231002X\n"), engine.CodeBadRequest},
		{"identity full-width digits", identity("resident-id", "１１０"), engine.CodeBadRequest},
		{"identity 65", identity("resident-id", strings.Repeat("1", 65)), engine.CodeBadRequest},
		{"identity unknown kind", identity("x\u202E", "1"), engine.CodeBadRequest},
		{"identity empty kind", identity("", "1"), engine.CodeBadRequest},
		// validity_days.
		{"validity negative", days(-1), engine.CodeBadRequest},
		{"validity min int", days(-1 << 62), engine.CodeBadRequest},
		{"validity max int", days(1<<63 - 1), engine.CodeValidityTooLong},
		// csr and public_key.
		{"no key", func(r *engine.Request) { r.CSR = nil }, engine.CodeBadRequest},
		{"CSR garbage", func(r *engine.Request) { r.CSR = []byte("\x30\x03\x02\x01\x00") }, engine.CodeMalformedCSR},
		{"CSR truncated", func(r *engine.Request) { r.CSR = r.CSR[:len(r.CSR)/2] }, engine.CodeMalformedCSR},
		{"CSR with trailing data", func(r *engine.Request) { r.CSR = append(r.CSR, 0) }, engine.CodeMalformedCSR},
		{"public key on a signing profile", func(r *engine.Request) { r.PublicKey, r.CSR = []byte{0x30, 0}, nil }, engine.CodeBadRequest},
		{"public key garbage", func(r *engine.Request) { r.Profile, r.PublicKey, r.CSR = "person-enc", []byte{0x30, 0}, nil }, engine.CodeMalformedKey},
		// profile and request id.
		{"profile of signerd's own", func(r *engine.Request) { r.Profile = "signerd-audit-key" }, engine.CodeUnknownProfile},
		{"request id of signerd's own", func(r *engine.Request) { r.ID = "signerd.audit-key.00" }, engine.CodeBadRequest},
		{"request id with newline", func(r *engine.Request) { r.ID = "a\nb" }, engine.CodeBadRequest},
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
			case code.Retryable() || code == engine.CodeLintFailed:
				t.Fatalf("Issue = %v: an RA's bad value got a server error (retryable %v)", err, code.Retryable())
			case code != tt.want:
				t.Fatalf("Issue = %v, want code %q", err, tt.want)
			}
		})
	}
}
