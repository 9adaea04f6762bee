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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"signerd/api"
	"signerd/audit"
	"signerd/engine/enginetest"
	"signerd/store"
	"signerd/store/pgtest"
)

var signerdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signerd-bin-")
	if err != nil {
		panic(err)
	}
	signerdBin = filepath.Join(dir, "signerd")
	if out, err := exec.Command("go", "build", "-o", signerdBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build signerd: %v\n%s", err, out)
		os.Exit(1)
	}
	// pgtest.Main runs the tests and stops the PostgreSQL server they
	// shared.
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// Peer uids the tests connect as (through curl run with those
// credentials); the test process itself is the RA.
const (
	operatorUID = 1001
	auditorUID  = 1002
	strangerUID = 1003
)

// processLog is what a subprocess wrote, read by the test while the
// process may still be writing.
type processLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *processLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *processLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// daemonProc is signerd running as a subprocess on a CA made for the test.
type daemonProc struct {
	ca     *enginetest.CA
	dir    string
	socket string
	store  string // the store file; "" on PostgreSQL
	// dsn names the store's PostgreSQL database, on server pg ("" for a
	// store file).
	dsn    string
	pg     *pgtest.Server
	config string
	cmd    *exec.Cmd
	log    *processLog
	exited chan error
	args   []string // more command-line arguments
	env    []string // more environment
}

