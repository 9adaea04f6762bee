package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/publish"
)

// requestDER is an OCSPRequest of ids, unsigned, without extensions.
func requestDER(t testing.TB, ids ...ocsp.CertID) []byte {
	t.Helper()
	oids := map[ocsp.HashAlg]string{ocsp.SHA1: "1.3.14.3.2.26", ocsp.SHA256: "2.16.840.1.101.3.4.2.1", ocsp.SM3: "1.2.156.10197.1.401"}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(req *cryptobyte.Builder) {
		req.AddASN1(casn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
			tbs.AddASN1(casn1.SEQUENCE, func(list *cryptobyte.Builder) {
				for _, id := range ids {
					list.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) {
						r.AddASN1(casn1.SEQUENCE, func(c *cryptobyte.Builder) {
							c.AddASN1(casn1.SEQUENCE, func(a *cryptobyte.Builder) {
								a.AddASN1ObjectIdentifier(mustOID(oids[id.HashAlg]))
								a.AddASN1NULL()
							})
							c.AddASN1OctetString(id.IssuerNameHash)
							c.AddASN1OctetString(id.IssuerKeyHash)
							c.AddASN1(casn1.INTEGER, func(n *cryptobyte.Builder) {
								if id.Serial[0]&0x80 != 0 {
									n.AddUint8(0)
								}
								n.AddBytes(id.Serial)
							})
						})
					})
				}
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func mustOID(s string) []int {
	var oid []int
	for _, p := range strings.Split(s, ".") {
		n, _ := strconv.Atoi(p)
		oid = append(oid, n)
	}
	return oid
}

func certID(t testing.TB, ca *testCA, serial []byte, h ocsp.HashAlg) ocsp.CertID {
	t.Helper()
	id, err := ocsp.CertIDFor(ca.iss.Cert, serial, h)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// getPath is the RFC 5019 GET path of a request: base64, URL-escaped.
func getPath(der []byte) string {
	return "/" + url.PathEscape(base64.StdEncoding.EncodeToString(der))
}

type answer struct {
	code   int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, u string, body []byte, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == nil {
		req.Body = nil
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func post(t testing.TB, r *running, der []byte) answer {
	t.Helper()
	return do(t, "POST", r.url()+"/", der, "Content-Type", "application/ocsp-request")
}

// errorStatus is the responseStatus of an unsigned OCSP error response; -1 for anything else.
func errorStatus(b []byte) int {
	if len(b) == 5 && b[0] == 0x30 && b[1] == 3 && b[2] == 0x0a && b[3] == 1 {
		return int(b[4])
	}
	return -1
}

// A GET answer carries RFC 5019 §6.2's caching headers: max-age up to
// nextUpdate, Last-Modified at thisUpdate, Expires at nextUpdate, an
// ETag of the bytes; a conditional GET with that ETag is answered 304. A
// POST answer carries none of them.
func TestCachingHeaders(t *testing.T) {
	ca := newCA(t, hsm.SM2, "SM2 CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{0x0f, 0xee}
	s := good(serial, 10*time.Hour)
	der := ca.sign(t, s, ocsp.SHA256)
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: der})
	r := startResponder(t, dirConfig(pub, ca))
	req := requestDER(t, certID(t, ca, serial, ocsp.SHA256))
	sum := sha256.Sum256(der)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`

	before := time.Now()
	a := do(t, "GET", r.url()+getPath(req), nil)
	if a.code != 200 || !bytes.Equal(a.body, der) || a.header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("GET: %d %q, %d octets; want the published response", a.code, a.header.Get("Content-Type"), len(a.body))
	}
	cc := a.header.Get("Cache-Control")
	var maxAge int64
	if _, err := fmt.Sscanf(cc, "max-age=%d, public, no-transform, must-revalidate", &maxAge); err != nil || !strings.HasSuffix(cc, ", public, no-transform, must-revalidate") {
		t.Fatalf("Cache-Control %q", cc)
	}
	if until := int64(s.NextUpdate.Sub(before) / time.Second); maxAge > until || maxAge < until-60 {
		t.Errorf("max-age=%d, want at most the %d s to nextUpdate (and not far below)", maxAge, until)
	}
	for key, want := range map[string]string{"Last-Modified": s.ThisUpdate.UTC().Format(http.TimeFormat),
		"Expires": s.NextUpdate.UTC().Format(http.TimeFormat), "Etag": etag} {
		if got := a.header.Get(key); got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
	for _, tc := range []struct {
		name   string
		header []string
		want   int
	}{
		{"If-None-Match, same", []string{"If-None-Match", etag}, 304},
		{"If-None-Match, in a list", []string{"If-None-Match", `"00", ` + etag}, 304},
		{"If-None-Match, *", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match, another", []string{"If-None-Match", `"00"`}, 200},
		{"If-Modified-Since thisUpdate: not trusted, a response of the same second may differ", []string{"If-Modified-Since", s.ThisUpdate.UTC().Format(http.TimeFormat)}, 200},
		{"If-Modified-Since before", []string{"If-Modified-Since", s.ThisUpdate.Add(-time.Second).UTC().Format(http.TimeFormat)}, 200},
		{"If-None-Match decides over If-Modified-Since", []string{"If-None-Match", `"00"`, "If-Modified-Since", s.ThisUpdate.UTC().Format(http.TimeFormat)}, 200},
	} {
		a := do(t, "GET", r.url()+getPath(req), nil, tc.header...)
		if a.code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, a.code, tc.want)
		}
		if a.code == 304 && (len(a.body) != 0 || a.header.Get("Etag") != etag || a.header.Get("Cache-Control") != cc) {
			t.Errorf("%s: 304 with %d octets, ETag %q, Cache-Control %q", tc.name, len(a.body), a.header.Get("Etag"), a.header.Get("Cache-Control"))
		}
	}
	if a := do(t, "HEAD", r.url()+getPath(req), nil); a.code != 200 || len(a.body) != 0 || a.header.Get("Etag") != etag {
		t.Errorf("HEAD: %d, %d octets, ETag %q", a.code, len(a.body), a.header.Get("Etag"))
	}
	p := post(t, r, req)
	if p.code != 200 || !bytes.Equal(p.body, der) {
		t.Fatalf("POST: %d, %d octets", p.code, len(p.body))
	}
	if p.header.Get("Etag") != "" || p.header.Get("Expires") != "" || p.header.Get("Cache-Control") != "no-store" {
		t.Errorf("POST answer cacheable: %v", p.header)
	}
	// Error answers are not cached: the next publication may change them.
	if a := do(t, "GET", r.url()+getPath(requestDER(t, certID(t, ca, []byte{1}, ocsp.SHA256))), nil); errorStatus(a.body) != int(ocsp.Unauthorized) || a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("unknown serial: %d %x, Cache-Control %q", a.code, a.body, a.header.Get("Cache-Control"))
	}
}

// Garbage, oversize and misdirected requests get the answer they should,
// and the responder goes on serving.
func TestBadRequests(t *testing.T) {
	ca := newCA(t, hsm.SM2, "SM2 CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{0x33}
	der := ca.sign(t, good(serial, time.Hour), ocsp.SHA1)
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: der})
	r := startResponder(t, dirConfig(pub, ca)+"limits: {max_request_bytes: 512}\n")
	req := requestDER(t, certID(t, ca, serial, ocsp.SHA1))
	// An oversize request that is otherwise valid: the CertID padded with a huge serial would not
	// parse, so the request carries a requestorName of filler instead.
	big := bytes.Clone(req)
	{
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(o *cryptobyte.Builder) {
			o.AddASN1(casn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
				tbs.AddASN1(casn1.Tag(1).Constructed().ContextSpecific(), func(n *cryptobyte.Builder) {
					n.AddASN1(casn1.Tag(1).ContextSpecific(), func(e *cryptobyte.Builder) { e.AddBytes(bytes.Repeat([]byte{'a'}, 600)) })
				})
				in := cryptobyte.String(req)
				var outer, inner cryptobyte.String
				in.ReadASN1(&outer, casn1.SEQUENCE)
				outer.ReadASN1(&inner, casn1.SEQUENCE)
				tbs.AddBytes(inner)
			})
		})
		big = b.BytesOrPanic()
		if _, err := ocsp.ParseRequest(big); err != nil {
			t.Fatalf("the oversize request does not parse: %v", err)
		}
	}
	malformed, unauthorized := int(ocsp.MalformedRequest), int(ocsp.Unauthorized)
	for _, tc := range []struct {
		name         string
		method, path string
		body         []byte
		header       []string
		code, status int // status: the OCSP error status, 0 for none
	}{
		{"GET garbage base64", "GET", "/AAAA", nil, nil, 200, malformed},
		{"GET not base64", "GET", "/" + strings.Repeat("A", 5), nil, nil, 200, malformed},
		{"GET oversize", "GET", getPath(big), nil, nil, 200, malformed},
		{"GET two requests", "GET", getPath(requestDER(t, certID(t, ca, serial, ocsp.SHA1), certID(t, ca, serial, ocsp.SHA1))), nil, nil, 200, malformed},
		{"GET unknown serial", "GET", getPath(requestDER(t, certID(t, ca, []byte{0x34}, ocsp.SHA1))), nil, nil, 200, unauthorized},
		{"GET serial longer than a certificate's", "GET", getPath(requestDER(t, certID(t, ca, bytes.Repeat([]byte{0x7f}, 21), ocsp.SHA1))), nil, nil, 200, unauthorized},
		{"GET root", "GET", "/", nil, nil, 404, 0},
		{"GET a file name", "GET", "/favicon.ico", nil, nil, 404, 0},
		{"GET with a query", "GET", getPath(req) + "?x=1", nil, nil, 404, 0},
		{"POST garbage", "POST", "/", []byte("garbage"), []string{"Content-Type", "application/ocsp-request"}, 200, malformed},
		{"POST empty", "POST", "/", []byte{}, []string{"Content-Type", "application/ocsp-request"}, 200, malformed},
		{"POST oversize", "POST", "/", big, []string{"Content-Type", "application/ocsp-request"}, 200, malformed},
		{"POST 1 MiB", "POST", "/", bytes.Repeat([]byte{0x30}, 1<<20), []string{"Content-Type", "application/ocsp-request"}, 200, malformed},
		{"POST another type", "POST", "/", req, []string{"Content-Type", "application/json"}, 415, 0},
		{"POST another path", "POST", "/ocsp", req, []string{"Content-Type", "application/ocsp-request"}, 404, 0},
		{"PUT", "PUT", "/", req, nil, 405, 0},
		{"DELETE", "DELETE", getPath(req), nil, nil, 405, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, r.url()+tc.path, tc.body, tc.header...)
			if a.code != tc.code {
				t.Fatalf("%d, want %d: %q", a.code, tc.code, a.body)
			}
			if tc.status != 0 && errorStatus(a.body) != tc.status {
				t.Fatalf("body %x, want the OCSP error response %d", a.body, tc.status)
			}
			if tc.code == 405 && a.header.Get("Allow") != "GET, HEAD, POST" {
				t.Errorf("Allow: %q", a.header.Get("Allow"))
			}
		})
	}
	// A chunked oversize body (no Content-Length to refuse it by).
	resp, err := http.Post(r.url()+"/", "application/ocsp-request", io.MultiReader(bytes.NewReader(big), strings.NewReader("")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ContentLength != 5 || errorStatus(b) != malformed {
		t.Errorf("chunked oversize POST: %d %x", resp.StatusCode, b)
	}
	if a := post(t, r, req); a.code != 200 || !bytes.Equal(a.body, der) {
		t.Fatalf("after the bad requests: %d %x", a.code, a.body)
	}
}

// A restarted responder serves the same response; one replaced on disk is
// served from the next request on (the cache checks the file's version),
// and one removed (its certificate expired) is no longer served.
func TestRestartReplaceRemove(t *testing.T) {
	ca := newCA(t, hsm.SM2, "SM2 CA")
	pub := filepath.Join(t.TempDir(), "publish")
	serial := []byte{0x55, 0x66}
	first := ca.sign(t, good(serial, time.Hour), ocsp.SM3)
	publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: first})
	cfg := dirConfig(pub, ca)
	path := getPath(requestDER(t, certID(t, ca, serial, ocsp.SM3)))

	r := startResponder(t, cfg)
	if a := do(t, "GET", r.url()+path, nil); !bytes.Equal(a.body, first) {
		t.Fatalf("first: %d %x", a.code, a.body)
	}
	r.stop(t)
	r = startResponder(t, cfg)
	if a := do(t, "GET", r.url()+path, nil); !bytes.Equal(a.body, first) {
		t.Fatalf("after a restart: %d %x", a.code, a.body)
	}
	for i := range 3 {
		// A refresh signs again with a later thisUpdate, as signerd does.
		s := good(serial, time.Hour)
		s.ThisUpdate = s.ThisUpdate.Add(time.Duration(i+1) * time.Second)
		next := ca.sign(t, s, ocsp.SM3)
		publishOCSP(t, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: next})
		if a := do(t, "GET", r.url()+path, nil); !bytes.Equal(a.body, next) {
			t.Fatalf("refresh %d: served the old response (%d %x)", i, a.code, a.body)
		}
	}
	d, err := publish.Open(pub, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.RemoveOCSP(ca.id(), serial); err != nil {
		t.Fatal(err)
	}
	if a := do(t, "GET", r.url()+path, nil); errorStatus(a.body) != int(ocsp.Unauthorized) {
		t.Fatalf("after RemoveOCSP: %d %x", a.code, a.body)
	}
	// A file that is not a response (a publishing bug) is an internal
	// error, not bytes served as a response.
	name, _ := publish.OCSPName(ca.id(), serial)
	if err := os.WriteFile(filepath.Join(pub, name), []byte("not a response"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := do(t, "GET", r.url()+path, nil); errorStatus(a.body) != int(ocsp.InternalError) {
		t.Fatalf("a file that is not a response: %d %x", a.code, a.body)
	}
}

// The responder is keyless: nothing of the HSM, the engine or the
// issuance path is linked into it. The store is, for its PostgreSQL
// Reader, which reads one table in read-only sessions.
func TestLinksNoKeyAccess(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages:\n%s", len(deps), out)
	}
	for _, dep := range deps {
		for _, banned := range []string{"signerd/hsm", "signerd/engine", "signerd/issuance", "github.com/miekg/pkcs11", "github.com/ThalesGroup/crypto11"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("ocsp-responder links %s", dep)
			}
		}
	}
}
