package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"signerd/api"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/sm2"
)

// TestRASignatureNamesNoOwnCertificate: a request signed in the name of
// signerd's own certificate (the audit key's, whose serial any auditor's
// bundle shows) is answered exactly as one naming a serial never issued,
// so the RA signature check tells nobody which serials are signerd's.
func TestRASignatureNamesNoOwnCertificate(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	own := hex.EncodeToString(d.auditKeyCertificate(t).SerialNumber.Bytes())
	absent := strings.Repeat("7e", len(own)/2)
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(serial string) string {
		t.Helper()
		r := d.send(t, signRA(t, key, serial, "GET", "/v1/certificates/01", ""))
		want(t, "signed as "+serial, r, http.StatusUnauthorized, string(api.CodeRACertificate))
		return strings.ReplaceAll(string(r.body), serial, "SERIAL")
	}
	if o, a := answer(own), answer(absent); o != a {
		t.Fatalf("signerd's own certificate is told apart from an absent serial:\n own:    %s\n absent: %s", o, a)
	}
}
