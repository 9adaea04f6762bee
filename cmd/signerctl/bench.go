package main

import (
	"bytes"
	"context"
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
	"signerd/api"
	"signerd/crl"
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
	duration     time.Duration
	clients      []int
	sessions     int
	batch        int
	prefill      int
	revoked      int
	stores       []string
	pgStatements bool
	nodes        int
	module       string
	signerd      string
	cpuProfile   string
	json         bool
	// rounds splits each end-to-end run into slices, the stores taking
	// turns slice by slice.
	rounds int
	// shards is the issuer's CRL shards; deltaRevocations how many
	// certificates are revoked before every shard's delta is signed (0:
	// no deltas).
	shards           int
	deltaRevocations int
	signerdEnv       []string
	signerdLog       string
}

// benchReport is what one bench run measured: the HSM's ceiling, then
// each store's figures, and PostgreSQL's against bbolt's.
type benchReport struct {
	Machine     string  `json:"machine"`
	CPUs        int     `json:"cpus"`
	Sessions    int     `json:"sessions"`
	Batch       int     `json:"batch"`
	DurationS   float64 `json:"duration_s"`
	Prefill     int     `json:"prefill"`
	CeilingPerS float64 `json:"ceiling_per_s"`
	// CeilingCPUMS is the CPU time the bench process spent per signature
	// in the ceiling run (the HSM's signing, SoftHSM2 running in the
	// process, and its software re-verification, as in signerd): what a
	// certificate costs at the least, the HSM's share of signerd's CPU.
	CeilingCPUMS float64 `json:"hsm_cpu_ms_per_sign"`
	// CeilingRunsPerS and CeilingRunsCPUMS are the ceiling runs before the
	// store runs and after them, every signerd stopped: the two figures
	// above are their mean, so that the neighbours' load, which moves over
	// a run of minutes, falls on both sides of a ratio alike. (A -nodes
	// run measures the ceiling once, before.)
	CeilingRunsPerS  [2]float64 `json:"ceiling_runs_per_s"`
	CeilingRunsCPUMS [2]float64 `json:"hsm_cpu_ms_runs"`
	// LoadAvg is the machine's 1-minute load average before the ceiling
	// run and after the last run: the bench's own load, or others' too.
	LoadAvg [2]float64              `json:"load_avg"`
	Stores  map[string]*storeReport `json:"stores,omitempty"` // by name: bolt, postgres
	// Nodes is a -nodes run's one node against several (nil without).
	Nodes *nodesReport `json:"nodes,omitempty"`
	// PostgresVsBolt is PostgreSQL's certs/s over bbolt's, batched, by
	// client count; TargetMet whether it is at least benchTarget at
	// benchTargetClients (nil: not measured).
	PostgresVsBolt map[string]float64 `json:"postgres_vs_bolt,omitempty"`
	TargetMet      *bool              `json:"target_met,omitempty"`
}

// storeReport is one store's figures. Maps are keyed by the number of
// concurrent RA clients.
type storeReport struct {
	PrefillS  float64            `json:"prefill_s,omitempty"`
	E2EPerS   map[string]float64 `json:"e2e_per_s"`
	Ratio     map[string]float64 `json:"ratio"`
	P50MS     map[string]float64 `json:"p50_ms"`
	P99MS     map[string]float64 `json:"p99_ms"`
	MaxMS     map[string]float64 `json:"max_ms"`
	Errors    map[string]int     `json:"errors"`
	MeanBatch map[string]float64 `json:"mean_batch"` // requests per batch signerd signed
	// CPU time per certificate issued in the batched runs: signerd's own
	// (the HSM's signing included: SoftHSM2 runs in its process), and on
	// PostgreSQL the server's (every process of it).
	SignerdCPUMS map[string]float64 `json:"signerd_cpu_ms_per_cert"`
	// OverheadUS is signerd's CPU per certificate less the HSM's per
	// signature (CeilingCPUMS), in µs: signerd's own work per certificate.
	OverheadUS    map[string]float64 `json:"overhead_us_per_cert"`
	ServerCPUMS   map[string]float64 `json:"server_cpu_ms_per_cert,omitempty"`
	BatchOffPerS  map[string]float64 `json:"batch_off_per_s"`
	BatchOffRatio map[string]float64 `json:"batch_off_ratio"`
	BatchOffP99MS map[string]float64 `json:"batch_off_p99_ms"`
	RSSMiB        float64            `json:"rss_mib"`      // VmHWM: with the store's mapped pages
	RSSAnonMiB    float64            `json:"rss_anon_mib"` // peak RssAnon: signerd's own memory
	ReadyMS       float64            `json:"ready_ms"`
	RestartMS     float64            `json:"restart_ready_ms"`
	// The CRLs, signed after the batched runs: every shard's complete
	// CRL one after the other (entries and time in all, and the slowest
	// shard's time), then, after DeltaRevocations revocations, every
	// shard's delta the same way.
	CRLShards       int     `json:"crl_shards"`
	CRLEntries      int     `json:"crl_entries"`
	CRLMS           float64 `json:"crl_ms"`
	CRLShardMaxMS   float64 `json:"crl_shard_max_ms"`
	CRLShardEntries []int   `json:"crl_shard_entries,omitempty"`
	DeltaRevoked    int     `json:"delta_revocations,omitempty"`
	RevokeMS        float64 `json:"revoke_ms,omitempty"` // the revocations, from 8 clients at most
	DeltaEntries    int     `json:"delta_entries,omitempty"`
	DeltaMS         float64 `json:"delta_ms,omitempty"`
	DeltaShardMaxMS float64 `json:"delta_shard_max_ms,omitempty"`
	// ScheduleCRLMS is how long after READY the schedule had signed every
	// shard's first complete CRL at the first start, ScheduleDeltaMS
	// every shard's first delta (which follows a poll later); both are
	// waited out before the runs, so they are not measured under load.
	ScheduleCRLMS   float64 `json:"schedule_crl_ms,omitempty"`
	ScheduleDeltaMS float64 `json:"schedule_delta_ms,omitempty"`
	// AnonPhasesMiB is the peak anonymous RSS of the first signerd in
	// each part of its run: start (to READY), schedule (its start-up
	// CRLs), runs (the batched runs), crl (every shard's complete CRL),
	// delta (the revocations and deltas).
	AnonPhasesMiB map[string]float64 `json:"rss_anon_phases_mib,omitempty"`
	// CRLTargets are issue 20's scale targets as this run met them.
	CRLTargets []targetCheck `json:"crl_targets,omitempty"`
	CPUProfile string        `json:"cpu_profile,omitempty"`
	Postgres   *pgReport     `json:"postgres,omitempty"`
	// Targets are the CPU and latency targets (cpuTargets) as this run
	// met them, in cpuTargets' order.
	Targets []targetCheck `json:"targets,omitempty"`
}

