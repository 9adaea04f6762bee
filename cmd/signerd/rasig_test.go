package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/store"
)

// signedCall makes an RA request signed with key, whose certificate has
// serial; signBody is what the signature covers (normally body itself).
func (d *daemonProc) signedCall(t *testing.T, key *sm2.PrivateKey, serial, method, path, body, signBody string, date time.Time) reply {
	t.Helper()
	stamp := date.UTC().Format(time.RFC3339Nano)
	nonce := newNonce(t)
	sig, err := key.SignMessage(rand.Reader, api.SignedText(method, path, stamp, nonce, serial, []byte(signBody)), sm2.DefaultSM2SignerOpts)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://signerd"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(api.HeaderDate, stamp)
	req.Header.Set(api.HeaderNonce, nonce)
	req.Header.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	req.Header.Set(api.HeaderCertificate, serial)
	resp, err := d.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseReply(resp.StatusCode, raw)
}

func TestSignedRARequests(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	// The RA's own certificate, issued by this CA.
	raKey, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{}, raKey)
	body, _ := json.Marshal(map[string]any{"request_id": "ra-cert", "profile": "ra-sign",
		"subject": map[string]string{"CN": "RA 前台 01", "O": "某市政务服务中心"}, "csr": pemCSR(csr)})
	raSerial := certView(t, d.call(t, "POST", "/v1/certificates", string(body))).Serial
	d.restartWith(t, "ra_signatures: {required: true, max_skew: 2m}\n")

	now := time.Now()
	issue := issueBody(t, "signed-1", "person-sign")
	want(t, "unsigned", d.call(t, "POST", "/v1/certificates", issue), 401, string(api.CodeSignatureRequired))
	want(t, "body changed after signing", d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", issue, issueBody(t, "signed-1", "person-sign"), now), 401, string(api.CodeBadSignature))
	want(t, "stale date", d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", issue, issue, now.Add(-10*time.Minute)), 401, string(api.CodeStaleSignature))
	other, _ := sm2.GenerateKey(rand.Reader)
	want(t, "someone else's key", d.signedCall(t, other, raSerial, "POST", "/v1/certificates", issue, issue, now), 401, string(api.CodeBadSignature))
	want(t, "unknown RA certificate", d.signedCall(t, raKey, "0102", "POST", "/v1/certificates", issue, issue, now), 401, string(api.CodeRACertificate))
	signed := d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates", issue, issue, now)
	want(t, "signed", signed, 201, "")
	issued := certView(t, signed).Serial
	want(t, "signed status", d.signedCall(t, raKey, raSerial, "GET", "/v1/certificates/"+issued, "", "", now), 200, "")
	// Operators do not sign.
	want(t, "operator health", d.callAs(t, operatorUID, "GET", "/v1/health"), 200, "")
	// Once the RA's certificate is revoked its signatures are refused.
	want(t, "RA revokes its own certificate", d.signedCall(t, raKey, raSerial, "POST", "/v1/certificates/"+raSerial+"/revoke", `{"reason":"keyCompromise"}`, `{"reason":"keyCompromise"}`, now), 200, "")
	want(t, "revoked RA certificate", d.signedCall(t, raKey, raSerial, "GET", "/v1/certificates/"+issued, "", "", now), 401, string(api.CodeRACertificate))

	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, d.store)
	found := false
	st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			if ev.Action != "certificate.issue" || ev.Object != issued {
				return nil
			}
			found = true
			var e struct {
				Signed      string `json:"signed"`
				Signature   []byte `json:"signature"`
				Certificate string `json:"ra_certificate"`
			}
			if err := json.Unmarshal(ev.Actor.Evidence, &e); err != nil || e.Certificate != raSerial {
				t.Fatalf("evidence %s: %v", ev.Actor.Evidence, err)
			}
			// An auditor can check it offline with the RA's public key.
			if !sm2.VerifyASN1WithSM2(&raKey.PublicKey, nil, []byte(e.Signed), e.Signature) {
				t.Error("kept evidence does not verify")
			}
			return nil
		})
	})
	if !found {
		t.Fatal("no audit event for the signed issuance")
	}
}

func newNonce(t *testing.T) string {
	t.Helper()
	n, err := api.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemCSR(der []byte) string {
	return "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END CERTIFICATE REQUEST-----\n"
}
