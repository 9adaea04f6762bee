package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/store"
)

// benchCRL is how the bench's issuer splits its CRLs and whether it signs
// deltas: the same for the prefill, which records the layout as signerd
// would have when it issued the first of those certificates, and for
// every signerd of the run.
type benchCRL struct {
	shards int
	deltas bool
}

// The distribution points of the bench issuer's shards and their deltas.
const (
	benchCRLURL      = "http://crl.bench.example/{shard}.crl"
	benchDeltaCRLURL = "http://crl.bench.example/{shard}-delta.crl"
)

// partitioned: the issuer's certificates name a shard's URL. One shard
// without deltas is the unpartitioned CRL, as an issuer configured with no
// crl: block has, so that single-CRL figures stay comparable with earlier
// runs.
func (c benchCRL) partitioned() bool { return c.shards > 1 || c.deltas }

// layout is what the store records for the issuer (pinned: the prefilled
// certificates name its URLs).
func (c benchCRL) layout() store.CRLLayout {
	l := store.CRLLayout{Shards: max(c.shards, 1), URL: benchCRLURL, Pinned: true}
	if c.deltas {
		l.DeltaURL = benchDeltaCRLURL
	}
	return l
}

// issuerConfig is the crl: mapping of the issuer's entry in signerd's
// config ("" for the unpartitioned CRL).
func (c benchCRL) issuerConfig() string {
	if !c.partitioned() {
		return ""
	}
	l := c.layout()
	s := fmt.Sprintf(", crl: {shards: %d, url: %q", l.Shards, l.URL)
	if l.DeltaURL != "" {
		s += fmt.Sprintf(", delta_url: %q", l.DeltaURL)
	}
	return s + "}"
}

// scheduleConfig is signerd's crl: block. The schedule signs every
// shard's complete CRL (and its delta) at the first start, which the
// bench waits out before measuring; after that nothing is due for hours,
// and changes wait an hour to be listed, so the schedule signs nothing
// while the bench measures the CRLs it asks for: the revocations before
// the deltas would otherwise bring each shard a complete CRL of its own.
func (c benchCRL) scheduleConfig() string {
	s := "crl: {interval: 6h, validity: 24h, after_revocation: 1h"
	if c.deltas {
		s += ", delta_interval: 1h"
	}
	return s + "}\n"
}

// crlMetrics is how many CRLs signerd's schedule has signed so far, of
// each kind (complete, delta), from its metrics.
func crlMetrics(c *http.Client) (map[string]float64, error) {
	resp, err := c.Get("http://signerd" + api.RouteMetrics.Path)
	if err != nil {
		return nil, fmt.Errorf("signerd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("signerd metrics: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	return parseCRLSigned(resp.Body)
}

// parseCRLSigned sums signerd_crl_signed_total by its kind label.
func parseCRLSigned(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "signerd_crl_signed_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil, fmt.Errorf("signerd metrics: %q", line)
		}
		_, kind, ok := strings.Cut(labels, `kind="`)
		if !ok {
			return nil, fmt.Errorf("signerd metrics: no kind in %q", line)
		}
		kind, _, _ = strings.Cut(kind, `"`)
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("signerd metrics: %q: %w", line, err)
		}
		out[kind] += v
	}
	return out, sc.Err()
}

