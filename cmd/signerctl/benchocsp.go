package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/issuance"
	"signerd/ocsp"
	"signerd/publish"
)

// benchOCSPResponder measures ocsp-responder (issue 21's target: 20,000
// GET responses/s, p99 ≤ 5 ms, 1 M certificates known): a software SM2
// CA signs one response, published under n serial names (hard links to
// a few files: the names, the directory lookups and the cache misses are
// those of n certificates, the bytes are one response's); the responder
// runs as its own process over that directory, and concurrent keep-alive
// clients in this process GET uniformly random serials of the n.
func benchOCSPResponder(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench -ocsp-responder", flag.ContinueOnError)
	n := fs.Int("responses", 1_000_000, "responses published (serial names)")
	clients := fs.Int("clients", 32, "concurrent keep-alive GET clients")
	duration := fs.Duration("duration", 5*time.Second, "length of the measured run (after a 1 s warm-up)")
	cache := fs.Int("cache", 100_000, "the responder's limits.cache_entries")
	dir := fs.String("dir", "", "publication `directory` to fill (default: a temporary one, removed after)")
	responder := fs.String("responder", "", "ocsp-responder `binary` (default: beside signerctl, else on PATH)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 1 || *clients < 1 || *duration <= 0 || *cache < 0 {
		return usageError{"-responses, -clients and -duration must be positive, -cache not negative"}
	}
	bin, err := besideOrOnPath(*responder, "ocsp-responder")
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "signerctl-bench-ocsp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	pub := *dir
	if pub == "" {
		pub = filepath.Join(work, "publish")
	}
	fmt.Fprintf(os.Stderr, "bench: publishing %d responses in %s\n", *n, pub)
	fix, err := ocspFixture(work, pub, *n)
	if err != nil {
		return err
	}
	r, err := startOCSPResponder(bin, work, pub, fix.caPEM, *cache, *clients)
	if err != nil {
		return err
	}
	defer r.stop()

	fmt.Fprintf(os.Stderr, "bench: %d clients for %s against %s\n", *clients, *duration, r.addr)
	rep, err := loadOCSP(r, fix, *n, *clients, *duration)
	if err != nil {
		return err
	}
	rep.Responses, rep.CacheEntries, rep.LoadAverage = *n, *cache, loadAverage()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "ocsp-responder: %d responses published (one response hard-linked under each serial), cache %d entries\n", rep.Responses, rep.CacheEntries)
	fmt.Fprintf(stdout, "%d keep-alive GET clients, %.1f s: %d answers, %d wrong\n", rep.Clients, rep.Seconds, rep.Answers, rep.Wrong)
	fmt.Fprintf(stdout, "  %.0f responses/s   p50 %.2f ms   p99 %.2f ms   max %.2f ms\n", rep.PerSecond, rep.P50ms, rep.P99ms, rep.MaxMs)
	fmt.Fprintf(stdout, "  CPU: responder %.0f%%, load generator %.0f%% (of one core; %d cores, load average %.1f)\n",
		rep.ResponderCPU*100, rep.ClientCPU*100, rep.Cores, rep.LoadAverage)
	target := "met"
	if rep.PerSecond < 20_000 || rep.P99ms > 5 {
		target = "NOT met"
	}
	fmt.Fprintf(stdout, "  target ≥ 20,000/s with p99 ≤ 5 ms: %s\n", target)
	return nil
}

func besideOrOnPath(flagged, name string) (string, error) {
	if flagged != "" {
		return flagged, nil
	}
	if self, err := os.Executable(); err == nil {
		if beside := filepath.Join(filepath.Dir(self), name); fileExists(beside) {
			return beside, nil
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", usageError{name + " binary not found beside signerctl or on PATH; build it (go build -o bin/ ./cmd/" + name + ")"}
	}
	return path, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

type ocspBenchFixture struct {
	caPEM string
	ca    *smx509.Certificate
	der   []byte
}

// benchSerial is the i-th serial of the fixture: 16 octets, as signerd's.
func benchSerial(i int) []byte {
	s := make([]byte, 16)
	s[0] = 0x40
	binary.BigEndian.PutUint64(s[8:], uint64(i))
	return s
}

// ocspFixture makes a software SM2 CA, has it sign one good response, and
// publishes it under n serials: the first through publish.PutOCSP, the
// others as hard links to it.
func ocspFixture(work, pub string, n int) (*ocspBenchFixture, error) {
	key, err := issuance.Throwaway(hsm.SM2)
	if err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench OCSP CA", Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign, SubjectKeyId: []byte{0xbe, 0x4c, 0x0c, 0x5b}}
	certDER, err := smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	ca, err := smx509.ParseCertificate(certDER)
	if err != nil {
		return nil, err
	}
	iss, err := issuance.NewIssuer(ca, key)
	if err != nil {
		return nil, err
	}
	tok, err := iss.PrepareOCSP(ocsp.Single{Serial: benchSerial(0), Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, now, ocsp.SHA1)
	if err != nil {
		return nil, err
	}
	out, err := iss.SignAndIssue(context.Background(), tok)
	if err != nil {
		return nil, err
	}
	caPEM := filepath.Join(work, "ca.pem")
	if err := os.WriteFile(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644); err != nil {
		return nil, err
	}
	d, err := publish.Open(pub, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := d.PutOCSP([]publish.OCSPResponse{{Issuer: iss.ID(), Serial: benchSerial(0), DER: out.DER}}); err != nil {
		return nil, err
	}
	// ext4 allows 65,000 links to a file: a fresh copy heads each group.
	const linksPerCopy = 60_000
	var head string
	for i := 1; i < n; i++ {
		name, _ := publish.OCSPName(iss.ID(), benchSerial(i))
		full := filepath.Join(pub, name)
		if i%linksPerCopy == 0 || head == "" {
			if i%linksPerCopy == 0 {
				if err := os.WriteFile(full, out.DER, 0o644); err != nil {
					return nil, fmt.Errorf("bench fixture: %w", err)
				}
				head = full
				continue
			}
			first, _ := publish.OCSPName(iss.ID(), benchSerial(0))
			head = filepath.Join(pub, first)
		}
		if err := os.Link(head, full); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("bench fixture: %w", err)
		}
	}
	return &ocspBenchFixture{caPEM: caPEM, ca: ca, der: out.DER}, nil
}

type benchResponder struct {
	cmd  *exec.Cmd
	addr string
}

func startOCSPResponder(bin, work, pub, caPEM string, cache, clients int) (*benchResponder, error) {
	cfg := filepath.Join(work, "ocsp-responder.yaml")
	text := fmt.Sprintf("listen: 127.0.0.1:0\nissuers: [%s]\nsource: {dir: %s}\nlimits: {cache_entries: %d, max_connections: %d}\n",
		caPEM, pub, cache, max(1024, 2*clients))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			go io.Copy(io.Discard, stderr)
			return &benchResponder{cmd: cmd, addr: line.Addr}, nil
		}
		fmt.Fprintln(os.Stderr, sc.Text())
	}
	cmd.Wait()
	return nil, errors.New("ocsp-responder did not start")
}

func (r *benchResponder) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.cmd.Wait()
}

