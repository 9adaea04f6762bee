package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"signerd/api"
	"signerd/engine/enginetest"
	"signerd/hsm/split"
	"signerd/store"
)

func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	d := newDaemonProc(t, "queue: {batch: 4}\n")
	d.start(t)
	const n = 200
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = issueBody(t, fmt.Sprintf("load-%03d", i), "person-sign")
	}
	statuses := make([]int, n)
	serials := make([]string, n)
	var created atomic.Int32
	var once sync.Once
	var wg sync.WaitGroup
	client := d.client()
	for i := range bodies {
		wg.Go(func() {
			resp, err := client.Post("http://signerd/v1/certificates", "application/json", strings.NewReader(bodies[i]))
			if err != nil {
				return // not accepted: the RA retries
			}
			defer resp.Body.Close()
			statuses[i] = resp.StatusCode
			if resp.StatusCode == http.StatusCreated {
				var v api.Certificate
				if err := decodeJSON(resp, &v); err != nil {
					t.Errorf("request %d: 201 without a certificate: %v", i, err)
				}
				serials[i] = v.Serial
				if created.Add(1) == 20 {
					once.Do(func() { d.cmd.Process.Signal(syscall.SIGTERM) })
				}
			}
		})
	}
	wg.Wait()
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit after SIGTERM: %v\n%s", err, d.log)
	}
	for i, s := range statuses {
		if s != 0 && s != http.StatusCreated && s != http.StatusServiceUnavailable {
			t.Errorf("request %d answered %d during shutdown", i, s)
		}
	}
	st, err := store.Open(d.store)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	st.View(func(tx *store.Tx) error {
		return tx.Certificates(func(c *store.Certificate) error { recorded[store.HexSerial(c.Serial)] = true; return nil })
	})
	st.Close()
	answered := 0
	for i, s := range serials {
		if s != "" {
			answered++
			if !recorded[s] {
				t.Errorf("request %d was answered with %s, which the store does not hold", i, s)
			}
		}
	}
	if answered < 20 {
		t.Fatalf("only %d answered before shutdown", answered)
	}
	// Whatever was not answered succeeds on retry after a restart, and
	// nothing is issued twice.
	d.start(t)
	for i, body := range bodies {
		if serials[i] != "" {
			continue
		}
		want(t, fmt.Sprintf("retry %d", i), d.call(t, "POST", "/v1/certificates", body), http.StatusCreated, "")
	}
	for i, body := range bodies {
		if serials[i] != "" && certView(t, d.call(t, "POST", "/v1/certificates", body)).Serial != serials[i] {
			t.Errorf("retry of answered request %d got another certificate", i)
		}
	}
}

func TestNoNetworkSockets(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	pid := d.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	sockets := map[string]bool{}
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			sockets[strings.TrimSuffix(inode, "]")] = true
		}
	}
	inet := inodes(t, pid, "tcp", "tcp6", "udp", "udp6", "raw", "raw6")
	unix := inodes(t, pid, "unix")
	listening := 0
	for inode := range sockets {
		if inet[inode] {
			t.Errorf("signerd holds a network socket (inode %s)", inode)
		}
		if unix[inode] {
			listening++
		}
	}
	if listening == 0 {
		t.Fatal("found none of signerd's Unix sockets either; the check is blind")
	}
}

// inodes collects socket inodes from /proc/PID/net tables.
func inodes(t *testing.T, pid int, tables ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, table := range tables {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue // protocol not configured
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		col := 9  // inode column of tcp/udp/raw
		if table == "unix" {
			col = 6
		}
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) > col {
				out[fields[col]] = true
			}
		}
		f.Close()
	}
	return out
}

func TestStartupRefusals(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, d *daemonProc)
		log     string
	}{
		// A refused or unreadable PIN has exit status 3: pinrefusal_test.go.
		{"unknown config key", func(t *testing.T, d *daemonProc) {
			appendFile(t, d.config, "colour: red\n")
		}, "field colour not found"},
		{"certificate of another key", func(t *testing.T, d *daemonProc) {
			enginetest.WritePEM(t, d.dir, "issuing.pem", "CERTIFICATE", d.ca.Root.Raw)
		}, "not the certificate's key"},
		{"bad profile", func(t *testing.T, d *daemonProc) {
			appendFile(t, d.config, "profiles:\n  person-sign:\n    max_validity_days: 0\n")
		}, "max_validity_days 0"},
		{"URI with a PIN in it", func(t *testing.T, d *daemonProc) {
			appendFile(t, d.config, "")
			d.editConfig(t, "  token: "+d.ca.Token.Label, "  token: \"pkcs11:token="+d.ca.Token.Label+"?pin-value=wrong-pin-4711\"")
		}, "pin-value refused"},
		{"socket path is a file", func(t *testing.T, d *daemonProc) {
			os.WriteFile(d.socket, nil, 0o600)
		}, "not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDaemonProc(t, "")
			tt.prepare(t, d)
			out, err := exec.Command(signerdBin, "--config", d.config).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("signerd: %v, want exit status 1\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.log) {
				t.Errorf("log does not say %q:\n%s", tt.log, out)
			}
			if strings.Contains(string(out), string(d.ca.Token.PIN)) || strings.Contains(string(out), "wrong-pin-4711") {
				t.Errorf("log holds a PIN:\n%s", out)
			}
		})
	}
}

