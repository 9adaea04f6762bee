package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"signerd/hsm"
	"signerd/ocsp"
	"signerd/publish"
)

// BenchmarkServeHTTP is the handler's own cost for a cached GET, without
// the HTTP server and the network (signerctl bench -ocsp-responder
// measures those).
func BenchmarkServeHTTP(b *testing.B) {
	ca := newCA(b, hsm.SM2, "CA")
	pub := filepath.Join(b.TempDir(), "publish")
	serial := []byte{0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	publishOCSP(b, pub, publish.OCSPResponse{Issuer: ca.id(), Serial: serial, DER: ca.sign(b, good(serial, time.Hour), ocsp.SHA1)})
	iss, err := loadIssuers([]string{ca.pem})
	if err != nil {
		b.Fatal(err)
	}
	src, err := openDirSource(pub, 10)
	if err != nil {
		b.Fatal(err)
	}
	r := &responder{issuers: iss, source: src, maxRequest: 1024, now: time.Now, log: slog.Default()}
	req := httptest.NewRequest("GET", getPath(requestDER(b, certID(b, ca, serial, ocsp.SHA1))), nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
