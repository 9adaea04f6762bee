package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"signerd/api"
	"signerd/publish"
)

// presignReport is what one -ocsp-presign run measured: the HSM's
// ceiling, then a full refresh of the prefilled certificates' OCSP
// responses by signerd, against it (issue 21: at least presignTarget ×
// the ceiling).
type presignReport struct {
	Machine      string `json:"machine"`
	CPUs         int    `json:"cpus"`
	Sessions     int    `json:"sessions"`
	Certificates int    `json:"certificates"`
	Revoked      int    `json:"revoked"`
	Backfill     bool   `json:"backfill"` // signerd marked the responses due itself
	// The ceiling is measured before the refresh and again after it, with
	// signerd stopped; the figures judged are the mean of the two, so that
	// the neighbours' load, which moves between the runs, falls on both
	// sides of the ratio alike.
	CeilingPerS      float64    `json:"ceiling_per_s"`
	CeilingCPUMS     float64    `json:"hsm_cpu_ms_per_sign"`
	CeilingRunsPerS  [2]float64 `json:"ceiling_runs_per_s"` // before, after
	CeilingRunsCPUMS [2]float64 `json:"hsm_cpu_ms_runs"`    // before, after
	PrefillS         float64    `json:"prefill_s"`
	ReadyMS          float64    `json:"ready_ms"`
	// RefreshS is from the first scrape after READY=1 to the first that
	// found every response signed and none due; Signed the responses
	// signed meanwhile.
	RefreshS float64 `json:"refresh_s"`
	Signed   int     `json:"signed"`
	Failed   int     `json:"failed"`
	PerS     float64 `json:"responses_per_s"`
	Ratio    float64 `json:"ratio"`
	// SignerdCPUMS is signerd's CPU time per response over the refresh
	// (the HSM's signing included: SoftHSM2 signs in its process);
	// OverheadUS that less the HSM's CPU per signature.
	SignerdCPUMS float64    `json:"signerd_cpu_ms_per_response"`
	OverheadUS   float64    `json:"overhead_us_per_response"`
	RSSMiB       float64    `json:"rss_mib"`
	RSSAnonMiB   float64    `json:"rss_anon_mib"`
	Published    int        `json:"published"` // response files in publish.dir at the end
	CPUProfile   string     `json:"cpu_profile,omitempty"`
	TargetMet    bool       `json:"target_met"`
	LoadAvg      [2]float64 `json:"load_avg"`
}

// presignTarget is issue 21's: pre-signing at least this share of the
// HSM ceiling measured in the same run.
const presignTarget = 0.9

// presignPoll is how often the bench reads signerd's metrics during the
// refresh: the end is known to within it.
const presignPoll = 200 * time.Millisecond

// presignStall ends a refresh that has signed nothing for this long.
const presignStall = 2 * time.Minute

// benchOCSPPresign measures signerd's OCSP pre-signing on a bbolt store
// prefilled with n certificates, every response due: the HSM ceiling
// first, then signerd started with OCSP on and publication to a
// directory, as in production, timed until its metrics show every
// response signed and none due.
func benchOCSPPresign(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench -ocsp-presign", flag.ContinueOnError)
	n := fs.Int("certificates", 100_000, "certificates prefilled, each with its response due")
	revoked := fs.Int("revoked", 0, "of them, how many are revoked (their responses say so)")
	sessions := fs.Int("sessions", runtime.NumCPU(), "HSM sessions, for the ceiling and for signerd")
	duration := fs.Duration("duration", 10*time.Second, "length of the ceiling run")
	backfill := fs.Bool("backfill", false, "leave the marking to signerd's one-time backfill of older certificates, "+
		"and time it with the refresh (default: the prefill marks each response due)")
	module := fs.String("module", os.Getenv("SIGNERD_SOFTHSM_SM2"), "SoftHSM2 `library` with the SM2 mechanism (make softhsm)")
	signerd := fs.String("signerd", "", "signerd `binary` (default: beside signerctl, else on PATH)")
	cpuProfile := fs.String("cpu-profile", "", "write signerd's CPU profile (start to the end of the refresh) into `file`")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *module == "":
		return usageError{"-module (or SIGNERD_SOFTHSM_SM2) must name the SoftHSM2 SM2 build; make bench sets it"}
	case *n < 1 || *sessions < 1 || *duration <= 0 || *revoked < 0:
		return usageError{"-certificates, -sessions and -duration must be positive, -revoked not negative"}
	case *revoked > *n:
		return usageError{"-revoked cannot exceed -certificates"}
	}
	bin, err := signerdBinary(*signerd)
	if err != nil {
		return err
	}
	r := &presignReport{Machine: machine(), CPUs: runtime.NumCPU(), Sessions: *sessions, Certificates: *n, Revoked: *revoked,
		Backfill: *backfill, CPUProfile: *cpuProfile}
	if err := runPresign(r, bin, *module, *duration, os.Stderr); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	r.print(stdout)
	return nil
}

