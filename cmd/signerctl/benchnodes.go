package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxBenchNodes bounds -nodes: node names are single letters, and on the
// small machines the bench runs on more nodes than that only measure the
// scheduler.
const maxBenchNodes = 8

// nodesReport is what a -nodes run measured on the PostgreSQL store: one
// node against all of them, at each client count, in the same run.
type nodesReport struct {
	Nodes    int           `json:"nodes"`
	PrefillS float64       `json:"prefill_s,omitempty"`
	ReadyMS  []float64     `json:"ready_ms"` // each node's, a first
	One      *nodesFigures `json:"one_node"`
	All      *nodesFigures `json:"all_nodes"`
	// AllVsOne is all nodes' certs/s over one node's, by client count;
	// TargetMet whether it is at least benchTarget at benchTargetClients
	// (nil: not measured).
	AllVsOne  map[string]float64 `json:"all_vs_one"`
	TargetMet *bool              `json:"target_met,omitempty"`
	Postgres  *pgReport          `json:"postgres"`
}

// nodesFigures are one or all nodes' figures. Maps are keyed by the number
// of concurrent RA clients, which are spread evenly over the nodes loaded.
type nodesFigures struct {
	E2EPerS   map[string]float64 `json:"e2e_per_s"`
	P50MS     map[string]float64 `json:"p50_ms"`
	P99MS     map[string]float64 `json:"p99_ms"`
	MaxMS     map[string]float64 `json:"max_ms"`
	Errors    map[string]int     `json:"errors"`
	MeanBatch map[string]float64 `json:"mean_batch"`
	// Issued is what each node (a first) says it issued during the run,
	// from its own metrics: every running node, loaded or not.
	Issued map[string][]int `json:"issued_per_node"`
	// CPU time per certificate: every node's signerd together (the
	// HSM's signing included: SoftHSM2 runs in each node's process), and
	// the PostgreSQL server's.
	SignerdCPUMS map[string]float64 `json:"signerd_cpu_ms_per_cert"`
	ServerCPUMS  map[string]float64 `json:"server_cpu_ms_per_cert"`
}

func newNodesFigures() *nodesFigures {
	return &nodesFigures{E2EPerS: map[string]float64{}, P50MS: map[string]float64{}, P99MS: map[string]float64{},
		MaxMS: map[string]float64{}, Errors: map[string]int{}, MeanBatch: map[string]float64{}, Issued: map[string][]int{},
		SignerdCPUMS: map[string]float64{}, ServerCPUMS: map[string]float64{}}
}

func newNodesReport(nodes int) *nodesReport {
	return &nodesReport{Nodes: nodes, One: newNodesFigures(), All: newNodesFigures(), AllVsOne: map[string]float64{}}
}

// nodeName is the i-th node's name: a, b, …
func nodeName(i int) string { return string(rune('a' + i)) }

