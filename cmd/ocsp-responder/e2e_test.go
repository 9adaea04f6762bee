package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine/enginetest"
	"signerd/hsm"
)

// signerdProc is signerd running as a subprocess on a SoftHSM2 token made
// for the test, pre-signing OCSP responses into publish.dir.
type signerdProc struct {
	ca      *enginetest.CA
	dir     string
	socket  string
	publish string
	issuer  string // PEM of the issuing CA
	cmd     *exec.Cmd
	log     lockedBuffer
	exited  chan error
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startSignerd starts signerd on a new CA with the store storeYAML (the
// value of the store key) and OCSP pre-signing on, and waits until it
// answers on its socket. The test process is its RA.
func startSignerd(t *testing.T, storeYAML string) *signerdProc {
	t.Helper()
	ca := enginetest.NewCA(t)
	dir := t.TempDir()
	ca.Save(t, dir)
	d := &signerdProc{ca: ca, dir: dir, socket: filepath.Join(dir, "signerd.sock"), publish: filepath.Join(dir, "publish"),
		issuer: enginetest.WritePEM(t, dir, "issuing.pem", "CERTIFICATE", ca.Cert.Raw)}
	cfg := fmt.Sprintf(`hsm:
  module: %s
  token: %s
  pin_file: %s
  sessions: 4
  pin_refused_marker: %s
issuers:
  - key: %s
    certificate: %s
store: %s
socket: {path: %s, mode: "0600"}
roles:
  ra: {uids: [%d]}
ocsp: {validity: 1h}
publish: {dir: %s}
`, ca.Token.Module, ca.Token.Label, filepath.Join(dir, "pin"), filepath.Join(dir, "pin-refused"), enginetest.IssuingLabel, d.issuer,
		storeYAML, d.socket, os.Getuid(), d.publish)
	config := filepath.Join(dir, "signerd.yaml")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(signerdBin, "--config", config)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.exited:
			if err != nil {
				t.Errorf("signerd exit: %v\n%s", err, d.log.String())
			}
		case <-time.After(30 * time.Second):
			d.cmd.Process.Kill()
			t.Errorf("signerd did not stop on SIGTERM:\n%s", d.log.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("signerd exited at start: %v\n%s", err, d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("signerd not serving after 30s:\n%s", d.log.String())
		}
	}
}

// call makes an API request as the RA and decodes the certificate it
// answers with, failing the test on any other status than want.
func (d *signerdProc) call(t *testing.T, method, path, body string, want int) api.Certificate {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		}}}
	req, err := http.NewRequest(method, "http://signerd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var c api.Certificate
	if resp.StatusCode != want || json.Unmarshal(raw, &c) != nil || c.Serial == "" {
		t.Fatalf("%s %s: %d %s; want %d and a certificate", method, path, resp.StatusCode, raw, want)
	}
	return c
}

// issue has signerd issue a certificate and writes it as PEM.
func (d *signerdProc) issue(t *testing.T, id string) (api.Certificate, string) {
	t.Helper()
	_, csr := enginetest.NewCSR(t)
	body, _ := json.Marshal(api.IssueRequest{RequestID: id, Profile: "person-sign",
		Subject: api.Subject{CommonName: "OCSP " + id, Country: "CN"},
		CSR:     string(pem.EncodeToMemory(&pem.Block{Type: api.PEMCSR, Bytes: csr}))})
	c := d.call(t, "POST", "/v1/certificates", string(body), http.StatusCreated)
	path := filepath.Join(d.dir, id+".pem")
	if err := os.WriteFile(path, []byte(c.Certificate), 0o644); err != nil {
		t.Fatal(err)
	}
	return c, path
}

// ocspQuery is what one openssl ocsp run printed and the response bytes
// it fetched.
type ocspQuery struct {
	out string
	der []byte
}

func queryOCSP(t *testing.T, url string, args ...string) ocspQuery {
	t.Helper()
	respOut := filepath.Join(t.TempDir(), "resp.der")
	out, _ := opensslOCSP(t, append(args, "-url", url, "-noverify", "-respout", respOut)...)
	der, _ := os.ReadFile(respOut)
	return ocspQuery{out: out, der: der}
}

// awaitOCSP asks until OpenSSL's answer contains every one of want:
// signerd signs and publishes a response shortly after a change, and the
// responder serves what it finds.
func awaitOCSP(t *testing.T, url string, args []string, want ...string) ocspQuery {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		q := queryOCSP(t, url, args...)
		missing := ""
		for _, w := range want {
			if !strings.Contains(q.out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			t.Logf("%q after %v", want[0], time.Since(start).Round(10*time.Millisecond))
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("openssl ocsp %v: no %q after 20s:\n%s", args, missing, q.out)
		}
	}
}

var responderCertPEM = regexp.MustCompile(`(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n`)

