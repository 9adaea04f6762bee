package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"signerd/revocation"
)

func TestRouteTarget(t *testing.T) {
	for _, tc := range []struct {
		route Route
		args  []string
		want  string
	}{
		{RouteIssue, nil, "/v1/certificates"},
		{RouteStatus, []string{"3f6a"}, "/v1/certificates/3f6a"},
		{RouteRevoke, []string{"3f6a"}, "/v1/certificates/3f6a/revoke"},
		{RouteStatistics, []string{"2026-11"}, "/v1/statistics/2026-11"},
		{RouteRenew, nil, "/v1/certificates/{serial}/renew"}, // nothing named: left as is
	} {
		if got := tc.route.Target(tc.args...); got != tc.want {
			t.Errorf("%s.Target(%q) = %q, want %q", tc.route.Pattern(), tc.args, got, tc.want)
		}
	}
}

// TestCodesMatchDocs holds the code table to docs/api.md's: every code
// with the status the document gives it, and every code documented.
func TestCodesMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[Code]int{}
	row := regexp.MustCompile("(?m)^\\| (\\d{3}) \\| (.*) \\|$")
	code := regexp.MustCompile("`([a-z_]+)`")
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		status, _ := strconv.Atoi(m[1])
		// Only the code named first in each clause: "`busy`, ...
		// (retryable, with `Retry-After: 1`)" names no code in brackets.
		for _, c := range code.FindAllStringSubmatch(stripBrackets(m[2]), -1) {
			documented[Code(c[1])] = status
		}
	}
	for _, c := range Codes() {
		if s, ok := documented[c]; !ok || s != c.Status() {
			t.Errorf("%s: status %d, docs/api.md says %d (0: not in its table)", c, c.Status(), s)
		}
	}
	for c := range documented {
		if _, ok := codes[c]; !ok {
			t.Errorf("docs/api.md lists %s, which is no code", c)
		}
	}
}