// targetCheck is one target against a run's figure.
type targetCheck struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Met   bool    `json:"met"`
}

// cpuTarget is a figure the issue sets a bound on: at most (or, with
// atLeast, at least) limit, at the run of clients clients.
type cpuTarget struct {
	name    string
	clients int
	limit   float64
	atLeast bool
	figure  func(sr *storeReport, k string) (float64, bool)
}

// cpuTargets: signerd's own CPU per certificate, end to end against the
// ceiling at 64 clients, and p99 at 8 clients.
var cpuTargets = []cpuTarget{
	{"overhead_us_per_cert_64", 64, 200, false, func(sr *storeReport, k string) (float64, bool) { v, ok := sr.OverheadUS[k]; return v, ok }},
	{"ratio_64", 64, 0.65, true, func(sr *storeReport, k string) (float64, bool) { v, ok := sr.Ratio[k]; return v, ok }},
	{"p99_ms_8", 8, 10, false, func(sr *storeReport, k string) (float64, bool) { v, ok := sr.P99MS[k]; return v, ok }},
}

// againstCeiling sets sr's ratios and overheads against the ceiling of
// perS signatures a second at cpuMS of CPU each.
func (sr *storeReport) againstCeiling(perS, cpuMS float64) {
	for k, v := range sr.E2EPerS {
		sr.Ratio[k] = v / perS
	}
	for k, v := range sr.BatchOffPerS {
		sr.BatchOffRatio[k] = v / perS
	}
	for k, v := range sr.SignerdCPUMS {
		sr.OverheadUS[k] = 1000 * (v - cpuMS)
	}
}

// checkTargets sets sr.Targets from the runs made; a target whose run was
// not made is left out.
func (sr *storeReport) checkTargets() {
	sr.Targets = nil
	for _, t := range cpuTargets {
		v, ok := t.figure(sr, strconv.Itoa(t.clients))
		if !ok {
			continue
		}
		met := v <= t.limit
		if t.atLeast {
			met = v >= t.limit
		}
		sr.Targets = append(sr.Targets, targetCheck{Name: t.name, Value: v, Limit: t.limit, Met: met})
	}
}

// pgReport is the PostgreSQL server a run measured, and with
// -pg-statements what signerd sent it in each batched run.
type pgReport struct {
	Version    string                   `json:"version"`
	Settings   map[string]string        `json:"settings"`
	Statements map[string][]pgStatement `json:"statements,omitempty"` // by client count
	Batches    map[string]float64       `json:"batches,omitempty"`    // by client count
}

func newStoreReport() *storeReport {
	return &storeReport{E2EPerS: map[string]float64{}, Ratio: map[string]float64{}, P50MS: map[string]float64{},
		P99MS: map[string]float64{}, MaxMS: map[string]float64{}, Errors: map[string]int{}, MeanBatch: map[string]float64{},
		SignerdCPUMS: map[string]float64{}, OverheadUS: map[string]float64{}, ServerCPUMS: map[string]float64{},
		BatchOffPerS: map[string]float64{}, BatchOffRatio: map[string]float64{}, BatchOffP99MS: map[string]float64{}}
}

// The issue's target: PostgreSQL at 64 clients at least 0.9 × bbolt's
// certs/s in the same run.
const (
	benchTarget        = 0.9
	benchTargetClients = 64
)

