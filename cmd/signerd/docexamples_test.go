package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/engine/enginetest"
	"signerd/hsm/hsmtest"
)

// docBlock is a fenced code block of README.md or docs/.
type docBlock struct {
	where string // file:line of the opening fence
	lang  string
	text  string
}

// docFiles are the documents whose examples are held to run.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../../README.md"}
	for _, pattern := range []string{"../../docs/*.md", "../../docs/*/*.md"} {
		more, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, more...)
	}
	return files
}

func docBlocks(t *testing.T) []docBlock {
	t.Helper()
	var blocks []docBlock
	fence := regexp.MustCompile("^```([a-z]*)\\s*$")
	for _, file := range docFiles(t) {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		var cur *docBlock
		for line := 1; sc.Scan(); line++ {
			switch m := fence.FindStringSubmatch(sc.Text()); {
			case m != nil && cur == nil:
				cur = &docBlock{where: fmt.Sprintf("%s:%d", strings.TrimPrefix(file, "../../"), line), lang: m[1]}
			case strings.TrimSpace(sc.Text()) == "```" && cur != nil:
				blocks = append(blocks, *cur)
				cur = nil
			case cur != nil:
				cur.text += sc.Text() + "\n"
			}
		}
		f.Close()
		if cur != nil {
			t.Fatalf("%s: code block never closed", cur.where)
		}
	}
	return blocks
}

// coveredElsewhere are the sh blocks this test does not run, by their
// first line, with what runs them.
var coveredElsewhere = map[string]string{
	"make demo": "make demo and make test are what CI runs; they run themselves",
	// The PostgreSQL examples need a server: cmd/signerctl's
	// TestStorePostgresCommands runs upgrade, migrate and verify --dsn on
	// one (store/pgtest).
	"createdb -O signerd signerd": "TestStorePostgresCommands (cmd/signerctl)",
	"systemctl stop signerd":      "TestStorePostgresCommands (cmd/signerctl)",
}

// Placeholders the documents use, replaced when an example runs.
const (
	docSocket       = "/run/signerd/signerd.sock"
	docSerial       = "3f6a…" // a certificate in good standing
	docRASerial     = "5b1c…" // the RA's ra-sign certificate, for ra.key
	docModulePath   = "/path/to/the/pkcs11/module.so"
	commandPrefixes = "signerctl |curl |make |openssl "
)

