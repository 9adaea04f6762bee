package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
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
		// Hostile values (issue 16).
		`{"request_id":"ra-5","profile":"person-sign","subject":{"CN":"张三"},"emails":["张三@gov.example.cn"],"csr":"x"}`,
		`{"request_id":"ra-6","profile":"person-sign","subject":{"CN":"abc\u202egpj.exe","O":"a\nb","OU":[""],"C":"12"}}`,
		`{"request_id":"ra-7","profile":"person-enc","subject":{"CN":"x"},"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"request_id":"signerd.audit-key.00","profile":"signerd-audit-key","subject":{"CN":"signerd audit key 00"}}`,
		"{\"request_id\":\"ra-8\",\"subject\":{\"CN\":\"a\xffb\"}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/v1/certificates", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		var q api.IssueRequest
		if !decode(w, r, &q) {
			var e api.Error
			if (w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge) ||
				json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Code == "" {
				t.Fatalf("refusal %d %q", w.Code, w.Body.String())
			}
			return
		}
		if _, err := engineRequest(&q); err != nil {
			var apiErr *api.Error
			if !errors.As(err, &apiErr) || apiErr.Code == "" {
				t.Fatalf("request refused without an API code: %v", err)
			}
		}
	})
}

// FuzzRASignature feeds RA signature checking arbitrary requests and
// headers against a store holding one RA certificate. Placeholders let the
// fuzzer reach the accepting path: date "now" is the current time, nonce
// "fresh" a new random one, serial "ra" the RA certificate's, and sign has
// the RA key sign the request as built. Refusals carry a known code;
// whatever is accepted verifies, independently, under the RA certificate's
// key over exactly this request, and is refused as a replay when sent
// again; the handler gets the body unchanged.
func FuzzRASignature(f *testing.F) {
	ca := enginetest.NewCA(f)
	eng := ca.Engine(f, enginetest.OpenStore(f), engine.Config{})
	raKey, csr := enginetest.NewCSR(f)
	raCert, err := eng.Issue(context.Background(), store.System, engine.Request{ID: "ra-cert", Profile: "ra-sign",
		Subject: engine.Subject{CommonName: "RA 前台 01", Organization: "某市政务服务中心"}, CSR: csr})
	if err != nil {
		f.Fatal(err)
	}
	sigs := raSignatures{Required: true}
	if err := sigs.prepare(); err != nil {
		f.Fatal(err)
	}
	a := &server{eng: eng, log: slog.New(slog.DiscardHandler), sigs: sigs}
	body := []byte(`{"request_id":"x","profile":"person-sign"}`)
	f.Add("POST", "/v1/certificates", "now", "fresh", "", "ra", body, true)
	f.Add("POST", "/v1/certificates", "now", "fresh", "MEUCIQ==", "ra", body, false)
	f.Add("GET", "/v1/certificates/01?x=1", "2020-01-01T00:00:00Z", "fresh", "", "ra", []byte{}, true)
	f.Add("POST", "/v1/crl", "now", "fresh", "", "00ff", body, true)
	f.Add("POST", "/v1/certificates", "", "", "", "", body, false)
	f.Add("POST", "/v1/certificates", "yesterday", "short", "!!", "zz", body, false)
	f.Add("POST", "/v1/certificates", "now", "", "", "ra", body, true)
	f.Add("POST", "/v1/certificates", "now", "same-nonce-0123456789", "", "ra", body, true)
	codes := map[api.Code]bool{api.CodeSignatureRequired: true, api.CodeBadSignature: true, api.CodeStaleSignature: true, api.CodeRACertificate: true, api.CodeReplayed: true}
	f.Fuzz(func(t *testing.T, method, uri, date, nonce, sigB64, serialHex string, body []byte, sign bool) {
		r, err := http.NewRequest(method, "http://signerd"+uri, bytes.NewReader(body))
		if err != nil {
			return // not a request the socket's HTTP server would hand on
		}
		if date == "now" {
			date = time.Now().UTC().Format(time.RFC3339Nano)
		}
		if nonce == "fresh" {
			nonce, _ = api.NewNonce()
		}
		if serialHex == "ra" {
			serialHex = hex.EncodeToString(raCert.Serial)
		}
		if sign {
			sig, err := raKey.SignMessage(rand.Reader, api.SignedText(r.Method, r.URL.RequestURI(), date, nonce, serialHex, body), sm2.DefaultSM2SignerOpts)
			if err != nil {
				t.Fatal(err)
			}
			sigB64 = base64.StdEncoding.EncodeToString(sig)
		}
		for h, v := range map[string]string{api.HeaderDate: date, api.HeaderNonce: nonce, api.HeaderSignature: sigB64, api.HeaderCertificate: serialHex} {
			r.Header.Set(h, v)
		}
		again := r.Clone(r.Context())
		evidence, err := a.checkSignature(r)
		if got, _ := io.ReadAll(r.Body); !bytes.Equal(got, body) {
			t.Fatalf("the handler would read %q, not the body sent", got)
		}
		var se *sigError
		switch {
		case err != nil && (!errors.As(err, &se) || !codes[se.code]):
			t.Fatalf("refusal without a known code: %v", err)
		case err != nil:
			return
		case evidence == nil:
			t.Fatalf("accepted without evidence (date %q, signature %q, certificate %q)", date, sigB64, serialHex)
		}
		sig, err := base64.StdEncoding.DecodeString(sigB64)
		if err != nil {
			t.Fatalf("accepted a signature that is not base64: %q", sigB64)
		}
		serial, _ := hex.DecodeString(serialHex)
		text := api.SignedText(r.Method, r.URL.RequestURI(), date, nonce, serialHex, body)
		if !bytes.Equal(serial, raCert.Serial) || !sm2.VerifyASN1WithSM2(&raKey.PublicKey, nil, text, sig) {
			t.Fatalf("accepted a request the RA key did not sign: %q", text)
		}
		again.Body = io.NopCloser(bytes.NewReader(body))
		if _, err := a.checkSignature(again); !errors.As(err, &se) || se.code != api.CodeReplayed {
			t.Fatalf("the same signed request accepted twice (second answer %v)", err)
		}
	})
}