// bench measures signerd against the HSM's own speed on a throwaway token
// and stores (SPEC §5.6): the ceiling, then end-to-end issuance through
// signerd's socket by concurrent RA clients, with batching and without, on
// a bbolt store and on a PostgreSQL store of a local server started for
// the run, and PostgreSQL's figures against bbolt's.
func bench(args []string, stdout io.Writer) error {
	if len(args) > 0 && (args[0] == "-ocsp-responder" || args[0] == "--ocsp-responder") {
		return benchOCSPResponder(args[1:], stdout) // benchocsp.go
	}
	if len(args) > 0 && (args[0] == "-ocsp-presign" || args[0] == "--ocsp-presign") {
		return benchOCSPPresign(args[1:], stdout) // benchpresign.go
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var f benchFlags
	var clients, stores string
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of the ceiling run and of each end-to-end run")
	fs.StringVar(&clients, "clients", "1,8,64", "concurrent RA clients, one run per `list` entry")
	fs.IntVar(&f.sessions, "sessions", runtime.NumCPU(), "HSM sessions, for the ceiling and for signerd")
	fs.IntVar(&f.batch, "batch", 64, "signerd's batch size (queue.batch); the batch-off runs use 1")
	fs.IntVar(&f.prefill, "prefill", 0, "certificates written into each store before signerd starts")
	fs.IntVar(&f.revoked, "revoked", 0, "of the prefilled certificates, how many are revoked (the CRL's size)")
	fs.StringVar(&stores, "store", "both", "`store`s to measure: bolt; or postgres (a local PostgreSQL started for the run), "+
		"always beside bbolt in the same run for the comparison, also spelled both")
	fs.IntVar(&f.nodes, "nodes", 1, "with `N` from 2 to 8: instead of the store runs, N signerd nodes on one PostgreSQL store, "+
		"each with its own copy of the token, against one node in the same run")
	fs.BoolVar(&f.pgStatements, "pg-statements", false, "load pg_stat_statements and report the statements signerd sends PostgreSQL per batch")
	fs.StringVar(&f.module, "module", os.Getenv("SIGNERD_SOFTHSM_SM2"), "SoftHSM2 `library` with the SM2 mechanism (make softhsm)")
	fs.StringVar(&f.signerd, "signerd", "", "signerd `binary` (default: beside signerctl, else on PATH)")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write signerd's CPU profile of the batched runs into `file` "+
		"(with two stores, file.bolt and file.postgres)")
	fs.BoolVar(&f.json, "json", false, "print one JSON object instead of the tables")
	fs.IntVar(&f.rounds, "rounds", 1, "split each end-to-end run into `N` slices of duration/N, the stores taking turns slice by slice "+
		"(A B B A …), so that the machine's drift falls on both alike")
	fs.IntVar(&f.shards, "shards", 1, "the issuer's CRL `shards` (crl.shards; more than 1: partitioned CRLs at a bench URL)")
	fs.IntVar(&f.deltaRevocations, "delta-revocations", 0, "with `K` > 0, delta CRLs on: after the complete CRLs, K certificates "+
		"are issued and revoked and every shard's delta signed")
	var signerdEnv string
	fs.StringVar(&signerdEnv, "signerd-env", "", "comma-separated `VAR=value`s for signerd alone (e.g. GOGC=100,GOMEMLIMIT=64MiB)")
	fs.StringVar(&f.signerdLog, "signerd-log", "", "append every signerd's output to `file` instead of keeping it for errors")
	if err := parse(fs, args); err != nil {
		return err
	}
	for _, kv := range strings.Split(signerdEnv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return usageError{fmt.Sprintf("-signerd-env: %q is not VAR=value", kv)}
		}
		f.signerdEnv = append(f.signerdEnv, kv)
	}
	var err error
	if f.clients, err = parseInts(clients); err != nil {
		return usageError{"-clients: " + err.Error()}
	}
	switch stores {
	case storeBolt:
		f.stores = []string{storeBolt}
	case storePostgres, "both":
		f.stores = []string{storeBolt, storePostgres}
	default:
		return usageError{fmt.Sprintf("-store %q: bolt, postgres or both", stores)}
	}
	switch {
	case f.nodes < 1 || f.nodes > maxBenchNodes:
		return usageError{fmt.Sprintf("-nodes %d: 1 (no node runs) to %d", f.nodes, maxBenchNodes)}
	case f.nodes > 1 && stores == storeBolt:
		return usageError{"-nodes: nodes share a PostgreSQL store, not a bbolt file"}
	case f.nodes > 1 && (f.pgStatements || f.cpuProfile != ""):
		return usageError{"-nodes: -pg-statements and -cpu-profile measure one signerd; leave them out"}
	case f.nodes > 1 && f.rounds > 1:
		return usageError{"-nodes: -rounds takes turns between stores; the node runs are on one"}
	case f.nodes > 1:
		f.stores = nil // the node runs are on PostgreSQL alone
	}
	switch {
	case f.module == "":
		return usageError{"-module (or SIGNERD_SOFTHSM_SM2) must name the SoftHSM2 SM2 build; make bench sets it"}
	case f.duration <= 0 || f.sessions <= 0 || f.batch <= 0 || f.prefill < 0 || f.revoked < 0:
		return usageError{"-duration, -sessions and -batch must be positive; -prefill and -revoked not negative"}
	case f.rounds < 1 || f.duration/time.Duration(f.rounds) < minSlice:
		return usageError{fmt.Sprintf("-rounds %d: at least 1, and slices (-duration / -rounds) of at least %v", f.rounds, minSlice)}
	case f.revoked > f.prefill:
		return usageError{"-revoked cannot exceed -prefill"}
	case f.shards < 1 || f.shards > crl.MaxShards:
		return usageError{fmt.Sprintf("-shards %d: 1 to %d", f.shards, crl.MaxShards)}
	case f.deltaRevocations < 0:
		return usageError{"-delta-revocations must not be negative"}
	case f.pgStatements && !slices.Contains(f.stores, storePostgres):
		return usageError{"-pg-statements needs the postgres store"}
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

func runBench(f benchFlags, progress io.Writer) (r *benchReport, err error) {
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }
	r = &benchReport{Machine: machine(), CPUs: runtime.NumCPU(), Sessions: f.sessions, Batch: f.batch,
		DurationS: f.duration.Seconds(), Prefill: f.prefill, Stores: map[string]*storeReport{}}
	for _, name := range f.stores {
		r.Stores[name] = newStoreReport()
	}
	if f.nodes > 1 {
		r.Nodes = newNodesReport(f.nodes)
	}
	say("throwaway token and CA (ceremonies) in a temporary folder")
	lab, err := newBenchLab(f.module)
	if err != nil {
		return nil, err
	}
	lab.crl, lab.signerdEnv, lab.signerdLog = benchCRL{shards: f.shards, deltas: f.deltaRevocations > 0}, f.signerdEnv, f.signerdLog
	defer func() {
		if rerr := lab.remove(); rerr != nil && err == nil {
			err = fmt.Errorf("remove the bench folder: %w", rerr)
		}
	}()
	prefilled := f.stores
	if pg := r.Stores[storePostgres]; pg != nil || r.Nodes != nil {
		say("PostgreSQL: a local server for the run")
		server, err := lab.startPostgres(f.pgStatements)
		if err != nil {
			return nil, err
		}
		if pg != nil {
			pg.Postgres = server
		} else {
			r.Nodes.Postgres, prefilled = server, []string{storePostgres}
		}
		say("PostgreSQL %s: %s", server.Version, server.settingsLine())
	}
	r.LoadAvg[0] = loadAverage()
	say("HSM ceiling: %d sessions for %v", f.sessions, f.duration)
	if r.CeilingRunsPerS[0], r.CeilingRunsCPUMS[0], err = lab.ceiling(f.sessions, f.duration); err != nil {
		return nil, err
	}
	// The runs' ratios are judged against this one until the ceiling is
	// measured again after them.
	r.CeilingPerS, r.CeilingCPUMS = r.CeilingRunsPerS[0], r.CeilingRunsCPUMS[0]
	if f.prefill > 0 {
		set, err := lab.newPrefill(f.prefill, f.revoked, lab.crl)
		if err != nil {
			return nil, err
		}
		for _, name := range prefilled {
			say("%s: prefilling the store with %d certificates (%d revoked)", name, f.prefill, f.revoked)
			took, err := lab.prefillStore(name, set, progress)
			if err != nil {
				return nil, err
			}
			if r.Nodes != nil {
				r.Nodes.PrefillS = took.Seconds()
			} else {
				r.Stores[name].PrefillS = took.Seconds()
			}
			say("%s: prefilled in %v", name, took.Round(time.Second))
		}
	}
	reqs := &requestPool{}
	if r.Nodes != nil {
		if err := runNodes(f, lab, r, reqs, say); err != nil {
			return nil, err
		}
		r.Nodes.compare(f.clients)
	} else {
		for _, batch := range []int{f.batch, 1} {
			if err := runBatchSize(f, lab, batch, r, reqs, say); err != nil {
				return nil, err
			}
		}
		say("HSM ceiling again, every signerd stopped: %d sessions for %v", f.sessions, f.duration)
		if r.CeilingRunsPerS[1], r.CeilingRunsCPUMS[1], err = lab.ceiling(f.sessions, f.duration); err != nil {
			return nil, err
		}
		r.CeilingPerS = (r.CeilingRunsPerS[0] + r.CeilingRunsPerS[1]) / 2
		r.CeilingCPUMS = (r.CeilingRunsCPUMS[0] + r.CeilingRunsCPUMS[1]) / 2
		r.compare(f.clients)
		for _, sr := range r.Stores {
			sr.againstCeiling(r.CeilingPerS, r.CeilingCPUMS)
			sr.checkTargets()
		}
	}
	r.LoadAvg[1] = loadAverage()
	return r, nil
}