// TestDocumentedExamplesRun runs every command example in README.md and
// docs/ (the fenced sh blocks) as written, against a real signerd: only the
// socket path, the certificate serials and the PKCS#11 module path, which
// the documents leave as placeholders, are replaced. Each block runs under
// bash -e with curl told to fail on an HTTP error, in a folder holding
// what the examples name (person.csr, ra.key, root.pem). The ceremony
// walkthrough runs on a fresh SoftHSM2 token folder. A command example
// outside an sh block fails the test, so none escapes it.
func TestDocumentedExamplesRun(t *testing.T) {
	blocks := docBlocks(t)
	command := regexp.MustCompile(`(?m)^\s*(` + commandPrefixes + `)`)
	var daemonBlocks, ceremonyBlocks []docBlock
	listed := map[string]bool{}
	for _, b := range blocks {
		if b.lang != "sh" {
			if command.MatchString(b.text) {
				t.Errorf("%s: a command example in a ```%s block; mark it ```sh so it is run", b.where, b.lang)
			}
			continue
		}
		first := strings.TrimSpace(strings.SplitN(b.text, "#", 2)[0])
		switch {
		case coveredElsewhere[first] != "":
			listed[first] = true
		case strings.Contains(b.text, "signerctl ceremony run"):
			ceremonyBlocks = append(ceremonyBlocks, b)
		default:
			daemonBlocks = append(daemonBlocks, b)
		}
	}
	for first := range coveredElsewhere {
		if !listed[first] {
			t.Errorf("coveredElsewhere names %q, which no sh block starts with", first)
		}
	}
	if len(daemonBlocks) == 0 || len(ceremonyBlocks) == 0 {
		t.Fatalf("found %d daemon and %d ceremony examples; the extraction is broken", len(daemonBlocks), len(ceremonyBlocks))
	}
	bin := exampleBin(t)

	t.Run("daemon", func(t *testing.T) {
		d := newDaemonProc(t, "")
		uid := os.Getuid()
		d.editConfig(t, fmt.Sprintf("operator: {uids: [%d]}", operatorUID), fmt.Sprintf("operator: {uids: [%d]}", uid))
		d.editConfig(t, fmt.Sprintf("auditor: {uids: [%d]}", auditorUID), fmt.Sprintf("auditor: {uids: [%d]}", uid))
		d.start(t)
		raKey, err := sm2.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		raPKCS8, err := smx509.MarshalPKCS8PrivateKey(raKey)
		if err != nil {
			t.Fatal(err)
		}
		raCSR, _ := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{}, raKey)
		body, _ := json.Marshal(map[string]any{"request_id": "doc-ra", "profile": "ra-sign",
			"subject": map[string]string{"CN": "RA 前台 01", "O": "某市政务服务中心"}, "csr": pemCSR(raCSR)})
		raSerial := certView(t, d.call(t, "POST", "/v1/certificates", string(body))).Serial
		for i, b := range daemonBlocks {
			work := t.TempDir()
			_, csr := enginetest.NewCSR(t)
			enginetest.WritePEM(t, work, "person.csr", "CERTIFICATE REQUEST", csr)
			enginetest.WritePEM(t, work, "ra.key", "PRIVATE KEY", raPKCS8)
			enginetest.WritePEM(t, work, "root.pem", "CERTIFICATE", d.ca.Root.Raw)
			serial := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, fmt.Sprintf("doc-%d", i), "person-sign"))).Serial
			script := strings.NewReplacer(docSocket, d.socket, docSerial, serial, docRASerial, raSerial).Replace(b.text)
			runExample(t, b, script, work, bin, "SIGNERD_SOCKET="+d.socket)
		}
	})

	t.Run("ceremonies", func(t *testing.T) {
		hsmtest.NewDir(t)
		module := hsmtest.SM2Module(t)
		for _, b := range ceremonyBlocks {
			room := t.TempDir()
			src := filepath.Join(hsmtest.RepoRoot(t), "docs/ceremonies")
			files, err := filepath.Glob(filepath.Join(src, "*.yaml"))
			if err != nil || len(files) == 0 {
				t.Fatalf("ceremony files: %v", err)
			}
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(room, filepath.Base(f)), data, 0o644)
			}
			// The security officer's PIN and the custodian's passphrase
			// the walkthrough says to bring.
			os.WriteFile(filepath.Join(room, "so.pin"), []byte("so-secret-1234\n"), 0o600)
			os.WriteFile(filepath.Join(room, "chen-jie.passphrase"), []byte("plum blossom in winter\n"), 0o600)
			runExample(t, b, strings.ReplaceAll(b.text, docModulePath, module), room, bin, "SOFTHSM2_CONF="+os.Getenv("SOFTHSM2_CONF"))
			if _, err := os.Stat(filepath.Join(room, "root-2031.pem")); err != nil {
				t.Errorf("%s: the walkthrough ran but made no root-2031.pem: %v", b.where, err)
			}
		}
	})
}

// exampleBin is a folder for PATH holding signerctl, built for the test,
// and a curl that fails on an HTTP error status (with the answer shown),
// so that an example that gets one fails.
func exampleBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "signerctl"), "../signerctl").CombinedOutput(); err != nil {
		t.Fatalf("build signerctl: %v\n%s", err, out)
	}
	real, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nexec " + real + " --fail-with-body --silent --show-error \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "curl"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runExample runs a block's script under bash -e in dir.
func runExample(t *testing.T, b docBlock, script, dir, bin string, env ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s: the example fails as written: %v\n--- script\n%s--- output\n%s", b.where, err, script, out)
		return
	}
	t.Logf("%s: ran", b.where)
}
