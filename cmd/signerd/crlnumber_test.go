package main

import (
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine/enginetest"
)

// signCRLChecked has signerd sign a CRL as the operator, checks it with
// OpenSSL (signature, and the number as OpenSSL reads it) and returns it.
func (d *daemonProc) signCRLChecked(t *testing.T, what string) *smx509.RevocationList {
	t.Helper()
	r := d.callAs(t, operatorUID, "POST", "/v1/crl")
	want(t, what, r, http.StatusCreated, "")
	crl, err := smx509.ParseRevocationList(r.body)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	enginetest.OpenSSLVerifySigned(t, d.ca.Cert, r.body)
	der := filepath.Join(t.TempDir(), "crl.der")
	if err := os.WriteFile(der, r.body, 0o600); err != nil {
		t.Fatal(err)
	}
	text, err := enginetest.OpenSSL(t, "crl", "-inform", "DER", "-in", der, "-noout", "-text")
	if err != nil || !strings.Contains(text, "X509v3 CRL Number:") || !strings.Contains(text, crl.Number.String()) {
		t.Fatalf("%s: OpenSSL does not read CRL number %v: %v\n%s", what, crl.Number, err, text)
	}
	return crl
}

// TestRestoredStoreNeverReusesCRLNumbers: CRLs are signed, the store is
// copied, a certificate is revoked and two more CRLs list it; then the old
// copy is put back and signerd started with --acknowledge-audit-break. The
// CRLs it signs from the old copy (which knows nothing of the revocation
// nor of the two CRLs) carry numbers above every number published before,
// so a relying party holding the last of those takes the new ones
// (RFC 5280 §5.2.3) rather than ignoring them as older.
func TestRestoredStoreNeverReusesCRLNumbers(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	serial := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "crl-1", "person-sign"))).Serial
	var published []*big.Int
	sign := func(what string, entries int) {
		t.Helper()
		crl := d.signCRLChecked(t, what)
		if len(crl.RevokedCertificateEntries) != entries {
			t.Fatalf("%s: %d entries, want %d", what, len(crl.RevokedCertificateEntries), entries)
		}
		for _, n := range published {
			if crl.Number.Cmp(n) <= 0 {
				t.Fatalf("%s: CRL number %v, not above %v published before (all before: %v)", what, crl.Number, n, published)
			}
		}
		if len(crl.Number.Bytes()) > 20 {
			t.Fatalf("%s: CRL number %v longer than 20 octets", what, crl.Number)
		}
		published = append(published, crl.Number)
	}
	sign("first CRL", 0)
	d.stop(t)
	backup := filepath.Join(t.TempDir(), "old.db")
	copyFile(t, d.store, backup, 0o600)
	d.start(t)
	want(t, "revoke", d.call(t, "POST", "/v1/certificates/"+serial+"/revoke", `{"reason":"keyCompromise"}`), http.StatusOK, "")
	sign("CRL after the backup", 1)
	sign("second CRL after the backup", 1)
	d.stop(t)

	copyFile(t, backup, d.store, 0o600)
	d.args = []string{"--acknowledge-audit-break", "test: old copy restored"}
	d.start(t)
	sign("first CRL from the restored copy", 0)
	sign("second CRL from the restored copy", 0)
	t.Logf("CRL numbers in signing order: %v", published)
}