// nodeToken copies the lab's token folder for the named node, beside a
// softhsm2.conf of its own, and returns that conf's path: the issuing key
// in an HSM of the node's own, as restoring a backup of it gives. It runs
// before any signerd starts on the lab's token, so the copy holds no
// other node's audit key.
func (l *benchLab) nodeToken(name string) (string, error) {
	dir := l.path("node-" + name)
	tokens := filepath.Join(dir, "tokens")
	if err := os.CopyFS(tokens, os.DirFS(l.path("tokens"))); err != nil {
		return "", fmt.Errorf("node %s: copy the token folder: %w", name, err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte(softHSMConf(tokens)), 0o600); err != nil {
		return "", fmt.Errorf("node %s: %w", name, err)
	}
	return conf, nil
}

// runNodes starts f.nodes signerd nodes on the PostgreSQL store, each with
// its own token, socket and audit key, and at each client count runs the
// clients against node a alone and spread over every node, back to back,
// alternating which goes first, so that drift in the machine's load falls
// on both. The other nodes stay up, idle, while node a runs alone: they
// cost a lease renewal every few seconds, and starting them anew between
// runs would measure their start.
func runNodes(f benchFlags, lab *benchLab, r *benchReport, reqs *requestPool, say func(string, ...any)) (err error) {
	nr := r.Nodes
	specs := make([]daemonSpec, f.nodes)
	for i := range specs {
		conf, err := lab.nodeToken(nodeName(i))
		if err != nil {
			return err
		}
		specs[i] = daemonSpec{store: storePostgres, node: nodeName(i), softHSMConf: conf, sessions: f.sessions, batch: f.batch}
	}
	var ds []*benchDaemon
	defer func() {
		for i, d := range ds {
			if serr := d.stop(); serr != nil && err == nil {
				err = fmt.Errorf("node %s: %w", nodeName(i), serr)
			}
		}
	}()
	for i, spec := range specs {
		d, err := lab.startSignerd(f.signerd, spec)
		if err != nil {
			return fmt.Errorf("node %s: %w", nodeName(i), err)
		}
		ds = append(ds, d)
		nr.ReadyMS = append(nr.ReadyMS, ms(d.ready))
		say("node %s: signerd (batch %d) READY in %v", nodeName(i), f.batch, d.ready.Round(time.Millisecond))
	}
	for i, c := range f.clients {
		loaded := []int{1, f.nodes}
		if i%2 == 1 {
			loaded[0], loaded[1] = loaded[1], loaded[0]
		}
		for _, n := range loaded {
			fig := nr.One
			if n > 1 {
				fig = nr.All
			}
			if err := runNodeClients(f, lab, ds, n, c, r.CeilingPerS, reqs, fig, say); err != nil {
				return fmt.Errorf("%d nodes: %w", n, err)
			}
		}
	}
	return nil
}

// runNodeClients is one end-to-end run: c clients spread over the first n
// of the running nodes ds for f.duration.
func runNodeClients(f benchFlags, lab *benchLab, ds []*benchDaemon, n, c int, ceiling float64, reqs *requestPool,
	fig *nodesFigures, say func(string, ...any)) error {
	if err := reqs.fill(int(ceiling*f.duration.Seconds()*1.1) + 2*c); err != nil {
		return err
	}
	type counts struct{ batches, requests float64 }
	before := make([]counts, len(ds))
	for i, d := range ds {
		var err error
		if before[i].batches, before[i].requests, err = d.batches(); err != nil {
			return fmt.Errorf("node %s: %w", nodeName(i), err)
		}
	}
	cpuBefore, err := lab.nodesCPU(ds)
	if err != nil {
		return err
	}
	say("%d of %d nodes: %d clients, batch %d, %v", n, len(ds), c, f.batch, f.duration)
	res := load(ds[:n], c, f.duration, reqs)
	if res.n == 0 {
		return fmt.Errorf("%d clients: nothing issued: %v", c, res.firstErr)
	}
	cpuAfter, err := lab.nodesCPU(ds)
	if err != nil {
		return err
	}
	var batches, requests float64
	issued := make([]int, len(ds))
	for i, d := range ds {
		b, q, err := d.batches()
		if err != nil {
			return fmt.Errorf("node %s: %w", nodeName(i), err)
		}
		batches, requests = batches+b-before[i].batches, requests+q-before[i].requests
		issued[i] = int(q - before[i].requests)
	}
	key := strconv.Itoa(c)
	fig.E2EPerS[key] = res.rate()
	fig.P50MS[key], fig.P99MS[key], fig.MaxMS[key] = res.percentile(0.50), res.percentile(0.99), res.percentile(1)
	fig.Errors[key], fig.Issued[key] = res.errors, issued
	if batches > 0 {
		fig.MeanBatch[key] = requests / batches
	}
	fig.SignerdCPUMS[key] = ms(time.Duration(cpuAfter[0]-cpuBefore[0])*clockTick) / float64(res.n)
	fig.ServerCPUMS[key] = ms(time.Duration(cpuAfter[1]-cpuBefore[1])*clockTick) / float64(res.n)
	if res.errors > 0 {
		say("%d nodes: %d errors; the first: %v", n, res.errors, res.firstErr)
	}
	return nil
}

// nodesCPU is the CPU ticks used so far by every node together and by
// the PostgreSQL server.
func (l *benchLab) nodesCPU(ds []*benchDaemon) ([2]int64, error) {
	var out [2]int64
	for i, d := range ds {
		t, err := l.cpu(d, storePostgres)
		if err != nil {
			return out, fmt.Errorf("node %s: %w", nodeName(i), err)
		}
		out[0] += t[0]
		out[1] = t[1] // the server's, whichever node asked
	}
	return out, nil
}

// compare sets all nodes' certs/s over one node's at each client count,
// and whether the target is met.
func (nr *nodesReport) compare(clients []int) {
	for _, c := range clients {
		k := strconv.Itoa(c)
		if nr.One.E2EPerS[k] > 0 {
			nr.AllVsOne[k] = nr.All.E2EPerS[k] / nr.One.E2EPerS[k]
		}
	}
	if ratio, ok := nr.AllVsOne[strconv.Itoa(benchTargetClients)]; ok {
		met := ratio >= benchTarget
		nr.TargetMet = &met
	}
}

func (nr *nodesReport) print(w io.Writer, clients []int, prefill int) {
	n := nr.Nodes
	fmt.Fprintf(w, "\n== %d nodes against one, one PostgreSQL store, same run (batched)\n", n)
	if nr.Postgres != nil {
		fmt.Fprintf(w, "server       PostgreSQL %s, local, Unix socket: %s\n", nr.Postgres.Version, nr.Postgres.settingsLine())
	}
	if prefill > 0 {
		fmt.Fprintf(w, "store        %d certificates prefilled in %.0f s, VACUUM ANALYZE and CHECKPOINT included\n", prefill, nr.PrefillS)
	}
	var ready []string
	for i, r := range nr.ReadyMS {
		ready = append(ready, fmt.Sprintf("%s %.0f ms", nodeName(i), r))
	}
	fmt.Fprintf(w, "nodes        %s, each its own token (a copy of the CA's), socket and audit chain; READY %s\n",
		strings.Join(nodeNames(n), ", "), strings.Join(ready, ", "))
	fmt.Fprintf(w, "load         the clients on node a alone, then spread evenly over all %d nodes (or the other way round)\n\n", n)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "clients\t1 node certs/s\tp50/p99 ms\t%d nodes certs/s\tp50/p99 ms\t%[1]d nodes/1\tissued per node\t"+
		"errors\tmean batch\tsignerd CPU ms/cert\tserver CPU ms/cert\t\n", n)
	for _, c := range clients {
		k := strconv.Itoa(c)
		var issued []string
		for _, v := range nr.All.Issued[k] {
			issued = append(issued, strconv.Itoa(v))
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%.1f / %.1f\t%.0f\t%.1f / %.1f\t%.2f\t%s\t%d / %d\t%.1f / %.1f\t%.2f / %.2f\t%.2f / %.2f\t\n",
			c, nr.One.E2EPerS[k], nr.One.P50MS[k], nr.One.P99MS[k], nr.All.E2EPerS[k], nr.All.P50MS[k], nr.All.P99MS[k],
			nr.AllVsOne[k], strings.Join(issued, " / "), nr.One.Errors[k], nr.All.Errors[k],
			nr.One.MeanBatch[k], nr.All.MeanBatch[k], nr.One.SignerdCPUMS[k], nr.All.SignerdCPUMS[k],
			nr.One.ServerCPUMS[k], nr.All.ServerCPUMS[k])
	}
	tw.Flush()
	fmt.Fprintf(w, "(pairs: 1 node / %d nodes; signerd CPU is every node's together)\n", n)
	target := fmt.Sprintf("target       %d nodes at %d clients ≥ %.1f × one node: ", n, benchTargetClients, benchTarget)
	k := strconv.Itoa(benchTargetClients)
	switch {
	case nr.TargetMet == nil:
		fmt.Fprintf(w, "%snot measured (no %d-client run)\n", target, benchTargetClients)
	case *nr.TargetMet:
		fmt.Fprintf(w, "%s%.2f, met\n", target, nr.AllVsOne[k])
	default:
		fmt.Fprintf(w, "%s%.2f, NOT met\n", target, nr.AllVsOne[k])
	}
}

func nodeNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, nodeName(i))
	}
	return out
}