// compare sets PostgreSQL's certs/s over bbolt's at each client count,
// and whether the target is met, when both stores were measured.
func (r *benchReport) compare(clients []int) {
	bolt, pg := r.Stores[storeBolt], r.Stores[storePostgres]
	if bolt == nil || pg == nil {
		return
	}
	r.PostgresVsBolt = map[string]float64{}
	for _, c := range clients {
		k := strconv.Itoa(c)
		if bolt.E2EPerS[k] > 0 {
			r.PostgresVsBolt[k] = pg.E2EPerS[k] / bolt.E2EPerS[k]
		}
	}
	if ratio, ok := r.PostgresVsBolt[strconv.Itoa(benchTargetClients)]; ok {
		met := ratio >= benchTarget
		r.TargetMet = &met
	}
}

// prefillStore writes set into the named store and says how long it took.
// On PostgreSQL the load ends as a bulk load does: VACUUM ANALYZE, then a
// checkpoint, so that neither autovacuum working through a million new
// rows nor the checkpoint of the load's WAL runs during the measured runs
// (bbolt's commits leave nothing behind to do).
func (l *benchLab) prefillStore(name string, set *prefillSet, progress io.Writer) (time.Duration, error) {
	start := time.Now()
	st, err := l.openStore(name)
	if err != nil {
		return 0, fmt.Errorf("prefill %s store: %w", name, err)
	}
	if err := set.write(st, name, progress); err != nil {
		st.Close()
		return 0, err
	}
	if err := st.Close(); err != nil {
		return 0, fmt.Errorf("prefill %s store: %w", name, err)
	}
	if name == storePostgres {
		// As long as the load itself may take, at most.
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Since(start), time.Minute))
		defer cancel()
		for _, sql := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
			if err := l.pg.Exec(ctx, benchDatabase, sql); err != nil {
				return 0, fmt.Errorf("prefill %s store: %w", name, err)
			}
		}
	}
	return time.Since(start), nil
}

