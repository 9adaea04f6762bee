package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"signerd/api"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// capturedRequest is a signed RA request as it went over the socket, kept
// to be sent again as it is.
type capturedRequest struct {
	method, path, body string
	header             http.Header
}

// signRA signs a request the way signerctl does, with a fresh nonce.
func signRA(t *testing.T, key *sm2.PrivateKey, serial, method, path, body string) capturedRequest {
	t.Helper()
	date := time.Now().UTC().Format(time.RFC3339Nano)
	nonce := newNonce(t)
	sig, err := key.SignMessage(rand.Reader, api.SignedText(method, path, date, nonce, serial, []byte(body)), sm2.DefaultSM2SignerOpts)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(api.HeaderDate, date)
	h.Set(api.HeaderNonce, nonce)
	h.Set(api.HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	h.Set(api.HeaderCertificate, serial)
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	return capturedRequest{method, path, body, h}
}

func (d *daemonProc) send(t *testing.T, c capturedRequest) reply {
	t.Helper()
	r, err := d.trySend(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// trySend is send for goroutines other than the test's.
func (d *daemonProc) trySend(c capturedRequest) (reply, error) {
	req, err := http.NewRequest(c.method, "http://signerd"+c.path, strings.NewReader(c.body))
	if err != nil {
		return reply{}, err
	}
	req.Header = c.header.Clone()
	resp, err := d.client().Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: %w", c.method, c.path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseReply(resp.StatusCode, raw), nil
}

// holder is a key and the serials of the certificates issued for it.
type holder struct {
	key     *sm2.PrivateKey
	serials []string
	subject string
}

// issueFor has the (unsigned) RA certify a new key under profile.
func (d *daemonProc) issueFor(t *testing.T, id, profile string) *holder {
	t.Helper()
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"request_id": id, "profile": profile,
		"subject": map[string]string{"CN": "RA " + id, "O": "某市政务服务中心"},
		"csr":     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	r := d.call(t, "POST", "/v1/certificates", string(body))
	want(t, "issue "+id, r, 201, "")
	v := certView(t, r)
	return &holder{key: key, serials: []string{v.Serial}, subject: v.Subject}
}

// extend has the (unsigned) RA reissue h's last certificate for the same key.
func (d *daemonProc) extend(t *testing.T, h *holder, id string) {
	t.Helper()
	r := d.call(t, "POST", "/v1/certificates/"+h.serials[len(h.serials)-1]+"/extend", `{"request_id":"`+id+`"}`)
	want(t, "extend "+id, r, 201, "")
	h.serials = append(h.serials, certView(t, r).Serial)
}

// TestRASignaturesAreTrustworthy holds signerd, with ra_signatures
// required, to the three properties an RA's signature must have: only a
// certificate made for an RA (the ra-sign profile's cmcRA EKU, and the
// allow-list when one is set) may sign; a key stops signing once any
// certificate for it is revoked, a superseded one included; and a signed
// request is accepted once, across a restart too.
func TestRASignaturesAreTrustworthy(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	ra := d.issueFor(t, "ra-proper", "ra-sign")
	citizen := d.issueFor(t, "citizen", "person-sign")
	orgCert := d.issueFor(t, "org", "organization-sign")
	revokedNew := d.issueFor(t, "ra-revoked-new", "ra-sign") // superseded, then its new certificate revoked
	d.extend(t, revokedNew, "ra-revoked-new-2")
	revokedOld := d.issueFor(t, "ra-revoked-old", "ra-sign") // superseded, then its old certificate revoked
	d.extend(t, revokedOld, "ra-revoked-old-2")
	held := d.issueFor(t, "ra-held", "ra-sign")
	target := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "target", "person-sign"))).Serial
	d.restartWith(t, "ra_signatures: {required: true, max_skew: 2m}\n")

	status := func(h *holder, serial string) reply {
		return d.send(t, signRA(t, h.key, serial, "GET", "/v1/certificates/"+target, ""))
	}
	want(t, "the RA's ra-sign certificate", status(ra, ra.serials[0]), 200, "")
	want(t, "a citizen's signing certificate", status(citizen, citizen.serials[0]), 401, string(api.CodeRACertificate))
	want(t, "an organization's signing certificate", status(orgCert, orgCert.serials[0]), 401, string(api.CodeRACertificate))
	for _, h := range []*holder{revokedNew, revokedOld} {
		for _, s := range h.serials {
			want(t, "before revocation", status(h, s), 200, "")
		}
	}

	// A captured request is accepted once: replayed as it is, or after
	// the certificate it acted on changed back, it is refused.
	hold := signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+target+"/hold", "")
	want(t, "hold", d.send(t, hold), 200, "")
	want(t, "hold replayed", d.send(t, hold), 401, string(api.CodeReplayed))
	want(t, "restore", d.send(t, signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+target+"/restore", "")), 200, "")
	want(t, "hold replayed after restore", d.send(t, hold), 401, string(api.CodeReplayed))
	renamed := hold
	renamed.header = hold.header.Clone()
	renamed.header.Set(api.HeaderCertificate, strings.ToUpper(ra.serials[0]))
	want(t, "hold replayed under the serial spelt otherwise", d.send(t, renamed), 401, string(api.CodeBadSignature))
	get := signRA(t, ra.key, ra.serials[0], "GET", "/v1/certificates/"+target, "")
	want(t, "status", d.send(t, get), 200, "")
	// Copies of one request racing each other: one at most goes through.
	race := signRA(t, ra.key, ra.serials[0], "GET", "/v1/certificates/"+target, "")
	type answer struct {
		r   reply
		err error
	}
	answers := make(chan answer, 8)
	for range cap(answers) {
		go func() { r, err := d.trySend(race); answers <- answer{r, err} }()
	}
	accepted := 0
	for range cap(answers) {
		a := <-answers
		switch {
		case a.err != nil:
			t.Fatal(a.err)
		case a.r.status == 200:
			accepted++
		case a.r.status != 401 || a.r.code != string(api.CodeReplayed):
			t.Fatalf("a racing copy: %d %q", a.r.status, a.r.code)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d racing copies of one signed request accepted, want 1", accepted)
	}

	// Revoking either certificate of a key stops the key, through every
	// certificate for it.
	revoke := func(serial string) {
		t.Helper()
		want(t, "revoke "+serial, d.send(t, signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+serial+"/revoke", `{"reason":"keyCompromise"}`)), 200, "")
	}
	revoke(revokedNew.serials[1])
	revoke(revokedOld.serials[0])
	for _, h := range []*holder{revokedNew, revokedOld} {
		for _, s := range h.serials {
			want(t, "a certificate of a key with a revoked certificate", status(h, s), 401, string(api.CodeRACertificate))
		}
	}
	want(t, "hold an RA certificate", d.send(t, signRA(t, ra.key, ra.serials[0], "POST", "/v1/certificates/"+held.serials[0]+"/hold", "")), 200, "")
	want(t, "an RA certificate on hold", status(held, held.serials[0]), 401, string(api.CodeRACertificate))

	// A restart forgets nothing: the requests accepted before it stay
	// refused, and a fresh one goes through.
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	d.start(t)
	want(t, "hold replayed after a restart", d.send(t, hold), 401, string(api.CodeReplayed))
	want(t, "status replayed after a restart", d.send(t, get), 401, string(api.CodeReplayed))
	want(t, "a fresh request after a restart", d.sendFresh(t, ra, "GET", "/v1/certificates/"+target), 200, "")

	// An allow-list narrows the RA certificates to those it names.
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	other := held // any other ra-sign certificate: restore it first
	d.start(t)
	want(t, "restore the held RA certificate", d.sendFresh(t, ra, "POST", "/v1/certificates/"+other.serials[0]+"/restore"), 200, "")
	want(t, "the restored RA certificate", d.sendFresh(t, other, "GET", "/v1/certificates/"+target), 200, "")
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	d.editConfig(t, "ra_signatures: {required: true, max_skew: 2m}", "ra_signatures: {required: true, max_skew: 2m, allowed_serials: ["+ra.serials[0]+"]}")
	d.start(t)
	want(t, "the listed RA", d.sendFresh(t, ra, "GET", "/v1/certificates/"+target), 200, "")
	want(t, "an RA certificate not listed", d.sendFresh(t, other, "GET", "/v1/certificates/"+target), 401, string(api.CodeRACertificate))
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	d.editConfig(t, "allowed_serials: ["+ra.serials[0]+"]", `allowed_subjects: ["`+other.subject+`"]`)
	d.start(t)
	want(t, "the RA listed by subject", d.sendFresh(t, other, "GET", "/v1/certificates/"+target), 200, "")
	want(t, "an RA whose subject is not listed", d.sendFresh(t, ra, "GET", "/v1/certificates/"+target), 401, string(api.CodeRACertificate))
}

// sendFresh signs a request with h's first certificate, retrying while
// signerd refuses it as dated before the replay mark a restart left (at
// most replayLease after the last accepted request).
func (d *daemonProc) sendFresh(t *testing.T, h *holder, method, path string) reply {
	t.Helper()
	for deadline := time.Now().Add(3 * replayLease); ; time.Sleep(100 * time.Millisecond) {
		r := d.send(t, signRA(t, h.key, h.serials[0], method, path, ""))
		if r.code != string(api.CodeReplayed) || time.Now().After(deadline) {
			return r
		}
	}
}