type ocspBenchReport struct {
	Responses, CacheEntries, Clients, Cores int
	Seconds                                 float64
	Answers, Wrong                          int
	PerSecond, P50ms, P99ms, MaxMs          float64
	// CPU used over the run, in cores (1.0: one core busy throughout).
	ResponderCPU, ClientCPU float64
	LoadAverage             float64
}

// loadOCSP runs the clients: each its own keep-alive connection, GETting
// the RFC 5019 path of a uniformly random serial's request, checking each
// answer is the published response. The clients speak HTTP/1.1 on raw
// connections, a request written whole and its answer read by
// Content-Length: net/http's client would cost as much CPU as the
// responder, and the two share this machine.
func loadOCSP(r *benchResponder, fix *ocspBenchFixture, n, clients int, duration time.Duration) (*ocspBenchReport, error) {
	requests := make([][]byte, min(n, 200_000))
	for i := range requests {
		id, err := ocsp.CertIDFor(fix.ca, benchSerial(mrand.IntN(n)), ocsp.SHA1)
		if err != nil {
			return nil, err
		}
		der, err := ocsp.Request(id)
		if err != nil {
			return nil, err
		}
		path := "/" + url.PathEscape(base64.StdEncoding.EncodeToString(der))
		requests[i] = []byte("GET " + path + " HTTP/1.1\r\nHost: " + r.addr + "\r\n\r\n")
	}
	var stop sync.WaitGroup
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	wrong := 0
	start := make(chan struct{})
	var measureFrom, measureTo time.Time
	done := make(chan struct{})
	stop.Add(clients)
	for range clients {
		go func() {
			defer stop.Done()
			var lat []time.Duration
			bad := 0
			var err error
			defer func() {
				mu.Lock()
				all, wrong = append(all, lat...), wrong+bad
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}()
			conn, err := net.Dial("tcp", r.addr)
			if err != nil {
				return
			}
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 8192)
			body := make([]byte, 0, 4096)
			<-start
			for {
				select {
				case <-done:
					return
				default:
				}
				t0 := time.Now()
				if _, err = conn.Write(requests[mrand.IntN(len(requests))]); err != nil {
					return
				}
				var status, length int
				if status, length, err = readHead(br); err != nil {
					return
				}
				body = slices.Grow(body[:0], length)[:length]
				if _, err = io.ReadFull(br, body); err != nil {
					return
				}
				t1 := time.Now()
				if status != 200 || string(body) != string(fix.der) {
					bad++
					continue
				}
				if !t0.Before(measureFrom) && t1.Before(measureTo) {
					lat = append(lat, t1.Sub(t0))
				}
			}
		}()
	}
	measureFrom = time.Now().Add(time.Second)
	measureTo = measureFrom.Add(duration)
	close(start)
	time.Sleep(time.Until(measureFrom))
	rBefore, err := processCPU(r.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	sBefore, err := selfCPU()
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Until(measureTo))
	rAfter, _ := processCPU(r.cmd.Process.Pid)
	sAfter, _ := selfCPU()
	close(done)
	stop.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("a client: %w", firstErr)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no answer in the run (%d wrong)", wrong)
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
	secs := duration.Seconds()
	const ticksPerSecond = 100 // USER_HZ
	return &ocspBenchReport{Clients: clients, Cores: runtime.NumCPU(), Seconds: secs, Answers: len(all), Wrong: wrong,
		PerSecond: float64(len(all)) / secs, P50ms: pct(0.50), P99ms: pct(0.99), MaxMs: float64(all[len(all)-1]) / 1e6,
		ResponderCPU: float64(rAfter-rBefore) / ticksPerSecond / secs, ClientCPU: (sAfter - sBefore).Seconds() / secs}, nil
}

// readHead reads an HTTP/1.1 answer's status line and headers, returning
// its status and Content-Length.
func readHead(br *bufio.Reader) (status, length int, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, 0, fmt.Errorf("status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, 0, fmt.Errorf("status line %q", line)
	}
	length = -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, 0, fmt.Errorf("Content-Length %q", v)
			}
		}
	}
	if length < 0 || length > 1<<20 {
		return 0, 0, fmt.Errorf("answer %d without a usable Content-Length", status)
	}
	return status, length, nil
}
