package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"signerd/api"
	"strconv"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// Client commands talk to signerd over its socket. Exit codes: 0 done, 1
// signerd refused or failed (its error code is printed), 2 bad usage,
// 3 signerd could not be reached.

// unreachable is an error connecting to signerd.
type unreachable struct{ err error }

func (u unreachable) Error() string { return "cannot reach signerd: " + u.err.Error() }

// refused is an error answer from signerd.
type refused struct {
	status        int
	code, message string
}

func (r refused) Error() string { return fmt.Sprintf("%s (HTTP %d): %s", r.code, r.status, r.message) }

// clientFlags are the flags every client command has.
type clientFlags struct {
	socket           string
	signKey, signRef string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("SIGNERD_SOCKET")
	if def == "" {
		def = "/run/signerd/signerd.sock"
	}
	fs.StringVar(&c.socket, "socket", def, "signerd's Unix socket `path` (default $SIGNERD_SOCKET or /run/signerd/signerd.sock)")
	fs.StringVar(&c.signKey, "sign-key", os.Getenv("SIGNERD_RA_KEY"), "sign the request with the RA's SM2 private key `file` (PEM PKCS#8; default $SIGNERD_RA_KEY)")
	fs.StringVar(&c.signRef, "sign-cert", os.Getenv("SIGNERD_RA_CERT"), "`serial` (hex) of the RA certificate this CA issued for -sign-key (default $SIGNERD_RA_CERT)")
}

// sign adds the RA signature headers signerd checks (docs/api.md, Signed
// RA requests; api.Sign), with a fresh nonce: signerd accepts each signed
// request once.
func (c *clientFlags) sign(req *http.Request, body []byte) error {
	if c.signKey == "" {
		return nil
	}
	if c.signRef == "" {
		return usageError{"-sign-key needs -sign-cert"}
	}
	raw, err := os.ReadFile(c.signKey)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return fmt.Errorf("%s: no PEM key", c.signKey)
	}
	k, err := smx509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", c.signKey, err)
	}
	key, ok := k.(*sm2.PrivateKey)
	if !ok {
		return fmt.Errorf("%s: %T is not an SM2 key", c.signKey, k)
	}
	return api.Sign(req, body, key, c.signRef, time.Now())
}

// do sends a request and returns the body of a 2xx answer.
func (c *clientFlags) do(method, path string, body any) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := c.send(method, path, body, 90*time.Second, &limitedWriter{w: &buf, n: 16 << 20}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// stream sends a request and copies the body of a 2xx answer to w as it
// arrives (an audit bundle may be large and slow to send).
func (c *clientFlags) stream(method, path string, body any, w io.Writer) error {
	_, err := c.send(method, path, body, 0, w)
	return err
}

// send sends a request, copies the body of a 2xx answer to w and returns
// the answer's headers.
func (c *clientFlags) send(method, path string, body any, timeout time.Duration, w io.Writer) (http.Header, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequest(method, "http://signerd"+path, bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.sign(req, raw); err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", c.socket)
		}}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, unreachable{err}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e api.Error
		if json.Unmarshal(raw, &e) != nil || e.Code == "" {
			e.Code, e.Message = "unexpected_answer", strings.TrimSpace(string(raw))
		}
		return nil, refused{resp.StatusCode, string(e.Code), e.Message}
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return nil, unreachable{fmt.Errorf("reading the answer: %w", err)}
	}
	return resp.Header, nil
}

// limitedWriter refuses to hold more than n bytes.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("answer too large")
	}
	l.n -= len(p)
	return l.w.Write(p)
}

// show prints signerd's answer as it is.
func (c *clientFlags) show(method, path string, body any, stdout io.Writer) error {
	raw, err := c.do(method, path, body)
	if err != nil {
		return err
	}
	_, err = stdout.Write(raw)
	return err
}