// stripBrackets drops bracketed asides, nested or not.
func stripBrackets(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestRetry(t *testing.T) {
	for _, tc := range []struct {
		code                  Code
		retryable, retryAfter bool
	}{
		{CodeBusy, true, true},
		{CodeStoreUnavailable, true, true},
		{CodeClockBackwards, false, false}, // a 503 only an operator ends
		{CodeInProgress, true, false},      // a 409
		{CodeInternal, true, false},        // a 500
		{CodeIssuerExpired, false, false},
		{CodeBackupNoSpace, false, false},
		{CodeBadRequest, false, false},
		{Code("no_such_code"), false, false},
	} {
		if tc.code.Retryable() != tc.retryable || tc.code.RetryAfter() != tc.retryAfter {
			t.Errorf("%s: retryable %v, Retry-After %v; want %v, %v", tc.code, tc.code.Retryable(), tc.code.RetryAfter(), tc.retryable, tc.retryAfter)
		}
	}
	if got := Code("no_such_code").Status(); got != 500 {
		t.Errorf("unknown code: status %d, want 500", got)
	}
}

func TestSignedText(t *testing.T) {
	// SM3 of the empty string, as GM/T 0004's test vectors give it.
	const emptySM3 = "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"
	got := string(SignedText("GET", "/v1/certificates/3f6a?x=1", "2026-11-01T00:00:00Z", "AAAAAAAAAAAAAAAAAAAAAA", "5b1c", nil))
	want := "signerd-request-v2\nGET\n/v1/certificates/3f6a?x=1\n2026-11-01T00:00:00Z\nAAAAAAAAAAAAAAAAAAAAAA\n5b1c\n" + emptySM3
	if got != want {
		t.Fatalf("signed text\n%q\nwant\n%q", got, want)
	}
	f, ok := ParseSignedText(got)
	if !ok || f != (SignedFields{"GET", "/v1/certificates/3f6a?x=1", "2026-11-01T00:00:00Z", "AAAAAAAAAAAAAAAAAAAAAA", "5b1c", emptySM3}) {
		t.Fatalf("ParseSignedText = %+v, %v", f, ok)
	}
	for _, bad := range []string{"", "signerd-request-v1\nGET\n/\nd\nn\ns\nh", strings.TrimSuffix(got, "\n"+emptySM3), got + "\n"} {
		if _, ok := ParseSignedText(bad); ok {
			t.Errorf("ParseSignedText(%q) took it", bad)
		}
	}
}

func TestSignVerifies(t *testing.T) {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"reason":"keyCompromise"}`)
	req, _ := http.NewRequest("POST", "http://signerd"+RouteRevoke.Target("3f6a")+"?a=b", nil)
	date := time.Date(2026, 11, 1, 8, 0, 0, 5, time.FixedZone("CST", 8*3600))
	if err := Sign(req, body, key, "5b1c", date); err != nil {
		t.Fatal(err)
	}
	h := req.Header
	if h.Get(HeaderDate) != "2026-11-01T00:00:00.000000005Z" || h.Get(HeaderCertificate) != "5b1c" || !NonceValid(h.Get(HeaderNonce)) {
		t.Fatalf("headers %v", h)
	}
	sig, err := base64.StdEncoding.DecodeString(h.Get(HeaderSignature))
	if err != nil {
		t.Fatal(err)
	}
	text := SignedText("POST", "/v1/certificates/3f6a/revoke?a=b", h.Get(HeaderDate), h.Get(HeaderNonce), "5b1c", body)
	if !sm2.VerifyASN1WithSM2(&key.PublicKey, nil, text, sig) {
		t.Fatal("the signature does not verify over the signed text")
	}
	if sm2.VerifyASN1WithSM2(&key.PublicKey, nil, SignedText("POST", "/v1/certificates/3f6a/revoke?a=b", h.Get(HeaderDate), h.Get(HeaderNonce), "5b1c", []byte(`{"reason":"unspecified"}`)), sig) {
		t.Fatal("the signature verifies over another body")
	}
	again, _ := http.NewRequest("POST", "http://signerd/", nil)
	Sign(again, body, key, "5b1c", date)
	if again.Header.Get(HeaderNonce) == h.Get(HeaderNonce) {
		t.Fatal("two requests signed with one nonce")
	}
}

func TestNonceValid(t *testing.T) {
	for _, tc := range []struct {
		nonce string
		ok    bool
	}{
		{strings.Repeat("a", 16), true}, {strings.Repeat("Z9_-", 16), true},
		{strings.Repeat("a", 15), false}, {strings.Repeat("a", 65), false},
		{strings.Repeat("a", 15) + "=", false}, {strings.Repeat("a", 15) + "+", false}, {"", false},
	} {
		if NonceValid(tc.nonce) != tc.ok {
			t.Errorf("NonceValid(%q) = %v", tc.nonce, !tc.ok)
		}
	}
}

func TestRevocationReason(t *testing.T) {
	for _, tc := range []struct {
		name string
		want revocation.Reason
		ok   bool
	}{
		{"", revocation.Unspecified, true},
		{"unspecified", revocation.Unspecified, true},
		{"keyCompromise", revocation.KeyCompromise, true},
		{"aACompromise", revocation.AACompromise, true},
		{"certificateHold", 0, false}, // hold's
		{"removeFromCRL", 0, false},
		{"bored", 0, false},
		{"1", 0, false},
	} {
		got, err := RevokeRequest{Reason: tc.name}.RevocationReason()
		var e *Error
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("%q: %v, %v; want %v", tc.name, got, err, tc.want)
		case !tc.ok && (!errors.As(err, &e) || e.Code != CodeBadRequest):
			t.Errorf("%q: %v, want a bad_request", tc.name, err)
		}
	}
}

// TestBodiesAsBefore holds the structs to the bytes the maps they replace
// made: clients and the daemon built these bodies as maps, whose keys
// json sorts.
func TestBodiesAsBefore(t *testing.T) {
	since := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		got, before any
	}{
		{"health ok", Health{Status: HealthOK, QueueDepth: 3, HSM: HSMHealth{Up: true}, Store: StoreHealth{Writable: true}},
			map[string]any{"status": "ok", "queue_depth": 3, "hsm": map[string]any{"up": true}, "store": map[string]any{"writable": true}}},
		{"health degraded", Health{Status: HealthDegraded, Code: CodeHSMUnavailable, Message: "HSM unavailable",
			HSM: HSMHealth{Up: false, Since: since, Error: "CKR_DEVICE_ERROR"}, Store: StoreHealth{Writable: true, Since: since}},
			map[string]any{"status": "degraded", "code": "hsm_unavailable", "message": "HSM unavailable", "queue_depth": 0,
				"hsm": map[string]any{"up": false, "since": since, "error": "CKR_DEVICE_ERROR"}, "store": map[string]any{"writable": true, "since": since}}},
		{"issue", IssueRequest{RequestID: "r1", Profile: "person-sign", Subject: Subject{CommonName: "张三", Country: "CN"}, CSR: "PEM",
			ValidityDays: 30, DNSNames: []string{"a.example"}, Emails: []string{"a@example.cn"}, Identity: map[string]string{"resident-id": "1"}},
			map[string]any{"request_id": "r1", "profile": "person-sign", "subject": Subject{CommonName: "张三", Country: "CN"}, "csr": "PEM",
				"validity_days": 30, "dns_names": []string{"a.example"}, "emails": []string{"a@example.cn"}, "identity": map[string]string{"resident-id": "1"}}},
		{"issue, least", IssueRequest{RequestID: "r1", Profile: "p", PublicKey: "PEM"},
			map[string]any{"request_id": "r1", "profile": "p", "subject": Subject{}, "public_key": "PEM"}},
		{"extend", ExtendRequest{RequestID: "r2"}, map[string]any{"request_id": "r2", "validity_days": 0}},
		{"revoke", RevokeRequest{Reason: "keyCompromise"}, map[string]string{"reason": "keyCompromise"}},
		{"statistics", Statistics{Month: "2026-11", Profiles: map[string]map[string]uint64{"p": {"issued": 1}}},
			map[string]any{"month": "2026-11", "profiles": map[string]map[string]uint64{"p": {"issued": 1}}}},
		{"error", Error{Code: CodeBusy, Message: "queue full"}, map[string]string{"code": "busy", "message": "queue full"}},
	} {
		got, err := json.MarshalIndent(tc.got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		before, _ := json.MarshalIndent(tc.before, "", "  ")
		if string(got) != string(before) {
			t.Errorf("%s:\n%s\nwas\n%s", tc.name, got, before)
		}
	}
}

func TestRoutesDistinct(t *testing.T) {
	var seen []string
	for _, r := range Routes {
		if slices.Contains(seen, r.Pattern()) {
			t.Errorf("%s listed twice", r.Pattern())
		}
		seen = append(seen, r.Pattern())
	}
}