func runPresign(r *presignReport, bin, module string, ceilingRun time.Duration, progress io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	say("throwaway token and CA (ceremonies) in a temporary folder")
	lab, err := newBenchLab(module)
	if err != nil {
		return err
	}
	defer func() {
		if rerr := lab.remove(); rerr != nil && err == nil {
			err = fmt.Errorf("remove the bench folder: %w", rerr)
		}
	}()
	r.LoadAvg[0] = loadAverage()
	say("HSM ceiling: %d sessions for %v", r.Sessions, ceilingRun)
	if r.CeilingRunsPerS[0], r.CeilingRunsCPUMS[0], err = lab.ceiling(r.Sessions, ceilingRun); err != nil {
		return err
	}
	say("HSM ceiling: %.0f signatures/s", r.CeilingRunsPerS[0])
	set, err := lab.newPrefill(r.Certificates, r.Revoked, benchCRL{})
	if err != nil {
		return err
	}
	set.markOCSP = !r.Backfill
	say("prefilling the store with %d certificates (%d revoked), responses marked due: %v", r.Certificates, r.Revoked, set.markOCSP)
	took, err := lab.prefillStore(storeBolt, set, progress)
	if err != nil {
		return err
	}
	r.PrefillS = took.Seconds()
	say("prefilled in %v", took.Round(time.Second))

	pub := lab.path("publish")
	if err := os.Mkdir(pub, 0o755); err != nil {
		return err
	}
	// The delegated responder, as by default: its certification is one
	// signature more, made before the refresh's first batch.
	extra := fmt.Sprintf("ocsp: {validity: 24h}\npublish: {dir: %s}\n", pub)
	d, err := lab.startSignerd(bin, daemonSpec{store: storeBolt, sessions: r.Sessions, batch: 64, cpuProfile: r.CPUProfile, extra: extra})
	if err != nil {
		return err
	}
	running := true
	defer func() {
		if !running {
			return
		}
		if serr := d.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	r.ReadyMS = ms(d.ready)
	say("signerd READY in %v; timing the refresh", d.ready.Round(time.Millisecond))
	if err := r.refresh(lab, d, say); err != nil {
		return err
	}
	if r.RSSMiB, r.RSSAnonMiB, err = d.peakRSS(); err != nil {
		return err
	}
	if r.Published, err = set.published(pub); err != nil {
		return err
	}
	running = false
	if err := d.stop(); err != nil {
		return err
	}
	say("HSM ceiling again, signerd stopped: %d sessions for %v", r.Sessions, ceilingRun)
	if r.CeilingRunsPerS[1], r.CeilingRunsCPUMS[1], err = lab.ceiling(r.Sessions, ceilingRun); err != nil {
		return err
	}
	r.judge()
	r.LoadAvg[1] = loadAverage()
	return nil
}

// judge sets the ceiling judged by, the mean of the runs before and after
// the refresh, and the ratio, overhead and target against it.
func (r *presignReport) judge() {
	r.CeilingPerS = (r.CeilingRunsPerS[0] + r.CeilingRunsPerS[1]) / 2
	r.CeilingCPUMS = (r.CeilingRunsCPUMS[0] + r.CeilingRunsCPUMS[1]) / 2
	r.Ratio = r.PerS / r.CeilingPerS
	r.OverheadUS = 1000 * (r.SignerdCPUMS - r.CeilingCPUMS)
	r.TargetMet = r.Ratio >= presignTarget
}

// refresh polls d's metrics until every certificate's response is signed
// and none is due, and sets the refresh's figures.
func (r *presignReport) refresh(lab *benchLab, d *benchDaemon, say func(string, ...any)) error {
	// One connection for every poll: signerd bounds the connections a uid
	// holds, and a client per poll would leave one idle each time.
	c := d.client()
	defer c.CloseIdleConnections()
	first, err := ocspProgressOf(c)
	if err != nil {
		return err
	}
	start := time.Now()
	cpuBefore, err := lab.cpu(d, storeBolt)
	if err != nil {
		return err
	}
	last, lastChange, lastSaid := first, start, start
	for last.signed < float64(r.Certificates) || last.due != 0 {
		time.Sleep(presignPoll)
		p, err := ocspProgressOf(c)
		if err != nil {
			return err
		}
		now := time.Now()
		if p.signed != last.signed {
			lastChange = now
		}
		if now.Sub(lastChange) > presignStall {
			return fmt.Errorf("nothing signed for %v: %.0f of %d signed, %.0f failed, %.0f due (counted to 10,000)\n%s",
				presignStall, p.signed, r.Certificates, p.failed, p.due, d.log)
		}
		if now.Sub(lastSaid) >= 5*time.Second {
			say("%.0f of %d signed, %.0f/s", p.signed, r.Certificates, (p.signed-first.signed)/now.Sub(start).Seconds())
			lastSaid = now
		}
		last = p
	}
	elapsed := time.Since(start)
	cpuAfter, err := lab.cpu(d, storeBolt)
	if err != nil {
		return err
	}
	r.RefreshS = elapsed.Seconds()
	r.Signed, r.Failed = int(last.signed-first.signed), int(last.failed)
	if r.Signed == 0 {
		return errors.New("no response signed after READY=1")
	}
	r.PerS = float64(r.Signed) / r.RefreshS
	r.SignerdCPUMS = ms(time.Duration(cpuAfter[0]-cpuBefore[0])*clockTick) / float64(r.Signed)
	return nil
}

// ocspProgress is signerd's OCSP pre-signing so far, from its metrics
// (ocspProgressOf reads them through c).
type ocspProgress struct {
	signed, failed, due float64
}

func ocspProgressOf(c *http.Client) (ocspProgress, error) {
	var p ocspProgress
	resp, err := c.Get("http://signerd" + api.RouteMetrics.Path)
	if err != nil {
		return p, fmt.Errorf("signerd metrics: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return p, fmt.Errorf("signerd metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("signerd metrics: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	into := map[string]*float64{"signerd_ocsp_responses_signed_total": &p.signed,
		"signerd_ocsp_response_failures_total": &p.failed, "signerd_ocsp_due": &p.due}
	found := 0
	for line := range strings.Lines(string(raw)) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		v := into[name]
		if !ok || v == nil {
			continue
		}
		if *v, err = strconv.ParseFloat(value, 64); err != nil {
			return p, fmt.Errorf("signerd metrics: %s: %w", name, err)
		}
		found++
	}
	if found != len(into) {
		return p, errors.New("signerd metrics: no signerd_ocsp_responses_signed_total, signerd_ocsp_response_failures_total or signerd_ocsp_due")
	}
	return p, nil
}

// published checks that the publication directory holds a response for
// every certificate of the set, and counts the response files it holds
// (signerd's own certificates, its delegated responder's and its audit
// key's, have theirs too).
func (p *prefillSet) published(pub string) (int, error) {
	for _, serial := range p.serials {
		name, err := publish.OCSPName(p.issuer, serial[:])
		if err != nil {
			return 0, err
		}
		if _, err := os.Stat(filepath.Join(pub, name)); err != nil {
			return 0, fmt.Errorf("a prefilled certificate's response is not published: %w", err)
		}
	}
	n := 0
	err := filepath.WalkDir(filepath.Join(pub, publish.OCSPDir), func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			n++
		}
		return err
	})
	return n, err
}