// verifySigned checks the response's SM2 signature with OpenSSL over the
// tbsResponseData, against the responder certificate it carries, and that
// certificate under the issuing CA.
func verifySigned(t *testing.T, d *signerdProc, der []byte) {
	t.Helper()
	dir := t.TempDir()
	resp := filepath.Join(dir, "resp.der")
	os.WriteFile(resp, der, 0o600)
	text, err := exec.Command("openssl", "ocsp", "-respin", resp, "-resp_text", "-noverify").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl ocsp -respin: %v\n%s", err, text)
	}
	cert := responderCertPEM.Find(text)
	if cert == nil {
		t.Fatalf("the response carries no responder certificate:\n%s", text)
	}
	signer := filepath.Join(dir, "responder.pem")
	os.WriteFile(signer, cert, 0o600)
	if v, err := exec.Command("../../testdata/openssl-ocsp-verify.sh", resp, signer).CombinedOutput(); err != nil ||
		!strings.Contains(string(v), "Signature Verified Successfully") {
		t.Fatalf("openssl-ocsp-verify.sh: %v\n%s", err, v)
	}
	if v, err := exec.Command("openssl", "verify", "-vfyopt", "distid:1234567812345678", "-partial_chain", "-purpose", "ocsphelper",
		"-CAfile", d.issuer, signer).CombinedOutput(); err != nil || !strings.Contains(string(v), ": OK") {
		t.Fatalf("the responder certificate under the issuing CA: %v\n%s", err, v)
	}
}

// revocationTime is how openssl ocsp prints a revocation time.
func revocationTime(at *time.Time) string {
	if at == nil {
		return "Revocation Time: (none in the API's answer)"
	}
	return "Revocation Time: " + at.UTC().Format("Jan _2 15:04:05 2006 GMT")
}

// endToEnd runs signerd (store storeYAML) and the responder (its source
// from sourceYAML(signerd)) as processes, and has OpenSSL follow one
// certificate through issuance, hold, restore and revocation, each
// change made through signerd's API; then a certificate of an issuer not
// served, and a restart of the responder.
func endToEnd(t *testing.T, d *signerdProc, source string) {
	t.Helper()
	other := newCA(t, hsm.SM2, "other CA")
	otherLeaf := other.leaf(t, []byte{0x33})
	config := fmt.Sprintf("issuers: [%s]\n%s", d.issuer, source)
	r := startResponder(t, config)

	c, leaf := d.issue(t, "e2e-1")
	path := "/v1/certificates/" + c.Serial
	ask := func(digest string) []string { return []string{"-issuer", d.issuer, digest, "-cert", leaf} }

	// Issuance → good, and the one response answers every CertID hash.
	q := awaitOCSP(t, r.url(), ask("-sha1"), leaf+": good", "This Update: ", "Next Update: ")
	verifySigned(t, d, q.der)
	for _, digest := range []string{"-sha256", "-sm3"} {
		if o := queryOCSP(t, r.url(), ask(digest)...); !strings.Contains(o.out, leaf+": good") || !bytes.Equal(o.der, q.der) {
			t.Errorf("%s: not the bytes the SHA-1 request got:\n%s", digest, o.out)
		}
	}

	held := d.call(t, "POST", path+"/hold", "", http.StatusOK)
	q = awaitOCSP(t, r.url(), ask("-sm3"), leaf+": revoked", "Reason: certificateHold", revocationTime(held.RevokedAt))
	verifySigned(t, d, q.der)

	d.call(t, "POST", path+"/restore", "", http.StatusOK)
	awaitOCSP(t, r.url(), ask("-sha256"), leaf+": good")

	revoked := d.call(t, "POST", path+"/revoke", `{"reason":"keyCompromise"}`, http.StatusOK)
	q = awaitOCSP(t, r.url(), ask("-sha1"), leaf+": revoked", "Reason: keyCompromise", revocationTime(revoked.RevokedAt))
	verifySigned(t, d, q.der)
	for _, digest := range []string{"-sha256", "-sm3"} {
		if o := queryOCSP(t, r.url(), ask(digest)...); !bytes.Equal(o.der, q.der) {
			t.Errorf("%s after the revocation: not the bytes the SHA-1 request got:\n%s", digest, o.out)
		}
	}

	if o := queryOCSP(t, r.url(), "-issuer", other.pem, "-cert", otherLeaf); !strings.Contains(o.out, "Responder Error: unauthorized (6)") {
		t.Errorf("an issuer not served:\n%s", o.out)
	}

	// A restarted responder serves the same bytes.
	r.stop(t)
	r = startResponder(t, config)
	if o := queryOCSP(t, r.url(), ask("-sha1")...); !bytes.Equal(o.der, q.der) {
		t.Errorf("after a restart of the responder: not the bytes served before:\n%s", o.out)
	}
}

// TestEndToEndDirectory: signerd on its store file publishes into
// publish.dir; the responder reads that directory.
func TestEndToEndDirectory(t *testing.T) {
	d := startSignerd(t, filepath.Join(t.TempDir(), "signerd.db"))
	endToEnd(t, d, fmt.Sprintf("source: {dir: %s}\n", d.publish))
}