// requestFlags describe a certificate request (issue, renew).
type requestFlags struct {
	clientFlags
	id, profile, subject  string
	csr, publicKey, out   string
	days                  int
	dns, emails, identity listFlag
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func (f *requestFlags) register(fs *flag.FlagSet) {
	f.clientFlags.register(fs)
	fs.StringVar(&f.id, "request-id", "", "the RA's request `id` (a retry with the same id and content returns the same certificate)")
	fs.StringVar(&f.profile, "profile", "", "certificate `profile`, e.g. person-sign")
	fs.StringVar(&f.subject, "subject", "", "vetted subject `DN`, e.g. \"CN=张三,O=某单位,C=CN\"")
	fs.StringVar(&f.csr, "csr", "", "PKCS#10 request `file` (PEM)")
	fs.StringVar(&f.publicKey, "public-key", "", "KMC public key `file` (PEM), for encryption profiles")
	fs.StringVar(&f.out, "out", "", "write the certificate (PEM) to `file` instead of standard output")
	fs.IntVar(&f.days, "days", 0, "validity in `days` (default: the profile's maximum)")
	fs.Var(&f.dns, "dns", "DNS `name` (repeatable)")
	fs.Var(&f.emails, "email", "e-mail `address` (repeatable)")
	fs.Var(&f.identity, "identity", "GM/T 0015 identity `kind=number`, e.g. resident-id=... (repeatable)")
}

func (f *requestFlags) body() (*api.IssueRequest, error) {
	if f.id == "" || f.profile == "" || f.subject == "" {
		return nil, usageError{"-request-id, -profile and -subject are required"}
	}
	name, err := parseDN(f.subject)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	subject := api.Subject{CommonName: name.CommonName, OrganizationalUnit: name.OrganizationalUnit}
	for _, a := range []struct {
		from []string
		to   *string
	}{{name.Organization, &subject.Organization}, {name.Country, &subject.Country}, {name.Province, &subject.Province}, {name.Locality, &subject.Locality}} {
		if len(a.from) > 1 {
			return nil, usageError{"subject: O, C, ST and L may appear once"}
		}
		if len(a.from) == 1 {
			*a.to = a.from[0]
		}
	}
	body := &api.IssueRequest{RequestID: f.id, Profile: f.profile, Subject: subject, DNSNames: f.dns, Emails: f.emails}
	for _, file := range []struct {
		path string
		to   *string
	}{{f.csr, &body.CSR}, {f.publicKey, &body.PublicKey}} {
		if file.path == "" {
			continue
		}
		raw, err := os.ReadFile(file.path)
		if err != nil {
			return nil, err
		}
		*file.to = string(raw)
	}
	if f.days > 0 {
		body.ValidityDays = f.days
	}
	if len(f.identity) > 0 {
		ids := map[string]string{}
		for _, kv := range f.identity {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, usageError{fmt.Sprintf("-identity %q: want kind=number", kv)}
			}
			ids[k] = v
		}
		body.Identity = ids
	}
	return body, nil
}

// writeCertificate puts the PEM where -out says and a summary on stderr.
func writeCertificate(raw []byte, out string, stdout io.Writer) error {
	var a api.Certificate
	if err := json.Unmarshal(raw, &a); err != nil {
		return fmt.Errorf("signerd's answer: %w", err)
	}
	if out != "" {
		if err := writeNew(out, []byte(a.Certificate)); err != nil {
			return err
		}
	} else {
		io.WriteString(stdout, a.Certificate)
	}
	fmt.Fprintf(os.Stderr, "serial %s, %s, %s, valid until %s\n", a.Serial, a.Status, a.Subject, a.NotAfter.Format(time.RFC3339Nano))
	return nil
}

// clientIssue is issue, and with renew set, renew -serial.
func clientIssue(renew bool) func([]string, io.Writer) error {
	return func(args []string, stdout io.Writer) error {
		route, name := api.RouteIssue, "issue"
		if renew {
			route, name = api.RouteRenew, "renew"
		}
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		var f requestFlags
		f.register(fs)
		var serial *string
		if renew {
			serial = fs.String("serial", "", "`serial` (hex) of the certificate to renew")
		}
		if err := parse(fs, args); err != nil {
			return err
		}
		path := route.Path
		if renew {
			if *serial == "" {
				return usageError{"-serial is required"}
			}
			path = route.Target(*serial)
		}
		body, err := f.body()
		if err != nil {
			return err
		}
		raw, err := f.do(route.Method, path, body)
		if err != nil {
			return err
		}
		return writeCertificate(raw, f.out, stdout)
	}
}