func (r *presignReport) print(w io.Writer) {
	fmt.Fprintf(w, "machine        %s, %d CPUs; 1-minute load average %.1f before the bench, %.1f after\n",
		r.Machine, r.CPUs, r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintf(w, "HSM ceiling    %.0f signatures/s (%d sessions), %.3f ms CPU per signature: the mean of %.0f/s (%.3f ms) before the refresh and %.0f/s (%.3f ms) after\n",
		r.CeilingPerS, r.Sessions, r.CeilingCPUMS, r.CeilingRunsPerS[0], r.CeilingRunsCPUMS[0], r.CeilingRunsPerS[1], r.CeilingRunsCPUMS[1])
	marked := "marked due by the prefill"
	if r.Backfill {
		marked = "marked due by signerd's backfill, timed with the refresh"
	}
	fmt.Fprintf(w, "store          bbolt, %d certificates (%d revoked), prefilled in %.0f s; responses %s\n",
		r.Certificates, r.Revoked, r.PrefillS, marked)
	fmt.Fprintf(w, "signerd        READY in %.0f ms; peak RSS %.0f MiB, anonymous %.0f MiB\n", r.ReadyMS, r.RSSMiB, r.RSSAnonMiB)
	fmt.Fprintf(w, "refresh        %d responses in %.1f s (%d failed), %d published\n", r.Signed, r.RefreshS, r.Failed, r.Published)
	fmt.Fprintf(w, "responses/s    %.0f = %.2f × the ceiling\n", r.PerS, r.Ratio)
	fmt.Fprintf(w, "signerd CPU    %.3f ms per response; overhead over the HSM's %.0f µs\n", r.SignerdCPUMS, r.OverheadUS)
	if r.CPUProfile != "" {
		fmt.Fprintf(w, "CPU profile    %s (go tool pprof)\n", r.CPUProfile)
	}
	met := "missed"
	if r.TargetMet {
		met = "met"
	}
	fmt.Fprintf(w, "target         responses/s ≥ %.1f × the ceiling: %s (%.2f)\n", presignTarget, met, r.Ratio)
}
