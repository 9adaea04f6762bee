package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"signerd/engine"
)

// FuzzIssueBody feeds the issue route's decoding arbitrary bodies, as the
// socket delivers them (bounded by maxBody). Nothing panics; a refused
// body gets 400 or 413 with a JSON error code; an accepted one becomes an
// engine request or an error with an engine code.
func FuzzIssueBody(f *testing.F) {
	for _, seed := range []string{
		`{"request_id":"ra-1","profile":"person-sign","subject":{"CN":"张三","C":"CN"},"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"request_id":"ra-2","profile":"person-enc","subject":{"CN":"x"},"public_key":"-----BEGIN PUBLIC KEY-----\nMA==\n-----END PUBLIC KEY-----\n"}`,
		`{"request_id":"ra-3","unknown":1}`,
		`{"request_id":"ra-4"} {"second":"object"}`,
		`{"validity_days":1e400}`,
		`[]`, `null`, ``, `{"csr":"not pem"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/v1/certificates", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		var q issueRequest
		if !decode(w, r, &q) {
			var e struct{ Code string }
			if (w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge) ||
				json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code == "" {
				t.Fatalf("refusal %d %q", w.Code, w.Body.String())
			}
			return
		}
		if _, err := q.engineRequest(); err != nil {
			var apiErr *engine.Error
			if !errors.As(err, &apiErr) || apiErr.Code == "" {
				t.Fatalf("request refused without an API code: %v", err)
			}
		}
	})
}