// waitScheduledCRLs waits until signerd's schedule has signed every
// shard's complete CRL (and, with deltas, every shard's delta), which it
// does on its own at the first start: until then the CRLs would be
// signed during the throughput runs. It returns how long after the call
// the last complete CRL and the last delta were counted (polled every
// 50 ms).
func (d *benchDaemon) waitScheduledCRLs(c benchCRL, timeout time.Duration) (complete, delta time.Duration, err error) {
	start := time.Now()
	want := float64(max(c.shards, 1))
	// One connection for every poll: signerd limits a uid's connections.
	client := d.client()
	defer client.CloseIdleConnections()
	for {
		n, err := crlMetrics(client)
		if err != nil {
			return 0, 0, err
		}
		if complete == 0 && n["complete"] >= want {
			complete = time.Since(start)
		}
		if c.deltas && delta == 0 && n["delta"] >= want {
			delta = time.Since(start)
		}
		if complete > 0 && (!c.deltas || delta > 0) {
			return complete, delta, nil
		}
		if time.Since(start) > timeout {
			return 0, 0, fmt.Errorf("signerd's schedule signed %v CRLs in %v, want %.0f complete%s:\n%s",
				n, timeout, want, map[bool]string{true: " and as many deltas"}[c.deltas], d.log)
		}
		select {
		case <-d.done:
			return 0, 0, fmt.Errorf("signerd exited:\n%s", d.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// crlRun is the CRLs of every shard signed one after the other.
type crlRun struct {
	entries  int
	total    time.Duration
	slowest  time.Duration
	perShard []int // entries
}

// signShards has signerd sign every shard's complete CRL, or its delta,
// one after the other, as the operator's route does, and times each.
func (d *benchDaemon) signShards(shards int, delta bool) (*crlRun, error) {
	r := &crlRun{}
	c := d.client()
	defer c.CloseIdleConnections()
	for k := range max(shards, 1) {
		n, took, err := signCRLOf(c, k, delta)
		if err != nil {
			return nil, err
		}
		r.entries += n
		r.total += took
		r.slowest = max(r.slowest, took)
		r.perShard = append(r.perShard, n)
	}
	return r, nil
}

// signCRLOf has signerd sign shard k's complete CRL or its delta and
// returns its entries and how long the request took.
func signCRLOf(c *http.Client, k int, delta bool) (int, time.Duration, error) {
	path := fmt.Sprintf("http://signerd%s?%s=%d", api.RouteSignCRL.Path, api.QueryShard, k)
	if delta {
		path += "&" + api.QueryDelta + "=true"
	}
	start := time.Now()
	resp, err := c.Post(path, "", nil)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	what := fmt.Sprintf("sign CRL of shard %d", k)
	if delta {
		what = fmt.Sprintf("sign delta CRL of shard %d", k)
	}
	if resp.StatusCode != http.StatusCreated {
		var e api.Error
		json.Unmarshal(der, &e)
		return 0, 0, fmt.Errorf("%s: HTTP %d %s: %s", what, resp.StatusCode, e.Code, e.Message)
	}
	crl, err := smx509.ParseRevocationList(der)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", what, err)
	}
	return len(crl.RevokedCertificateEntries), took, nil
}

// issueAndRevoke issues n certificates through signerd from reqs and
// revokes them (superseded: a keyCompromise would reach every certificate
// of the prefill's one key), from clients connections at once, so that
// the deltas have n changes to list. It returns how long the revocations
// took.
func (d *benchDaemon) issueAndRevoke(reqs *requestPool, n, clients int) (time.Duration, error) {
	if err := reqs.fill(n); err != nil {
		return 0, err
	}
	serials := make(chan string, n)
	if err := onClients(d, clients, n, func(c *http.Client, _ int) error {
		body := reqs.take()
		if body == nil {
			return fmt.Errorf("request pool ran dry")
		}
		serial, err := issueSerial(c, body)
		if err == nil {
			serials <- serial
		}
		return err
	}); err != nil {
		return 0, fmt.Errorf("issue the certificates to revoke: %w", err)
	}
	close(serials)
	start := time.Now()
	err := onClients(d, clients, n, func(c *http.Client, _ int) error {
		return revokeOnce(c, <-serials)
	})
	if err != nil {
		return 0, fmt.Errorf("revoke: %w", err)
	}
	return time.Since(start), nil
}

// onClients calls fn n times in all from clients connections at once,
// and returns the first error.
func onClients(d *benchDaemon, clients, n int, fn func(c *http.Client, i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int, n)
	)
	for i := range n {
		next <- i
	}
	close(next)
	for range min(clients, n) {
		wg.Go(func() {
			c := d.client()
			defer c.CloseIdleConnections()
			for i := range next {
				if err := fn(c, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// issueSerial issues one certificate and returns its serial in hex.
func issueSerial(c *http.Client, body []byte) (string, error) {
	resp, err := c.Post("http://signerd"+api.RouteIssue.Path, "application/json", strings.NewReader(string(body)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("issue: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	var cert api.Certificate
	if err := json.Unmarshal(raw, &cert); err != nil {
		return "", fmt.Errorf("issue: %w", err)
	}
	if _, err := hex.DecodeString(cert.Serial); err != nil || cert.Serial == "" {
		return "", fmt.Errorf("issue: serial %q", cert.Serial)
	}
	return cert.Serial, nil
}

func revokeOnce(c *http.Client, serial string) error {
	path := "http://signerd" + strings.Replace(api.RouteRevoke.Path, "{serial}", serial, 1)
	resp, err := c.Post(path, "application/json", strings.NewReader(`{"reason":"superseded"}`))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke %s: HTTP %d: %s", serial, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	return nil
}