// storeRun is signerd on one store for the runs of one batch size.
type storeRun struct {
	name string
	d    *benchDaemon
	sr   *storeReport
}

// runBatchSize starts signerd on every store with this batch size and
// runs the end-to-end runs at each client count on each store in turn, so
// the figures compared are measured as close together in time as they can
// be, whatever else the machine is doing; the order of the stores
// alternates from one client count to the next. The batched runs end with
// a full CRL on each store.
func runBatchSize(f benchFlags, lab *benchLab, batch int, r *benchReport, reqs *requestPool, say func(string, ...any)) (err error) {
	var runs []*storeRun
	defer func() {
		for _, run := range runs {
			if serr := run.d.stop(); serr != nil && err == nil {
				err = fmt.Errorf("%s store: %w", run.name, serr)
			}
		}
	}()
	for _, name := range f.stores {
		run := &storeRun{name: name, sr: r.Stores[name]}
		profile := ""
		if batch == f.batch && f.cpuProfile != "" {
			profile = f.cpuProfile
			if len(f.stores) > 1 {
				profile += "." + name
			}
			run.sr.CPUProfile = profile
		}
		if run.d, err = lab.startSignerd(f.signerd, daemonSpec{store: name, sessions: f.sessions, batch: batch, cpuProfile: profile}); err != nil {
			return fmt.Errorf("%s store: %w", name, err)
		}
		runs = append(runs, run)
		if batch == f.batch {
			run.sr.ReadyMS = ms(run.d.ready)
		} else {
			run.sr.RestartMS = ms(run.d.ready)
		}
		say("%s: signerd (batch %d) READY in %v", name, batch, run.d.ready.Round(time.Millisecond))
		if batch == f.batch {
			run.sr.AnonPhasesMiB = map[string]float64{"start": run.d.anonPhase()}
			// The first start: the schedule signs every shard's CRLs now.
			complete, delta, err := run.d.waitScheduledCRLs(lab.crl, 10*time.Minute)
			if err != nil {
				return fmt.Errorf("%s store: %w", name, err)
			}
			run.sr.ScheduleCRLMS, run.sr.ScheduleDeltaMS = ms(complete), ms(delta)
			run.sr.AnonPhasesMiB["schedule"] = run.d.anonPhase()
			say("%s: the schedule signed every shard's CRL %v after READY", name, complete.Round(time.Millisecond))
		}
	}
	for i, c := range f.clients {
		if err := runClients(f, lab, runs, i, batch, c, r, reqs, say); err != nil {
			return err
		}
	}
	for _, run := range runs {
		if batch == f.batch {
			if err := measureCRLs(f, run, reqs, say); err != nil {
				return fmt.Errorf("%s store: %w", run.name, err)
			}
		}
		rss, anon, err := run.d.peakRSS()
		if err != nil {
			return fmt.Errorf("%s store: %w", run.name, err)
		}
		run.sr.RSSMiB, run.sr.RSSAnonMiB = max(run.sr.RSSMiB, rss), max(run.sr.RSSAnonMiB, anon)
		run.sr.checkCRLTargets()
	}
	return nil
}

// measureCRLs has run's signerd sign every shard's complete CRL, one
// after the other, and then, with -delta-revocations, issue and revoke
// that many certificates and sign every shard's delta.
func measureCRLs(f benchFlags, run *storeRun, reqs *requestPool, say func(string, ...any)) error {
	sr := run.sr
	sr.AnonPhasesMiB["runs"] = run.d.anonPhase()
	say("%s: every shard's complete CRL (%d)", run.name, f.shards)
	full, err := run.d.signShards(f.shards, false)
	if err != nil {
		return err
	}
	sr.AnonPhasesMiB["crl"] = run.d.anonPhase()
	sr.CRLShards, sr.CRLEntries, sr.CRLMS, sr.CRLShardMaxMS = f.shards, full.entries, ms(full.total), ms(full.slowest)
	sr.CRLShardEntries = full.perShard
	if f.deltaRevocations == 0 {
		return nil
	}
	say("%s: %d certificates issued and revoked", run.name, f.deltaRevocations)
	took, err := run.d.issueAndRevoke(reqs, f.deltaRevocations, 8)
	if err != nil {
		return err
	}
	sr.DeltaRevoked, sr.RevokeMS = f.deltaRevocations, ms(took)
	say("%s: every shard's delta CRL", run.name)
	deltas, err := run.d.signShards(f.shards, true)
	if err != nil {
		return err
	}
	sr.DeltaEntries, sr.DeltaMS, sr.DeltaShardMaxMS = deltas.entries, ms(deltas.total), ms(deltas.slowest)
	sr.AnonPhasesMiB["delta"] = run.d.anonPhase()
	if deltas.entries != f.deltaRevocations {
		return fmt.Errorf("the deltas list %d entries after %d revocations", deltas.entries, f.deltaRevocations)
	}
	return nil
}

// Issue 20's scale targets: every shard's complete CRL signed in 5 s in
// all, signerd's anonymous memory at most 64 MiB through the run, and a
// delta after 1,000 revocations in 50 ms (every shard's delta, in all).
const (
	crlTargetMS      = 5000
	crlTargetAnonMiB = 64
	deltaTargetMS    = 50
)

