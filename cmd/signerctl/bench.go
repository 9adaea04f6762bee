package main

import (
	"bytes"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// benchFlags are signerctl bench's settings.
type benchFlags struct {
	duration   time.Duration
	clients    []int
	sessions   int
	batch      int
	prefill    int
	revoked    int
	module     string
	signerd    string
	cpuProfile string
	json       bool
}

// benchReport is what one bench run measured. Maps are keyed by the
// number of concurrent RA clients.
type benchReport struct {
	Machine       string             `json:"machine"`
	CPUs          int                `json:"cpus"`
	Sessions      int                `json:"sessions"`
	Batch         int                `json:"batch"`
	DurationS     float64            `json:"duration_s"`
	Prefill       int                `json:"prefill"`
	CeilingPerS   float64            `json:"ceiling_per_s"`
	E2EPerS       map[string]float64 `json:"e2e_per_s"`
	Ratio         map[string]float64 `json:"ratio"`
	P50MS         map[string]float64 `json:"p50_ms"`
	P99MS         map[string]float64 `json:"p99_ms"`
	MaxMS         map[string]float64 `json:"max_ms"`
	Errors        map[string]int     `json:"errors"`
	BatchOffPerS  map[string]float64 `json:"batch_off_per_s"`
	BatchOffRatio map[string]float64 `json:"batch_off_ratio"`
	BatchOffP99MS map[string]float64 `json:"batch_off_p99_ms"`
	RSSMiB        float64            `json:"rss_mib"`      // VmHWM: with the store's mapped pages
	RSSAnonMiB    float64            `json:"rss_anon_mib"` // peak RssAnon: signerd's own memory
	ReadyMS       float64            `json:"ready_ms"`
	RestartMS     float64            `json:"restart_ready_ms"`
	CRLEntries    int                `json:"crl_entries"`
	CRLMS         float64            `json:"crl_ms"`
}

// bench measures signerd against the HSM's own speed on a throwaway token
// and store (SPEC §5.6): the ceiling, then end-to-end issuance through
// signerd's socket by concurrent RA clients, with batching and without.
func bench(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var f benchFlags
	var clients string
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of the ceiling run and of each end-to-end run")
	fs.StringVar(&clients, "clients", "1,8,64", "concurrent RA clients, one run per `list` entry")
	fs.IntVar(&f.sessions, "sessions", runtime.NumCPU(), "HSM sessions, for the ceiling and for signerd")
	fs.IntVar(&f.batch, "batch", 64, "signerd's batch size (queue.batch); the batch-off runs use 1")
	fs.IntVar(&f.prefill, "prefill", 0, "certificates written into the store before signerd starts")
	fs.IntVar(&f.revoked, "revoked", 0, "of the prefilled certificates, how many are revoked (the CRL's size)")
	fs.StringVar(&f.module, "module", os.Getenv("SIGNERD_SOFTHSM_SM2"), "SoftHSM2 `library` with the SM2 mechanism (make softhsm)")
	fs.StringVar(&f.signerd, "signerd", "", "signerd `binary` (default: beside signerctl, else on PATH)")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write signerd's CPU profile of the batched runs into `file`")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of the table")
	if err := parse(fs, args); err != nil {
		return err
	}
	var err error
	if f.clients, err = parseInts(clients); err != nil {
		return usageError{"-clients: " + err.Error()}
	}
	switch {
	case f.module == "":
		return usageError{"-module (or SIGNERD_SOFTHSM_SM2) must name the SoftHSM2 SM2 build; make bench sets it"}
	case f.duration <= 0 || f.sessions <= 0 || f.batch <= 0 || f.prefill < 0 || f.revoked < 0:
		return usageError{"-duration, -sessions and -batch must be positive; -prefill and -revoked not negative"}
	case f.revoked > f.prefill:
		return usageError{"-revoked cannot exceed -prefill"}
	}
	if f.signerd, err = signerdBinary(f.signerd); err != nil {
		return err
	}
	r, err := runBench(f, os.Stderr)
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	r.print(stdout, f.clients)
	return nil
}

func runBench(f benchFlags, progress io.Writer) (*benchReport, error) {
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	r := &benchReport{Machine: machine(), CPUs: runtime.NumCPU(), Sessions: f.sessions, Batch: f.batch,
		DurationS: f.duration.Seconds(), Prefill: f.prefill,
		E2EPerS: map[string]float64{}, Ratio: map[string]float64{}, P50MS: map[string]float64{}, P99MS: map[string]float64{},
		MaxMS: map[string]float64{}, Errors: map[string]int{}, BatchOffPerS: map[string]float64{},
		BatchOffRatio: map[string]float64{}, BatchOffP99MS: map[string]float64{}}
	say("throwaway token and CA (ceremonies) in a temporary folder")
	lab, err := newBenchLab(f.module)
	if err != nil {
		return nil, err
	}
	defer lab.remove()
	say("HSM ceiling: %d sessions for %v", f.sessions, f.duration)
	if r.CeilingPerS, err = lab.ceiling(f.sessions, f.duration); err != nil {
		return nil, err
	}
	if f.prefill > 0 {
		say("prefilling the store with %d certificates (%d revoked)", f.prefill, f.revoked)
		start := time.Now()
		if err := lab.prefill(f.prefill, f.revoked, progress); err != nil {
			return nil, err
		}
		say("prefilled in %v", time.Since(start).Round(time.Second))
	}
	reqs := &requestPool{}
	for _, batch := range []int{f.batch, 1} {
		profile := f.cpuProfile
		if batch == 1 {
			profile = ""
		}
		d, err := lab.startSignerd(f.signerd, f.sessions, batch, profile)
		if err != nil {
			return nil, err
		}
		if batch == f.batch {
			r.ReadyMS = ms(d.ready)
		} else {
			r.RestartMS = ms(d.ready)
		}
		say("signerd (batch %d) READY in %v", batch, d.ready.Round(time.Millisecond))
		for _, c := range f.clients {
			if err := reqs.fill(int(r.CeilingPerS*f.duration.Seconds()*1.1) + 2*c); err != nil {
				d.stop()
				return nil, err
			}
			say("%d clients, batch %d, %v", c, batch, f.duration)
			res := d.load(c, f.duration, reqs)
			if res.n == 0 {
				d.stop()
				return nil, fmt.Errorf("%d clients: nothing issued: %v", c, res.firstErr)
			}
			key := strconv.Itoa(c)
			if batch == f.batch {
				r.E2EPerS[key], r.Ratio[key] = res.rate(), res.rate()/r.CeilingPerS
				r.P50MS[key], r.P99MS[key], r.MaxMS[key] = res.percentile(0.50), res.percentile(0.99), res.percentile(1)
				r.Errors[key] = res.errors
			} else {
				r.BatchOffPerS[key], r.BatchOffRatio[key] = res.rate(), res.rate()/r.CeilingPerS
				r.BatchOffP99MS[key] = res.percentile(0.99)
			}
			if res.errors > 0 {
				say("%d errors; the first: %v", res.errors, res.firstErr)
			}
		}
		if batch == f.batch {
			say("full CRL")
			n, took, err := d.signCRL()
			if err != nil {
				d.stop()
				return nil, err
			}
			r.CRLEntries, r.CRLMS = n, ms(took)
		}
		rss, anon, err := d.peakRSS()
		if err != nil {
			d.stop()
			return nil, err
		}
		r.RSSMiB, r.RSSAnonMiB = max(r.RSSMiB, rss), max(r.RSSAnonMiB, anon)
		if err := d.stop(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *benchReport) print(w io.Writer, clients []int) {
	fmt.Fprintf(w, "machine      %s, %d CPUs\n", r.Machine, r.CPUs)
	fmt.Fprintf(w, "HSM ceiling  %.0f SM2 signs/s on the issuing key (%d sessions, SoftHSM2 SM2 build)\n", r.CeilingPerS, r.Sessions)
	if r.Prefill > 0 {
		fmt.Fprintf(w, "store        %d certificates prefilled\n", r.Prefill)
	}
	fmt.Fprintf(w, "signerd      READY %.0f ms (first start), %.0f ms (restart)\n", r.ReadyMS, r.RestartMS)
	fmt.Fprintf(w, "memory       peak RSS %.1f MiB (VmHWM, with the store's mapped pages); anonymous %.1f MiB\n", r.RSSMiB, r.RSSAnonMiB)
	fmt.Fprintf(w, "CRL          %d entries built and signed in %.0f ms\n\n", r.CRLEntries, r.CRLMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "clients\tcerts/s\tof ceiling\tp50 ms\tp99 ms\tmax ms\terrors\t\tbatch off: certs/s\tof ceiling\tp99 ms\t\n")
	for _, c := range clients {
		k := strconv.Itoa(c)
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f%%\t%.1f\t%.1f\t%.1f\t%d\t\t%.0f\t%.0f%%\t%.1f\t\n", c, r.E2EPerS[k], 100*r.Ratio[k],
			r.P50MS[k], r.P99MS[k], r.MaxMS[k], r.Errors[k], r.BatchOffPerS[k], 100*r.BatchOffRatio[k], r.BatchOffP99MS[k])
	}
	tw.Flush()
}

// requestPool holds issue requests ready to send, each with its own
// applicant key and CSR, so the clients' own work during a run is small.
type requestPool struct {
	bodies [][]byte
	next   atomic.Int64
	run    string // request ids are unique across bench runs on one store
}

// fill tops the pool up to want unsent requests, on every CPU.
func (p *requestPool) fill(want int) error {
	if p.run == "" {
		p.run = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	have := len(p.bodies) - int(p.next.Load())
	if have >= want {
		return nil
	}
	first := len(p.bodies)
	p.bodies = append(p.bodies, make([][]byte, want-have)...)
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Go(func() {
			for i := first + w; i < len(p.bodies); i += len(errs) {
				if p.bodies[i], errs[w] = issueBody(fmt.Sprintf("bench-%s-%07d", p.run, i)); errs[w] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// take returns the next unsent request, or nil when none is left.
func (p *requestPool) take() []byte {
	i := p.next.Add(1) - 1
	if i >= int64(len(p.bodies)) {
		return nil
	}
	body := p.bodies[i]
	p.bodies[i] = nil
	return body
}

func issueBody(id string) ([]byte, error) {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{
		Subject: pkix.Name{CommonName: "applicant"}}, key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"request_id": id, "profile": "person-sign",
		"subject": map[string]string{"CN": "bench " + id, "C": "CN"},
		"csr":     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
}

// loadResult is one end-to-end run.
type loadResult struct {
	n, errors int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration
}

func (r *loadResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// percentile of the successful requests' latencies, in milliseconds.
func (r *loadResult) percentile(q float64) float64 {
	if len(r.latencies) == 0 {
		return 0
	}
	i := min(len(r.latencies)-1, int(q*float64(len(r.latencies))))
	return ms(r.latencies[i])
}

// load has clients RA connections issue certificates back to back for d
// (or until the pool runs dry) and counts what was issued.
func (d *benchDaemon) load(clients int, dur time.Duration, reqs *requestPool) *loadResult {
	var (
		mu  sync.Mutex
		res = &loadResult{}
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for range clients {
		wg.Go(func() {
			c := d.client()
			var lat []time.Duration
			errs := 0
			var first error
			for time.Now().Before(deadline) {
				body := reqs.take()
				if body == nil {
					break
				}
				t := time.Now()
				err := issueOnce(c, body)
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errors += errs
			if res.firstErr == nil {
				res.firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.latencies)
	slices.Sort(res.latencies)
	return res
}

func issueOnce(c *http.Client, body []byte) error {
	resp, err := c.Post("http://signerd/v1/certificates", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// signerdBinary finds signerd: the flag, else beside this signerctl, else
// on PATH.
func signerdBinary(flagged string) (string, error) {
	if flagged != "" {
		return flagged, nil
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "signerd")
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	path, err := exec.LookPath("signerd")
	if err != nil {
		return "", usageError{"signerd binary not found beside signerctl or on PATH; name it with -signerd"}
	}
	return path, nil
}

// machine names the CPU the figures came from.
func machine() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(raw)) {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimLeft(name, "\t :"))
		}
	}
	return runtime.GOARCH
}