// newDaemon writes a config for a fresh CA in a folder other uids may
// enter, with extra appended to it.
func newDaemonProc(t *testing.T, extra string) *daemonProc {
	t.Helper()
	ca := enginetest.NewCA(t)
	dir, err := os.MkdirTemp("", "signerd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	ca.Save(t, dir)
	issuing := enginetest.WritePEM(t, dir, "issuing.pem", "CERTIFICATE", ca.Cert.Raw)
	d := &daemonProc{ca: ca, dir: dir, socket: filepath.Join(dir, "signerd.sock"), store: filepath.Join(dir, "signerd.db"),
		config: filepath.Join(dir, "signerd.yaml")}
	cfg := fmt.Sprintf(`hsm:
  module: %s
  token: %s
  pin_file: %s
  sessions: 4
issuers:
  - key: %s
    certificate: %s
store: %s
socket:
  path: %s
  mode: "0666"
roles:
  ra: {uids: [%d]}
  operator: {uids: [%d]}
  auditor: {uids: [%d]}
%s`, ca.Token.Module, ca.Token.Label, filepath.Join(dir, "pin"), enginetest.IssuingLabel, issuing, d.store, d.socket,
		os.Getuid(), operatorUID, auditorUID, extra)
	if err := os.WriteFile(d.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// newPostgresDaemonProc is newDaemonProc with the store in a new database
// on srv.
func newPostgresDaemonProc(t *testing.T, srv *pgtest.Server, extra string) *daemonProc {
	t.Helper()
	d := newDaemonProc(t, extra)
	d.usePostgres(t, srv, srv.CreateDatabase(t))
	return d
}

// usePostgres puts d's store in the empty database dsn names on srv, with
// signerd's schema applied as an operator would before the first start.
func (d *daemonProc) usePostgres(t *testing.T, srv *pgtest.Server, dsn string) {
	t.Helper()
	upgradePostgres(t, dsn)
	d.configurePostgres(t, srv, dsn)
}

// upgradePostgres creates or migrates signerd's schema in the database.
func upgradePostgres(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := store.UpgradePostgres(ctx, dsn); err != nil {
		t.Fatalf("create the schema: %v", err)
	}
}

// configurePostgres points d's config at the database dsn names on srv,
// and puts the PIN refusal marker, which has no store folder to default
// to outside systemd, in d's folder.
func (d *daemonProc) configurePostgres(t *testing.T, srv *pgtest.Server, dsn string) {
	t.Helper()
	d.editConfig(t, "store: "+d.store+"\n", "store: {postgres: {dsn: "+strconv.Quote(dsn)+"}}\n")
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  pin_refused_marker: "+filepath.Join(d.dir, pinRefusedMarkerName)+"\n")
	d.store, d.dsn, d.pg = "", dsn, srv
}

// moveDatabase points d at the same database on another server (one
// started from a backup of the first).
func (d *daemonProc) moveDatabase(t *testing.T, srv *pgtest.Server) {
	t.Helper()
	dsn := srv.DSN(pgtest.DatabaseName(t, d.dsn))
	d.editConfig(t, "dsn: "+strconv.Quote(d.dsn), "dsn: "+strconv.Quote(dsn))
	d.dsn, d.pg = dsn, srv
}

// openStopped opens d's store, file or database, while signerd is down;
// the caller closes it.
func (d *daemonProc) openStopped(t *testing.T) *store.Store {
	t.Helper()
	var st *store.Store
	var err error
	if d.dsn != "" {
		st, err = store.OpenPostgres(d.dsn, store.PostgresOptions{})
	} else {
		st, err = store.Open(d.store)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// start runs signerd and waits until it answers on its socket.
func (d *daemonProc) start(t *testing.T) {
	t.Helper()
	d.startBinary(t, signerdBin, nil)
}

// startBinary is start with the signerd binary at bin, run with the
// process attributes attr (nil for none).
func (d *daemonProc) startBinary(t *testing.T, bin string, attr *syscall.SysProcAttr) {
	t.Helper()
	d.log = new(processLog)
	d.cmd = exec.Command(bin, append([]string{"--config", d.config}, d.args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(os.Environ(), d.env...)
	d.cmd.SysProcAttr = attr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("signerd exited at start: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("signerd not serving after 20s:\n%s", d.log)
		}
	}
}

// stop sends SIGTERM and waits; it is safe to call twice.
func (d *daemonProc) stop(t *testing.T) error {
	t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.exited <- err
		return err
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		t.Fatalf("signerd did not stop on SIGTERM:\n%s", d.log)
		return nil
	}
}

// client is a fresh client; it closes its connection after each request
// (a client per call would otherwise leave one idle connection each).
func (d *daemonProc) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		}}}
}

// reply is a response: status, JSON error code (if any) and body.
type reply struct {
	status int
	code   string
	body   []byte
}

// call makes a request as the test process (the RA).
func (d *daemonProc) call(t *testing.T, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, "http://signerd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseReply(resp.StatusCode, raw)
}

// callAs makes a request with curl running as uid (the kernel then
// reports that uid to signerd through SO_PEERCRED).
func (d *daemonProc) callAs(t *testing.T, uid int, method, path string) reply {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("connecting as other uids needs root (the test runs curl with their credentials)")
	}
	return d.curlAs(t, uid, "-X", method, "http://signerd"+path)
}

func (d *daemonProc) curlAs(t *testing.T, uid int, args ...string) reply {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--unix-socket", d.socket, "-o", "-", "-w", "\n%{http_code}"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl as uid %d: %v\n%s", uid, err, out)
	}
	i := bytes.LastIndexByte(out, '\n')
	var status int
	fmt.Sscan(string(out[i+1:]), &status)
	return parseReply(status, out[:i])
}

// callAsWith is callAs with a JSON body.
func (d *daemonProc) callAsWith(t *testing.T, uid int, method, path, body string) reply {
	t.Helper()
	return d.curlAs(t, uid, "-X", method, "-H", "Content-Type: application/json", "--data-binary", body, "http://signerd"+path)
}

func parseReply(status int, raw []byte) reply {
	r := reply{status: status, body: raw}
	var e api.Error
	if json.Unmarshal(raw, &e) == nil {
		r.code = string(e.Code)
	}
	return r
}

