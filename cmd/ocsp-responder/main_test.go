package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
	"signerd/ocsp"
	"signerd/publish"
	"signerd/store/pgtest"
)

// responderBin is this command, and signerdBin signerd's, built once for
// the tests that run them as the real processes they are in production.
var responderBin, signerdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ocsp-responder-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	responderBin = filepath.Join(dir, "ocsp-responder")
	if out, err := exec.Command("go", "build", "-o", responderBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ocsp-responder: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	signerdBin = filepath.Join(dir, "signerd")
	if out, err := exec.Command("go", "build", "-o", signerdBin, "../signerd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build signerd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(2)
	}
	// pgtest.Main runs the tests and stops the PostgreSQL server they
	// shared.
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// testCA is a software issuing CA (SM2 or ECDSA) behind the one issuance
// path, with its certificate in PEM in its test's directory.
type testCA struct {
	iss  *issuance.Issuer
	key  issuance.Signer
	pem  string // path of its certificate
	dir  string
	name string
}

func newCA(t testing.TB, alg hsm.Algorithm, name string) *testCA {
	t.Helper()
	key, err := issuance.Throwaway(alg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	ski := make([]byte, 20)
	rand.Read(ski)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, Country: []string{"CN"}},
		NotBefore: now.AddDate(0, 0, -1), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: ski}
	cert := createCert(t, tmpl, tmpl, key.Public(), key)
	iss, err := issuance.NewIssuer(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{iss: iss, key: key, dir: t.TempDir(), name: name}
	ca.pem = writePEM(t, ca.dir, name+".pem", cert.Raw)
	return ca
}

func createCert(t testing.TB, tmpl, parent *smx509.Certificate, pub crypto.PublicKey, key crypto.Signer) *smx509.Certificate {
	t.Helper()
	der, err := smx509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEM(t testing.TB, dir, name string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// leaf issues a certificate with serial (store form) and returns its PEM path.
func (ca *testCA) leaf(t testing.TB, serial []byte) string {
	t.Helper()
	key, err := issuance.Throwaway(hsm.SM2)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := createCert(t, &smx509.Certificate{SerialNumber: new(big.Int).SetBytes(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("leaf %x", serial)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: smx509.KeyUsageDigitalSignature},
		ca.iss.Cert, key.Public(), ca.key)
	return writePEM(t, ca.dir, fmt.Sprintf("leaf-%x.pem", serial), c.Raw)
}

// sign has the CA sign the response s (its serial set), its CertID hashed
// with h, produced at its thisUpdate (a stale one can only be made so).
func (ca *testCA) sign(t testing.TB, s ocsp.Single, h ocsp.HashAlg) []byte {
	t.Helper()
	tok, err := ca.iss.PrepareOCSP(s, s.ThisUpdate, h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ca.iss.SignAndIssue(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return out.DER
}

func (ca *testCA) id() string { return ca.iss.ID() }

func good(serial []byte, validity time.Duration) ocsp.Single {
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	return ocsp.Single{Serial: serial, Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(validity)}
}

// publishOCSP publishes responses as signerd does.
func publishOCSP(t testing.TB, dir string, batch ...publish.OCSPResponse) {
	t.Helper()
	d, err := publish.Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.PutOCSP(batch); err != nil {
		t.Fatal(err)
	}
}

// running is an ocsp-responder process.
type running struct {
	addr string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

func (r *running) url() string { return "http://" + r.addr }

func (r *running) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// startResponder writes config (YAML, without listen) and starts the
// responder on a free port of 127.0.0.1; it is stopped by SIGTERM, and
// must then exit 0, when the test ends.
func startResponder(t testing.TB, config string) *running {
	t.Helper()
	if m := regexp.MustCompile(`source: {dir: (.*)}`).FindStringSubmatch(config); m != nil {
		// As signerd makes it when it starts; the responder needs it
		// there. One signerd runs on is left alone: Open would remove
		// the temporaries of a batch signerd is writing.
		if _, err := os.Stat(m[1]); errors.Is(err, fs.ErrNotExist) {
			d, err := publish.Open(m[1], 0)
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
		}
	}
	path := filepath.Join(t.TempDir(), "ocsp-responder.yaml")
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:0\n"+config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(responderBin, "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			r.mu.Lock()
			r.log.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				addr <- line.Addr
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case r.addr = <-addr:
	case <-r.done:
		cmd.Wait()
		t.Fatalf("ocsp-responder exited: %s", r.logText())
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.cmd.ProcessState != nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	<-r.done
	if err := r.cmd.Wait(); err != nil {
		t.Errorf("ocsp-responder exit: %v\n%s", err, r.logText())
	}
}

// dirConfig is the configuration of a responder of cas over dir.
func dirConfig(dir string, cas ...*testCA) string {
	var b strings.Builder
	b.WriteString("issuers:\n")
	for _, ca := range cas {
		fmt.Fprintf(&b, "  - %s\n", ca.pem)
	}
	fmt.Fprintf(&b, "source: {dir: %s}\n", dir)
	return b.String()
}
