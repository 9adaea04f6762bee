package main

import (
	"crypto/sha256"
	"fmt"
	"net/http/httptest"
	"signerd/store"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestRefusalRecordsAreBounded: whatever a peer sends, a refusal's object
// and reason stay within their bounds, are valid UTF-8 without control or
// bidirectional formatting characters, and a cut object names the whole's
// length and SHA-256.
func TestRefusalRecordsAreBounded(t *testing.T) {
	long := "/v9/" + strings.Repeat("a", 16000)
	tests := []struct {
		name, method, target string
		object               string
	}{
		{"route", "GET", "/v1/crl", "GET /v1/crl"},
		{"escapes kept", "GET", "/v9/%0A%E2%80%AEx", "GET /v9/%0A%E2%80%AEx"},
		{"long path", "GET", long, fmt.Sprintf("%s… (cut from %d bytes, sha256 %x)",
			("GET " + long)[:maxRefusalObject], len(long)+4, sha256.Sum256([]byte("GET "+long)))},
		{"long method", strings.Repeat("M", 300), "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := requestObject(httptest.NewRequest(tt.method, tt.target, nil))
			if tt.object != "" && got != tt.object {
				t.Errorf("object %q, want %q", got, tt.object)
			}
			if len(got) > maxRefusalObject+100 {
				t.Errorf("object of %d bytes", len(got))
			}
		})
	}
	for _, reason := range []string{"malformed_json: " + strings.Repeat("é", 500), "bad_request: \n\u202e\x00\xff" + strings.Repeat("x", 300), "forbidden"} {
		got := store.BoundedText(reason, maxRefusalReason)
		if len(got) > maxRefusalReason+len("…") || !utf8.ValidString(got) || strings.ContainsAny(got, "\n\u202e\x00") {
			t.Errorf("reason %q bounded to %q", reason[:20], got)
		}
		if len(reason) <= maxRefusalReason && got != reason {
			t.Errorf("reason %q changed to %q", reason, got)
		}
	}
}