func clientExtend(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("extend", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	serial := fs.String("serial", "", "`serial` (hex) of the certificate to extend")
	id := fs.String("request-id", "", "the RA's request `id`")
	days := fs.Int("days", 0, "new validity in `days` (default: the profile's maximum)")
	out := fs.String("out", "", "write the certificate (PEM) to `file` instead of standard output")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *serial == "" || *id == "" {
		return usageError{"-serial and -request-id are required"}
	}
	raw, err := c.do(api.RouteExtend.Method, api.RouteExtend.Target(*serial), api.ExtendRequest{RequestID: *id, ValidityDays: *days})
	if err != nil {
		return err
	}
	return writeCertificate(raw, *out, stdout)
}

// serialCommand is revoke, hold, restore and status: one serial, a JSON
// answer printed as it is.
func serialCommand(name string, route api.Route, withReason bool) func([]string, io.Writer) error {
	return func(args []string, stdout io.Writer) error {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		var c clientFlags
		c.register(fs)
		serial := fs.String("serial", "", "certificate `serial` (hex)")
		var reason *string
		if withReason {
			reason = fs.String("reason", "unspecified", "RFC 5280 `reason`: keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, unspecified")
		}
		if err := parse(fs, args); err != nil {
			return err
		}
		if *serial == "" {
			return usageError{"-serial is required"}
		}
		var body any
		if withReason {
			body = api.RevokeRequest{Reason: *reason}
		}
		return c.show(route.Method, route.Target(*serial), body, stdout)
	}
}

func clientCRL(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("crl", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	sign := fs.Bool("sign", false, "have signerd sign a new CRL first (operator role)")
	issuer := fs.String("issuer", "", "issuing key `id` (hex SKI; default: the active issuer)")
	shard := fs.Int("shard", 0, "the issuer's CRL `shard` (when its CRLs are sharded)")
	delta := fs.Bool("delta", false, "the shard's delta CRL instead of its complete CRL")
	out := fs.String("out", "", "write the CRL to `file` instead of standard output")
	asPEM := fs.Bool("pem", false, "write PEM instead of DER")
	if err := parse(fs, args); err != nil {
		return err
	}
	route := api.RouteLatestCRL
	if *sign {
		route = api.RouteSignCRL
	}
	q := url.Values{}
	if *issuer != "" {
		q.Set(api.QueryIssuer, *issuer)
	}
	if *shard != 0 {
		q.Set(api.QueryShard, strconv.Itoa(*shard))
	}
	if *delta {
		q.Set(api.QueryDelta, "true")
	}
	path := route.Path
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	der, err := c.do(route.Method, path, nil)
	if err != nil {
		return err
	}
	if *asPEM {
		der = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	}
	if *out != "" {
		return os.WriteFile(*out, der, 0o644)
	}
	_, err = stdout.Write(der)
	return err
}

func clientStats(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	month := fs.String("month", time.Now().In(time.FixedZone("CST", 8*3600)).Format("2006-01"), "`month` (YYYY-MM, Beijing time)")
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.show(api.RouteStatistics.Method, api.RouteStatistics.Target(*month), nil, stdout)
}

func clientHealth(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	return c.show(api.RouteHealth.Method, api.RouteHealth.Path, nil, stdout)
}

// writeNew creates path exclusively: outputs are never overwritten.
func writeNew(path string, data []byte) error {
	f, err := createNew(path, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// createNew creates path for writing, refusing to overwrite a file.
func createNew(path string, mode os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s exists; refusing to overwrite", path)
	}
	return f, err
}
