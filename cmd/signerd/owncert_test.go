package main

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/emmansun/gmsm/smx509"

	"signerd/audit"
	"signerd/store"
)

// auditKeyCertificate is the certificate signerd issued itself for its
// audit key, as the auditor's bundle carries it; the bundle must verify
// against the root and be anchored.
func (d *daemonProc) auditKeyCertificate(t *testing.T) *smx509.Certificate {
	t.Helper()
	bundle := d.callAs(t, auditorUID, "POST", "/v1/audit/export")
	rep := audit.Verify(bundle.body, audit.Options{Root: d.ca.Root})
	if !rep.OK() || !rep.Anchored {
		t.Fatalf("the auditor's bundle: %v", rep.Problems)
	}
	for _, k := range rep.Keys {
		if k.KeyUsage == audit.KeyUsage && strings.HasPrefix(k.Subject.CommonName, audit.KeySubjectPrefix) {
			return k
		}
	}
	t.Fatal("the bundle carries no audit key certificate")
	return nil
}

// TestRACannotReachSignerdsOwnCertificates: the audit key's certificate,
// which signerd issues for itself, is out of every RA route's reach. An RA
// that learns its serial (the auditor's bundle carries the certificate)
// gets, on each route, exactly the answer a serial that does not exist
// gets; nor can it issue under signerd's own profile or request ids. The
// certificate stays good, and each attempt is in the audit log.
func TestRACannotReachSignerdsOwnCertificates(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)

	own := d.auditKeyCertificate(t)
	ownSerial := hex.EncodeToString(own.SerialNumber.Bytes())
	// A serial of the same length that no certificate has: what "does not
	// exist" looks like on each route.
	absent := strings.Repeat("7e", len(own.SerialNumber.Bytes()))

	routes := []struct{ name, method, suffix, body string }{
		{"status", "GET", "", ""},
		{"renew", "POST", "/renew", issueBody(t, "renew-own", "person-sign")},
		{"extend", "POST", "/extend", `{"request_id":"extend-own","validity_days":30}`},
		{"revoke", "POST", "/revoke", `{"reason":"keyCompromise"}`},
		{"hold", "POST", "/hold", ""},
		{"restore", "POST", "/restore", ""},
	}
	for _, r := range routes {
		got := d.call(t, r.method, "/v1/certificates/"+ownSerial+r.suffix, r.body)
		if got.status != http.StatusNotFound || got.code != "not_found" {
			t.Errorf("%s on the audit key's certificate: %d %s", r.name, got.status, got.body)
			continue
		}
		body := strings.Replace(r.body, "-own", "-absent", 1)
		none := d.call(t, r.method, "/v1/certificates/"+absent+r.suffix, body)
		if !bytes.Equal(bytes.ReplaceAll(got.body, []byte(ownSerial), []byte(absent)), none.body) {
			t.Errorf("%s: the answer tells the audit key's serial from one that does not exist:\n%s\n%s", r.name, got.body, none.body)
		}
	}
	keyID := hex.EncodeToString(own.SubjectKeyId)
	for _, tt := range []struct{ name, body, code string }{
		{"signerd's own profile", strings.Replace(issueBody(t, "own-profile", "person-sign"), `"person-sign"`, `"signerd-audit-key"`, 1), "unknown_profile"},
		{"signerd's request id", issueBody(t, "signerd.audit-key."+keyID, "person-sign"), "bad_request"},
		{"signerd's request id prefix", issueBody(t, "signerd.anything", "person-sign"), "bad_request"},
	} {
		want(t, tt.name, d.call(t, "POST", "/v1/certificates", tt.body), http.StatusBadRequest, tt.code)
	}
	// The RA's own certificates are still its to manage.
	mine := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "mine", "person-sign")))
	want(t, "hold the RA's own certificate", d.call(t, "POST", "/v1/certificates/"+mine.Serial+"/hold", ""), http.StatusOK, "")

	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	st := openStore(t, d.store)
	refused := map[string]bool{}
	st.View(func(tx *store.Tx) error {
		c, err := tx.Certificate(own.SerialNumber.Bytes())
		if err != nil {
			t.Fatalf("the audit key's certificate: %v", err)
		}
		if c.Status != store.StatusGood || c.SupersededBy != nil || !c.RevokedAt.IsZero() {
			t.Errorf("the audit key's certificate is %s (superseded by %x, revoked at %v), want good", c.Status, c.SupersededBy, c.RevokedAt)
		}
		tx.Certificates(func(c *store.Certificate) error {
			if bytes.Equal(c.Replaces, own.SerialNumber.Bytes()) {
				t.Errorf("certificate %x replaces the audit key's", c.Serial)
			}
			return nil
		})
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Object == ownSerial && ev.Outcome == store.OutcomeRefused {
				refused[ev.Action] = true
			}
			return nil
		})
	})
	for _, action := range []string{"certificate.renew", "certificate.extend", "certificate.revoke", "certificate.hold", "certificate.restore"} {
		if !refused[action] {
			t.Errorf("no refused %s of the audit key's certificate in the audit log (%v)", action, refused)
		}
	}
}