// checkCRLTargets judges the CRL figures measured.
func (sr *storeReport) checkCRLTargets() {
	sr.CRLTargets = nil
	check := func(name string, v, limit float64) {
		sr.CRLTargets = append(sr.CRLTargets, targetCheck{Name: name, Value: v, Limit: limit, Met: v <= limit})
	}
	if sr.CRLShards > 0 {
		check("crl_ms", sr.CRLMS, crlTargetMS)
	}
	check("rss_anon_mib", sr.RSSAnonMiB, crlTargetAnonMiB)
	if sr.DeltaRevoked > 0 {
		check("delta_ms", sr.DeltaMS, deltaTargetMS)
	}
}

// minSlice is the shortest slice of an end-to-end run -rounds may make.
const minSlice = 100 * time.Millisecond

// runClients is the end-to-end runs of c clients (the i-th client
// count) on every store of runs: f.duration each, in f.rounds slices, the
// stores taking turns slice by slice, the first alternating from one
// client count and one round to the next.
func runClients(f benchFlags, lab *benchLab, runs []*storeRun, i, batch, c int, r *benchReport, reqs *requestPool, say func(string, ...any)) error {
	slice := f.duration / time.Duration(f.rounds)
	measured := map[*storeRun]*clientsRun{}
	for _, run := range runs {
		measured[run] = &clientsRun{res: &loadResult{}}
		if f.pgStatements && run.name == storePostgres && batch == f.batch {
			if err := lab.resetStatements(); err != nil {
				return err
			}
		}
	}
	for round := range f.rounds {
		order := slices.Clone(runs)
		if (i+round)%2 == 1 {
			slices.Reverse(order)
		}
		for _, run := range order {
			say("%s: %d clients, batch %d, %v", run.name, c, batch, slice)
			if err := measured[run].slice(lab, run, c, slice, r.CeilingPerS, reqs); err != nil {
				return fmt.Errorf("%s store: %w", run.name, err)
			}
		}
	}
	for _, run := range runs {
		if err := measured[run].record(f, lab, run, batch, c, r, say); err != nil {
			return fmt.Errorf("%s store: %w", run.name, err)
		}
	}
	return nil
}

// clientsRun is what the slices of one store's end-to-end run measured,
// added up.
type clientsRun struct {
	res               *loadResult
	cpu               [2]int64 // signerd's and the server's, in clock ticks
	batches, requests float64
}

// slice has c clients issue through run's signerd for dur and adds what
// it measured to cr.
func (cr *clientsRun) slice(lab *benchLab, run *storeRun, c int, dur time.Duration, ceiling float64, reqs *requestPool) error {
	d := run.d
	if err := reqs.fill(int(ceiling*dur.Seconds()*1.1) + 2*c); err != nil {
		return err
	}
	batchesBefore, requestsBefore, err := d.batches()
	if err != nil {
		return err
	}
	cpuBefore, err := lab.cpu(d, run.name)
	if err != nil {
		return err
	}
	res := load([]*benchDaemon{d}, c, dur, reqs)
	if res.n == 0 {
		return fmt.Errorf("%d clients: nothing issued: %v", c, res.firstErr)
	}
	cpuAfter, err := lab.cpu(d, run.name)
	if err != nil {
		return err
	}
	batches, requests, err := d.batches()
	if err != nil {
		return err
	}
	cr.res.add(res)
	for k := range cr.cpu {
		cr.cpu[k] += cpuAfter[k] - cpuBefore[k]
	}
	cr.batches += batches - batchesBefore
	cr.requests += requests - requestsBefore
	return nil
}

// record writes what cr measured into r, as the run of c clients on
// run's store with this batch size.
func (cr *clientsRun) record(f benchFlags, lab *benchLab, run *storeRun, batch, c int, r *benchReport, say func(string, ...any)) error {
	sr, res, ceiling := run.sr, cr.res, r.CeilingPerS
	key := strconv.Itoa(c)
	if batch == f.batch {
		sr.E2EPerS[key], sr.Ratio[key] = res.rate(), res.rate()/ceiling
		sr.P50MS[key], sr.P99MS[key], sr.MaxMS[key] = res.percentile(0.50), res.percentile(0.99), res.percentile(1)
		sr.Errors[key] = res.errors
		if cr.batches > 0 {
			sr.MeanBatch[key] = cr.requests / cr.batches
		}
		sr.SignerdCPUMS[key] = ms(time.Duration(cr.cpu[0])*clockTick) / float64(res.n)
		sr.OverheadUS[key] = 1000 * (sr.SignerdCPUMS[key] - r.CeilingCPUMS)
		if run.name == storePostgres {
			sr.ServerCPUMS[key] = ms(time.Duration(cr.cpu[1])*clockTick) / float64(res.n)
		}
	} else {
		sr.BatchOffPerS[key], sr.BatchOffRatio[key] = res.rate(), res.rate()/ceiling
		sr.BatchOffP99MS[key] = res.percentile(0.99)
	}
	if f.pgStatements && run.name == storePostgres && batch == f.batch {
		if sr.Postgres.Statements == nil {
			sr.Postgres.Statements, sr.Postgres.Batches = map[string][]pgStatement{}, map[string]float64{}
		}
		var err error
		if sr.Postgres.Statements[key], err = lab.statements(); err != nil {
			return err
		}
		sr.Postgres.Batches[key] = cr.batches
	}
	if res.errors > 0 {
		say("%s: %d errors; the first: %v", run.name, res.errors, res.firstErr)
	}
	return nil
}

// storeTitles name the stores in the tables.
var storeTitles = map[string]string{storeBolt: "bbolt", storePostgres: "PostgreSQL"}