// metrics reads signerd's metrics as the operator: each sample's value by
// its name and labels as exposed (signerd_hsm_up, signerd_x{k="v"}).
func (d *daemonProc) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	samples := map[string]float64{}
	for line := range strings.Lines(string(d.callAs(t, operatorUID, "GET", "/v1/metrics").body)) {
		line = strings.TrimSpace(line)
		i := strings.LastIndexByte(line, ' ') // label values may hold spaces
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		name, v := line[:i], line[i+1:]
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		samples[name] = f
	}
	return samples
}

// metric is one sample's value; signerd must expose it.
func (d *daemonProc) metric(t *testing.T, sample string) float64 {
	t.Helper()
	v, ok := d.metrics(t)[sample]
	if !ok {
		t.Fatalf("signerd exposes no %s", sample)
	}
	return v
}

func issueBody(t *testing.T, id, profile string) string {
	t.Helper()
	_, csr := enginetest.NewCSR(t)
	body, _ := json.Marshal(api.IssueRequest{RequestID: id, Profile: profile,
		Subject: api.Subject{CommonName: "测试用户 " + id, Country: "CN"},
		CSR:     string(pem.EncodeToMemory(&pem.Block{Type: api.PEMCSR, Bytes: csr}))})
	return string(body)
}

// view decodes a certificate answer.
func certView(t *testing.T, r reply) api.Certificate {
	t.Helper()
	var v api.Certificate
	if err := json.Unmarshal(r.body, &v); err != nil || v.Serial == "" {
		t.Fatalf("not a certificate (%d): %s", r.status, r.body)
	}
	return v
}

func want(t *testing.T, what string, r reply, status int, code string) {
	t.Helper()
	if r.status != status || r.code != code {
		t.Fatalf("%s: %d %q, want %d %q\n%s", what, r.status, r.code, status, code, r.body)
	}
}

func TestRAIssuesAndManagesCertificates(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	body := issueBody(t, "ra-1", "person-sign")
	r := d.call(t, "POST", "/v1/certificates", body)
	want(t, "issue", r, http.StatusCreated, "")
	c := certView(t, r)
	block, _ := pem.Decode([]byte(c.Certificate))
	if block == nil {
		t.Fatal("no PEM certificate in the answer")
	}
	d.ca.OpenSSLVerify(t, block.Bytes)
	if again := certView(t, d.call(t, "POST", "/v1/certificates", body)); again.Certificate != c.Certificate {
		t.Fatal("retry returned another certificate")
	}
	want(t, "same id, other CSR", d.call(t, "POST", "/v1/certificates", issueBody(t, "ra-1", "person-sign")), http.StatusConflict, "request_conflict")

	path := "/v1/certificates/" + c.Serial
	want(t, "status", d.call(t, "GET", path, ""), http.StatusOK, "")
	want(t, "hold", d.call(t, "POST", path+"/hold", ""), http.StatusOK, "")
	if v := certView(t, d.call(t, "GET", path, "")); v.Status != "on-hold" || v.Reason != 6 {
		t.Fatalf("after hold: %+v", v)
	}
	want(t, "restore", d.call(t, "POST", path+"/restore", ""), http.StatusOK, "")
	want(t, "revoke", d.call(t, "POST", path+"/revoke", `{"reason":"keyCompromise"}`), http.StatusOK, "")
	want(t, "revoke again", d.call(t, "POST", path+"/revoke", `{"reason":"keyCompromise"}`), http.StatusConflict, "invalid_state")
	want(t, "unknown serial", d.call(t, "GET", "/v1/certificates/0102", ""), http.StatusNotFound, "not_found")
	// The schedule signs the first CRL at start, with no operator action.
	waitUntil(t, 30*time.Second, "the CRL the schedule signs at start", func() bool { return d.call(t, "GET", "/v1/crl", "").status == http.StatusOK })

	renewed := d.call(t, "POST", "/v1/certificates/"+c.Serial+"/renew", issueBody(t, "ra-2", "person-sign"))
	want(t, "renew revoked", renewed, http.StatusConflict, "invalid_state")
	second := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "ra-3", "device-sign")))
	ext := d.call(t, "POST", "/v1/certificates/"+second.Serial+"/extend", `{"request_id":"ra-4","validity_days":30}`)
	want(t, "extend", ext, http.StatusCreated, "")
	if v := certView(t, ext); v.Replaces != second.Serial {
		t.Fatalf("extension replaces %q, want %q", v.Replaces, second.Serial)
	}
}