func TestTokenAsPKCS11URI(t *testing.T) {
	d := newDaemonProc(t, "")
	uri := fmt.Sprintf("  token: \"pkcs11:token=%s;serial=%s?module-path=%s\"\n", d.ca.Token.Label, d.ca.Token.Serial, d.ca.Token.Module)
	d.editConfig(t, fmt.Sprintf("  module: %s\n  token: %s\n", d.ca.Token.Module, d.ca.Token.Label), uri)
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "uri-1", "person-sign")), 201, "")
}

// editConfig replaces old with new in d's configuration; old must be there,
// so a change of the config's layout fails the test instead of silently
// leaving the setting out.
func (d *daemonProc) editConfig(t *testing.T, old, new string) {
	t.Helper()
	raw, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), old) {
		t.Fatalf("config has no %q; the test no longer rewrites it:\n%s", old, raw)
	}
	if err := os.WriteFile(d.config, []byte(strings.Replace(string(raw), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// restartWith stops d, appends extra to its configuration and starts it
// again.
func (d *daemonProc) restartWith(t *testing.T, extra string) {
	t.Helper()
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	appendFile(t, d.config, extra)
	d.start(t)
}

// TestPINFromShares starts signerd with the user PIN rebuilt from three of
// five custodians' shares, and refuses to start with two.
func TestPINFromShares(t *testing.T) {
	d := newDaemonProc(t, "")
	shares, err := split.Split(split.PIN, d.ca.Token.PIN, 3, []string{"a", "b", "c", "d", "e"})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, s := range shares {
		p := filepath.Join(d.dir, fmt.Sprintf("share-%d.pem", i+1))
		if err := os.WriteFile(p, s.Marshal(), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	raw, _ := os.ReadFile(d.config)
	pinLine := "  pin_file: " + filepath.Join(d.dir, "pin") + "\n"
	withShares := func(files ...string) {
		t.Helper()
		cfg := strings.Replace(string(raw), pinLine, "  pin_shares: ["+strings.Join(files, ", ")+"]\n", 1)
		if cfg == string(raw) {
			t.Fatal("config layout changed; the test no longer rewrites it")
		}
		os.WriteFile(d.config, []byte(cfg), 0o600)
	}

	withShares(paths[1], paths[3])
	out, err := exec.Command(signerdBin, "--config", d.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "3 are needed") {
		t.Fatalf("signerd with two shares: %v\n%s", err, out)
	}
	// The refusal is recorded; the operator who brings a third share
	// removes the record (pinmarker.go).
	if err := os.Remove(filepath.Join(d.dir, pinRefusedMarkerName)); err != nil {
		t.Fatalf("no PIN refusal marker after two shares: %v", err)
	}
	withShares(paths[4], paths[0], paths[2])
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "shares-1", "person-sign")), 201, "")
}

// TestAuditLogCheckedAtStart: signerd checks the log from its last seal
// at start-up, refuses to start on one edited there, and starts when an
// operator acknowledges the break, which lands in the log followed by a
// seal. (Edits before the last seal are caught by the seal chain when the
// log is exported and verified.)
func TestAuditLogCheckedAtStart(t *testing.T) {
	// OCSP off: the delegated responder's certification, issued in the
	// background after the start, could be in flight at the kill below,
	// and its burn at the next start would come before signerd.start.
	d := newDaemonProc(t, "audit: {seal_interval: 1h}\nocsp: {validity: 0s}\n")
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "audit-1", "person-sign")), 201, "")
	// Killed, so no seal covers the issuance.
	d.cmd.Process.Kill()
	<-d.exited
	d.exited <- nil
	db, err := bolt.Open(d.store, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		var key, val []byte
		b.ForEach(func(k, v []byte) error {
			var ev store.Event
			json.Unmarshal(v, &ev)
			if ev.Action == "crl.sign" {
				return nil // the schedule's, whenever it ran
			}
			actions = append(actions, ev.Action)
			if ev.Action == "certificate.issue" {
				key, val = k, v
			}
			return nil
		})
		if key == nil {
			return errors.New("no issuance event")
		}
		return b.Put(key, bytes.Replace(val, []byte("audit-1"), []byte("audit-2"), 1))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if actions[0] != "audit.key.generated" || actions[1] != "certificate.issue" || actions[2] != "signerd.start" || actions[len(actions)-1] != "certificate.issue" {
		t.Fatalf("audit actions %v: want the audit key's generation and certification, the start, ..., the issuance", actions)
	}

	out, err := exec.Command(signerdBin, "--config", d.config).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "audit log broken") {
		t.Fatalf("signerd on an edited log: %v\n%s", err, out)
	}
	d.args = []string{"--acknowledge-audit-break", "Li Na, incident 2026-17: test edit"}
	d.start(t)
	want(t, "issue after acknowledgement", d.call(t, "POST", "/v1/certificates", issueBody(t, "audit-3", "person-sign")), 201, "")
	d.stop(t)
	st := openStore(t, d.store)
	var after []string
	st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(e store.Event, _ []byte) error {
			if e.Action == "audit.break.acknowledged" && strings.Contains(e.Detail, "incident 2026-17") || after != nil {
				after = append(after, e.Action)
			}
			return nil
		})
	})
	if len(after) < 4 || after[1] != "audit.seal" || after[2] != "signerd.start" ||
		after[len(after)-2] != "signerd.stop" || after[len(after)-1] != "audit.seal" {
		t.Fatalf("events from the acknowledgement on: %v; want it, a seal, the start, ..., the stop, the shutdown seal", after)
	}
}