func (r *benchReport) print(w io.Writer, clients []int) {
	fmt.Fprintf(w, "machine      %s, %d CPUs; 1-minute load average %.1f before the bench, %.1f after\n",
		r.Machine, r.CPUs, r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintf(w, "HSM ceiling  %.0f SM2 signs/s on the issuing key (%d sessions, SoftHSM2 SM2 build), %.3f ms CPU per signature",
		r.CeilingPerS, r.Sessions, r.CeilingCPUMS)
	if r.CeilingRunsPerS[1] > 0 {
		fmt.Fprintf(w, ": the mean of %.0f/s (%.3f ms) before the runs and %.0f/s (%.3f ms) after",
			r.CeilingRunsPerS[0], r.CeilingRunsCPUMS[0], r.CeilingRunsPerS[1], r.CeilingRunsCPUMS[1])
	}
	fmt.Fprintln(w)
	for _, name := range []string{storeBolt, storePostgres} {
		sr := r.Stores[name]
		if sr == nil {
			continue
		}
		fmt.Fprintf(w, "\n== %s store\n", storeTitles[name])
		if sr.Postgres != nil {
			fmt.Fprintf(w, "server       PostgreSQL %s, local, Unix socket: %s\n", sr.Postgres.Version, sr.Postgres.settingsLine())
		}
		if r.Prefill > 0 {
			then := ""
			if name == storePostgres {
				then = ", VACUUM ANALYZE and CHECKPOINT included"
			}
			fmt.Fprintf(w, "store        %d certificates prefilled in %.0f s%s\n", r.Prefill, sr.PrefillS, then)
		}
		fmt.Fprintf(w, "signerd      READY %.0f ms (first start), %.0f ms (restart)\n", sr.ReadyMS, sr.RestartMS)
		mapped := "with the store's mapped pages"
		if name == storePostgres {
			mapped = "signerd only, not the server"
		}
		fmt.Fprintf(w, "memory       peak RSS %.1f MiB (VmHWM, %s); anonymous %.1f MiB%s\n", sr.RSSMiB, mapped, sr.RSSAnonMiB, sr.anonPhases())
		sr.printCRLs(w)
		if sr.CPUProfile != "" {
			fmt.Fprintf(w, "CPU profile  %s (batched runs)\n", sr.CPUProfile)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		server := ""
		if name == storePostgres {
			server = "\tserver CPU ms/cert"
		}
		fmt.Fprintf(tw, "clients\tcerts/s\tof ceiling\tp50 ms\tp99 ms\tmax ms\terrors\tmean batch\tsignerd CPU ms/cert\toverhead µs/cert%s\t\tbatch off: certs/s\tof ceiling\tp99 ms\t\n", server)
		for _, c := range clients {
			k := strconv.Itoa(c)
			if name == storePostgres {
				server = fmt.Sprintf("\t%.2f", sr.ServerCPUMS[k])
			}
			fmt.Fprintf(tw, "%d\t%.0f\t%.0f%%\t%.1f\t%.1f\t%.1f\t%d\t%.1f\t%.2f\t%.0f%s\t\t%.0f\t%.0f%%\t%.1f\t\n", c, sr.E2EPerS[k], 100*sr.Ratio[k],
				sr.P50MS[k], sr.P99MS[k], sr.MaxMS[k], sr.Errors[k], sr.MeanBatch[k], sr.SignerdCPUMS[k], sr.OverheadUS[k], server,
				sr.BatchOffPerS[k], 100*sr.BatchOffRatio[k], sr.BatchOffP99MS[k])
		}
		tw.Flush()
		sr.printTargets(w)
		if sr.Postgres != nil && len(sr.Postgres.Statements) > 0 {
			sr.Postgres.printStatements(w, clients)
		}
	}
	if r.Nodes != nil {
		r.Nodes.print(w, clients, r.Prefill)
	}
	bolt, pg := r.Stores[storeBolt], r.Stores[storePostgres]
	if bolt == nil || pg == nil {
		return
	}
	fmt.Fprintf(w, "\n== PostgreSQL against bbolt, same run (batched)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "clients\tbbolt certs/s\tPostgreSQL certs/s\tPostgreSQL/bbolt\tbbolt p50/p99 ms\tPostgreSQL p50/p99 ms\t\n")
	for _, c := range clients {
		k := strconv.Itoa(c)
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t%.1f / %.1f\t%.1f / %.1f\t\n", c, bolt.E2EPerS[k], pg.E2EPerS[k], r.PostgresVsBolt[k],
			bolt.P50MS[k], bolt.P99MS[k], pg.P50MS[k], pg.P99MS[k])
	}
	tw.Flush()
	target := fmt.Sprintf("target       PostgreSQL at %d clients ≥ %.1f × bbolt: ", benchTargetClients, benchTarget)
	switch {
	case r.TargetMet == nil:
		fmt.Fprintf(w, "%snot measured (no %d-client run)\n", target, benchTargetClients)
	case *r.TargetMet:
		fmt.Fprintf(w, "%s%.2f, met\n", target, r.PostgresVsBolt[strconv.Itoa(benchTargetClients)])
	default:
		fmt.Fprintf(w, "%s%.2f, NOT met\n", target, r.PostgresVsBolt[strconv.Itoa(benchTargetClients)])
	}
}

// targetTitles say each target of cpuTargets as the table's reader reads it.
var targetTitles = map[string]string{
	"overhead_us_per_cert_64": "overhead at 64 clients ≤ %.0f µs/cert: %.0f",
	"ratio_64":                "end to end at 64 clients ≥ %.2f × ceiling: %.2f",
	"p99_ms_8":                "p99 at 8 clients ≤ %.0f ms: %.1f",
}

// crlTargetTitles say each CRL target as the table's reader reads it.
var crlTargetTitles = map[string]string{
	"crl_ms":       "every shard's complete CRL ≤ %.0f ms in all: %.0f",
	"rss_anon_mib": "signerd's anonymous RSS ≤ %.0f MiB at peak: %.1f",
	"delta_ms":     "every shard's delta ≤ %.0f ms in all: %.1f",
}

// anonPhaseOrder is the order of a run's parts.
var anonPhaseOrder = []string{"start", "schedule", "runs", "crl", "delta"}

// anonPhases says the anonymous peak of each part of the first signerd's
// run measured.
func (sr *storeReport) anonPhases() string {
	var parts []string
	for _, p := range anonPhaseOrder {
		if v, ok := sr.AnonPhasesMiB[p]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", p, v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// printCRLs prints the CRL figures and their targets.
func (sr *storeReport) printCRLs(w io.Writer) {
	fmt.Fprintf(w, "CRL          %d entries in %d shard(s), each signed in turn: %.0f ms in all, slowest shard %.0f ms\n",
		sr.CRLEntries, sr.CRLShards, sr.CRLMS, sr.CRLShardMaxMS)
	if sr.ScheduleCRLMS > 0 {
		fmt.Fprintf(w, "schedule     at the first start, every shard's complete CRL signed %.0f ms after READY", sr.ScheduleCRLMS)
		if sr.ScheduleDeltaMS > 0 {
			fmt.Fprintf(w, ", every delta %.0f ms after", sr.ScheduleDeltaMS)
		}
		fmt.Fprintln(w)
	}
	if sr.DeltaRevoked > 0 {
		fmt.Fprintf(w, "delta CRL    after %d revocations (%.0f ms): %d entries in %d shard(s), %.1f ms in all, slowest shard %.1f ms\n",
			sr.DeltaRevoked, sr.RevokeMS, sr.DeltaEntries, sr.CRLShards, sr.DeltaMS, sr.DeltaShardMaxMS)
	}
	for _, t := range sr.CRLTargets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target       "+crlTargetTitles[t.Name]+", %s\n", t.Limit, t.Value, verdict)
	}
}

// printTargets prints one line per target measured, met or not.
func (sr *storeReport) printTargets(w io.Writer) {
	for _, t := range sr.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "target       "+targetTitles[t.Name]+", %s\n", t.Limit, t.Value, verdict)
	}
}

// settingsLine is the server's reported settings, in the bench's order.
func (p *pgReport) settingsLine() string {
	var parts []string
	for _, name := range benchPostgresShown {
		parts = append(parts, name+"="+p.Settings[name])
	}
	return strings.Join(parts, " ")
}

// printStatements prints, for each batched run, the statements signerd
// sent per batch, most frequent first.
func (p *pgReport) printStatements(w io.Writer, clients []int) {
	for _, c := range clients {
		k := strconv.Itoa(c)
		batches := p.Batches[k]
		if batches == 0 {
			continue
		}
		var calls int64
		for _, s := range p.Statements[k] {
			calls += s.Calls
		}
		fmt.Fprintf(w, "\nstatements   %d clients: %.0f batches, %.1f statements per batch (pg_stat_statements)\n", c, batches, float64(calls)/batches)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  per batch\tmean ms\tstatement\n")
		for _, s := range p.Statements[k] {
			fmt.Fprintf(tw, "  %.2f\t%.3f\t%s\n", float64(s.Calls)/batches, s.TotalMS/float64(max(s.Calls, 1)), oneLine(s.Query, 90))
		}
		tw.Flush()
	}
}

// oneLine is s with its white space runs made single spaces, cut to n
// runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
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
	return json.Marshal(api.IssueRequest{RequestID: id, Profile: "person-sign",
		Subject: api.Subject{CommonName: "bench " + id, Country: "CN"},
		CSR:     string(pem.EncodeToMemory(&pem.Block{Type: api.PEMCSR, Bytes: csr}))})
}