func TestHostileInputGetsClearErrors(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	big := `{"request_id":"x","profile":"person-sign","csr":"` + strings.Repeat("A", maxBody) + `"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"malformed JSON", "POST", "/v1/certificates", `{"request_id":`, 400, string(api.CodeMalformedJSON)},
		{"unknown field", "POST", "/v1/certificates", `{"request_id":"x","colour":"red"}`, 400, string(api.CodeMalformedJSON)},
		{"two objects", "POST", "/v1/certificates", `{} {}`, 400, string(api.CodeMalformedJSON)},
		{"oversize body", "POST", "/v1/certificates", big, 413, string(api.CodeBodyTooLarge)},
		{"CSR not PEM", "POST", "/v1/certificates", `{"request_id":"x","profile":"person-sign","subject":{"CN":"a"},"csr":"MIIB"}`, 400, "malformed_csr"},
		{"garbage CSR", "POST", "/v1/certificates", `{"request_id":"x","profile":"person-sign","subject":{"CN":"a"},"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`, 400, "malformed_csr"},
		{"unknown profile", "POST", "/v1/certificates", `{"request_id":"x","profile":"robot"}`, 400, "unknown_profile"},
		{"bad serial", "GET", "/v1/certificates/xyz", "", 400, "bad_request"},
		{"unknown reason", "POST", "/v1/certificates/01/revoke", `{"reason":"bored"}`, 400, "bad_request"},
		{"body on hold", "POST", "/v1/certificates/01/hold", `{}`, 400, string(api.CodeMalformedJSON)},
		{"no such route", "GET", "/v2/everything", "", 404, string(api.CodeNoRoute)},
		{"wrong method", "DELETE", "/v1/certificates/01", "", 405, string(api.CodeMethod)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want(t, tt.name, d.call(t, tt.method, tt.path, tt.body), tt.status, tt.code)
		})
	}
	// A client that sends headers and then nothing is cut off; others are
	// still served.
	slow, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/certificates HTTP/1.1\r\nHost: s\r\nContent-Length: 100\r\n\r\n{")
	want(t, "served beside a stalled client", d.call(t, "POST", "/v1/certificates", issueBody(t, "after", "person-sign")), 201, "")
}

func TestRolesAreEnforcedAndRefusalsAudited(t *testing.T) {
	// No OCSP pre-signing: the metrics below count the signatures the
	// routes make, which OCSP's would join at any moment.
	d := newDaemonProc(t, "ocsp: {validity: 0s}\n")
	d.start(t)
	serial := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "r1", "person-sign"))).Serial
	month := store.Month(time.Now())
	type access struct {
		method, path string
		ok           int // status when allowed
	}
	routes := map[string]access{
		"metrics":    {"GET", "/v1/metrics", 200},
		"status":     {"GET", "/v1/certificates/" + serial, 200},
		"crl-fetch":  {"GET", "/v1/crl", 404}, // allowed, none signed yet
		"crl-sign":   {"POST", "/v1/crl", 201},
		"statistics": {"GET", "/v1/statistics/" + month, 200},
		"health":     {"GET", "/v1/health", 200},
		"audit":      {"POST", "/v1/audit/export", 200},
	}
	allowed := map[int][]string{
		operatorUID: {"crl-sign", "health", "metrics"},
		auditorUID:  {"statistics", "audit"},
		strangerUID: {},
	}
	refusals := 0
	for uid, ok := range allowed {
		for name, a := range routes {
			r := d.callAs(t, uid, a.method, a.path)
			switch {
			case contains(ok, name):
				if r.status != a.ok {
					t.Errorf("uid %d %s: %d %s", uid, name, r.status, r.body)
				}
				if name == "audit" {
					if rep := audit.Verify(r.body, audit.Options{Root: d.ca.Root}); !rep.OK() || !rep.Anchored {
						t.Errorf("the auditor's bundle: %v", rep.Problems)
					}
				}
			case uid == strangerUID:
				want(t, fmt.Sprintf("uid %d %s", uid, name), r, 403, string(api.CodeUnknownPeer))
				refusals++
			default:
				want(t, fmt.Sprintf("uid %d %s", uid, name), r, 403, string(api.CodeForbidden))
				refusals++
			}
		}
	}
	// The RA may not sign CRLs or read statistics.
	want(t, "RA signs CRL", d.call(t, "POST", "/v1/crl", ""), 403, string(api.CodeForbidden))
	want(t, "RA reads statistics", d.call(t, "GET", "/v1/statistics/"+month, ""), 403, string(api.CodeForbidden))
	want(t, "RA exports the audit log", d.call(t, "POST", "/v1/audit/export", "{}"), 403, string(api.CodeForbidden))
	refusals += 3
	// An auditor's malformed request is refused and audited too.
	want(t, "export window backwards", d.callAsWith(t, auditorUID, "POST", "/v1/audit/export",
		`{"since":"2026-02-01T00:00:00Z","until":"2026-01-01T00:00:00Z"}`), 400, "bad_request")
	want(t, "export window not a time", d.callAsWith(t, auditorUID, "POST", "/v1/audit/export", `{"since":"yesterday"}`), 400, string(api.CodeMalformedJSON))
	// The operator's CRL is what the RA fetches.
	want(t, "RA fetches CRL", d.call(t, "GET", "/v1/crl", ""), 200, "")
	stats := d.callAs(t, auditorUID, "GET", "/v1/statistics/"+month)
	if !strings.Contains(string(stats.body), `"issued": 1`) {
		t.Errorf("statistics: %s", stats.body)
	}
	m := d.metrics(t)
	// Signatures: two certificates, the CRL the schedule signed at start,
	// the operator's CRL, and the seal the export made.
	for sample, v := range map[string]float64{"signerd_queue_depth": 0, "signerd_batch_size_count": 2, "signerd_hsm_sign_seconds_count": 5,
		"signerd_hsm_up": 1, "signerd_store_writable": 1,
		`signerd_requests_total{code="forbidden",route="POST /v1/crl",status="403"}`: 2} {
		if got, ok := m[sample]; !ok || got != v {
			t.Errorf("metrics: %s = %v (exposed %v), want %v", sample, got, ok, v)
		}
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	st := openStore(t, d.store)
	// Refused roles, the auditor's export and its two refused requests:
	// each is an audit event.
	outcomes := map[string]int{}
	st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			code, _, _ := strings.Cut(ev.Reason, ":")
			switch {
			case ev.Action == "api.refused" && (code == string(api.CodeForbidden) || code == string(api.CodeUnknownPeer)):
				outcomes["role"] += refusalCount(t, ev) // refusals after a peer's first are tallied
				if ev.Actor.UID != os.Getuid() && ev.Actor.UID != operatorUID && ev.Actor.UID != auditorUID && ev.Actor.UID != strangerUID {
					t.Errorf("refusal audited with uid %d", ev.Actor.UID)
				}
			case ev.Actor.UID == auditorUID:
				outcomes[ev.Action+" "+ev.Outcome+" "+strings.SplitN(ev.Reason, ":", 2)[0]]++
			}
			return nil
		})
	})
	if outcomes["role"] != refusals {
		t.Errorf("%d role refusals audited, want %d", outcomes["role"], refusals)
	}
	for _, k := range []string{"audit.export ok ", "audit.export refused bad_request", "api.refused refused " + string(api.CodeMalformedJSON)} {
		if outcomes[k] != 1 {
			t.Errorf("auditor's events %v: want one %q", outcomes, k)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func decodeJSON(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}