// loadResult is one end-to-end run.
type loadResult struct {
	n, errors int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration
}

func (r *loadResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// add adds o, another slice of the same run, to r.
func (r *loadResult) add(o *loadResult) {
	r.n += o.n
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
	slices.Sort(r.latencies)
}

// percentile of the successful requests' latencies, in milliseconds.
func (r *loadResult) percentile(q float64) float64 {
	if len(r.latencies) == 0 {
		return 0
	}
	i := min(len(r.latencies)-1, int(q*float64(len(r.latencies))))
	return ms(r.latencies[i])
}

// load has clients RA connections issue certificates back to back for dur
// (or until the pool runs dry) and counts what was issued. The
// connections are spread evenly over ds, client i on ds[i mod len(ds)].
func load(ds []*benchDaemon, clients int, dur time.Duration, reqs *requestPool) *loadResult {
	var (
		mu  sync.Mutex
		res = &loadResult{}
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for i := range clients {
		wg.Go(func() {
			c := ds[i%len(ds)].client()
			// Closed at the end, so that slices of a run (-rounds) do not
			// pile up idle connections against signerd's cap per uid.
			defer c.CloseIdleConnections()
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
	resp, err := c.Post("http://signerd"+api.RouteIssue.Path, "application/json", bytes.NewReader(body))
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

// loadAverage is the machine's 1-minute load average, 0 if unknown.
func loadAverage() float64 {
	raw, _ := os.ReadFile("/proc/loadavg")
	first, _, _ := strings.Cut(string(raw), " ")
	v, _ := strconv.ParseFloat(first, 64)
	return v
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
