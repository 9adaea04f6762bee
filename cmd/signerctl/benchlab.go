package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/engine/ceremony"
	"signerd/hsm"
	"signerd/store"
)

// benchLab is the bench's throwaway CA: a SoftHSM2 token folder of its own,
// a root and an issuing CA made by the same ceremonies an operator runs,
// and a store for signerd. All of it lives in one temporary folder.
type benchLab struct {
	dir    string
	module string
	token  hsm.TokenSpec
	store  string
}

const (
	benchIssuingKey = "issuing-bench"
	benchRootKey    = "root-bench"
)

// newBenchLab makes the folder and runs the ceremonies: a token whose PIN
// is split 2 of 2, an SM2 root, an issuing key and its certificate.
func newBenchLab(module string) (*benchLab, error) {
	dir, err := os.MkdirTemp("", "signerd-bench-")
	if err != nil {
		return nil, err
	}
	l := &benchLab{dir: dir, module: module, store: filepath.Join(dir, "signerd.db")}
	if err := l.ceremonies(); err != nil {
		l.remove()
		return nil, err
	}
	l.token = hsm.TokenSpec{Module: module, Token: "bench",
		PINShares: []string{l.path("pin-share-1.pem"), l.path("pin-share-2.pem")}}
	return l, nil
}

func (l *benchLab) path(name string) string { return filepath.Join(l.dir, name) }

func (l *benchLab) remove() { os.RemoveAll(l.dir) }

func (l *benchLab) ceremonies() error {
	if err := os.Mkdir(l.path("tokens"), 0o700); err != nil {
		return err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", l.path("tokens"))
	if err := os.WriteFile(l.path("softhsm2.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	// signerd inherits it; the module reads it when first loaded.
	os.Setenv("SOFTHSM2_CONF", l.path("softhsm2.conf"))
	soPIN := make([]byte, 12)
	rand.Read(soPIN)
	if err := os.WriteFile(l.path("so.pin"), fmt.Appendf(nil, "%x", soPIN), 0o600); err != nil {
		return err
	}
	start := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	head := "operator: signerctl bench\naudit_log: ceremonies.db\n"
	token := fmt.Sprintf("hsm: {module: %s, token: bench, pin_shares: [pin-share-1.pem, pin-share-2.pem]}\n", l.module)
	subject := func(cn string) string {
		return fmt.Sprintf("{country: CN, organization: signerd bench, common_name: %s}", cn)
	}
	files := []struct{ name, body string }{
		{"1-token.yaml", fmt.Sprintf("type: token-init\n%smodule: %s\nlabel: bench\nso_pin_file: so.pin\n"+
			"pin: {threshold: 2, custodians: [{name: A, share: pin-share-1.pem}, {name: B, share: pin-share-2.pem}]}\n", head, l.module)},
		{"2-root.yaml", fmt.Sprintf("type: root\n%s%skey: {label: %s}\ncertificate:\n  subject: %s\n  not_before: %s\n  not_after: %s\n  path_length: 1\n"+
			"outputs: {public_key: root.pub.pem, certificate: root.pem}\n", head, token, benchRootKey, subject("Bench Root"),
			day(start), day(start.AddDate(20, 0, 0)))},
		{"3-issuing-key.yaml", fmt.Sprintf("type: issuing-key\n%s%skey: {label: %s}\ncsr_subject: %s\n"+
			"outputs: {public_key: issuing.pub.pem, csr: issuing.csr.pem}\n", head, token, benchIssuingKey, subject("Bench Issuing CA"))},
		{"4-issuing-cert.yaml", fmt.Sprintf("type: issuing-cert\n%s%ssigning_key: %s\nissuer_certificate: root.pem\npublic_key: issuing.csr.pem\n"+
			"certificate:\n  subject: %s\n  not_before: %s\n  not_after: %s\n  path_length: 0\noutputs: {certificate: issuing.pem}\n",
			head, token, benchRootKey, subject("Bench Issuing CA"), day(start), day(start.AddDate(10, 0, 0)))},
	}
	for _, f := range files {
		if err := os.WriteFile(l.path(f.name), []byte(f.body), 0o600); err != nil {
			return err
		}
		c, err := ceremony.Load(l.path(f.name))
		if err == nil {
			err = c.Run(ceremony.Options{Out: io.Discard})
		}
		if err != nil {
			return fmt.Errorf("bench CA: %w", err)
		}
	}
	return nil
}

func day(t time.Time) string { return t.Format(time.RFC3339) }

// ceiling is the HSM's own speed: SM2 signatures per second on the issuing
// key straight through the hsm package (software re-verification
// included, as signerd does it), from as many workers as sessions.
func (l *benchLab) ceiling(sessions int, d time.Duration) (float64, error) {
	m, err := l.token.Open(sessions)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	key, err := m.FindKey(context.Background(), benchIssuingKey)
	if err != nil {
		return 0, err
	}
	signer, err := key.SM2Signer(nil)
	if err != nil {
		return 0, err
	}
	e := signer.Digest([]byte("a to-be-signed certificate"))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		total   int
		signErr error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range sessions {
		wg.Go(func() {
			n := 0
			for time.Now().Before(deadline) {
				if _, err := signer.SignDigest(context.Background(), e); err != nil {
					mu.Lock()
					signErr = err
					mu.Unlock()
					return
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if signErr != nil {
		return 0, fmt.Errorf("HSM ceiling: %w", signErr)
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// prefill writes n certificate records into the store, as if signerd had
// issued them, revoked of them revoked (spread evenly), so issuance and
// CRLs can be measured on a grown store. The records are synthetic: unique
// random serials with their serial and request records, as issuance
// writes them, around one certificate's DER signed by a software key
// (realistic sizes, no signature by this CA). The serials are drawn first
// and written in order, so each transaction appends to the trees and the
// fill leaves the file as compact as years of small batches would, not
// strewn with the free pages of rewriting the same pages over and over.
func (l *benchLab) prefill(n, revoked int, progress io.Writer) error {
	der, err := sampleCertificate()
	if err != nil {
		return err
	}
	iss, err := os.ReadFile(l.path("issuing.pem"))
	if err != nil {
		return err
	}
	issCert, err := smx509.ParseCertificatePEM(iss)
	if err != nil {
		return err
	}
	issuer := fmt.Sprintf("%x", issCert.SubjectKeyId)
	serials := make([][16]byte, n)
	for i := range serials {
		rand.Read(serials[i][:])
		serials[i][0] = serials[i][0]&0x7f | 0x01
	}
	slices.SortFunc(serials, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	stride := n + 1
	if revoked > 0 {
		stride = n / revoked
	}
	st, err := store.Open(l.store)
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now().UTC()
	const perTx = 20000
	listed := 0
	for done := 0; done < n; done += perTx {
		err := st.Update(func(tx *store.Tx) error {
			for i := done; i < min(done+perTx, n); i++ {
				serial := serials[i][:]
				id := fmt.Sprintf("prefill-%09d", i)
				c := &store.Certificate{Serial: serial, DER: der, Profile: "person-sign", Subject: "CN=prefill,C=CN",
					NotBefore: now, NotAfter: now.AddDate(1, 0, 0), Issuer: issuer, RequestID: id, Status: store.StatusGood}
				if i%stride == 0 && listed < revoked {
					c.Status, c.RevokedAt, c.Reason = store.StatusRevoked, now, 1
					listed++
				}
				if err := tx.ReserveSerial(serial, id); err != nil {
					return err
				}
				if err := tx.SetSerialState(serial, store.SerialIssued); err != nil {
					return err
				}
				if err := tx.PutRequest(&store.Request{ID: id, Digest: serial, Kind: "issue", Profile: c.Profile,
					Created: now, Updated: now, State: store.RequestIssued, Serial: serial, TBS: der}); err != nil {
					return err
				}
				if err := tx.PutCertificate(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("prefill: %w", err)
		}
		if (done/perTx)%10 == 9 {
			fmt.Fprintf(progress, "bench: prefilled %d of %d\n", min(done+perTx, n), n)
		}
	}
	return nil
}

// sampleCertificate is a person-sign-sized certificate from a software
// key, the body of every prefilled record.
func sampleCertificate() ([]byte, error) {
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &smx509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "prefill", Country: []string{"CN"}},
		NotBefore: time.Now(), NotAfter: time.Now().AddDate(1, 0, 0), KeyUsage: smx509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []smx509.ExtKeyUsage{smx509.ExtKeyUsageClientAuth, smx509.ExtKeyUsageEmailProtection},
		CRLDistributionPoints: []string{"http://crl.example.gov.cn/issuing.crl"}}
	return smx509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// benchDaemon is signerd running as a subprocess on the lab's token and
// store, with fsync on (bbolt's default; signerd has no switch to turn it
// off).
type benchDaemon struct {
	cmd    *exec.Cmd
	socket string
	log    *bytes.Buffer
	exited chan error
	done   chan struct{} // closed when signerd has exited
	ready  time.Duration // from exec to READY=1

	mu       sync.Mutex
	anonPeak int // kB
}

// startSignerd writes a config with this batch size and starts signerd,
// returning when it has told the notify socket READY=1.
func (l *benchLab) startSignerd(bin string, sessions, batch int, cpuProfile string) (*benchDaemon, error) {
	sock := l.path("signerd.sock")
	uid := os.Getuid()
	cfg := fmt.Sprintf("hsm: {module: %s, token: bench, pin_shares: [%s], sessions: %d}\n"+
		"issuers: [{key: %s, certificate: %s}]\nstore: %s\nsocket: {path: %s}\nqueue: {batch: %d}\n"+
		"roles: {ra: {uids: [%d]}, operator: {uids: [%d]}}\n",
		l.module, strings.Join(l.token.PINShares, ", "), sessions, benchIssuingKey, l.path("issuing.pem"), l.store, sock, batch, uid, uid)
	config := l.path("signerd.yaml")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	notifyPath := l.path("notify.sock")
	os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	defer notify.Close()
	args := []string{"--config", config}
	if cpuProfile != "" {
		args = append(args, "--cpu-profile", cpuProfile)
	}
	d := &benchDaemon{socket: sock, log: new(bytes.Buffer), exited: make(chan error, 1), done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start signerd: %w", err)
	}
	go func() {
		err := d.cmd.Wait()
		close(d.done)
		d.exited <- err
	}()
	go d.memory()
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("signerd notify socket: %w", err)
		}
		d.ready = time.Since(start)
	case err := <-d.exited:
		return nil, fmt.Errorf("signerd exited at start (%v):\n%s", err, d.log)
	case <-time.After(60 * time.Second):
		d.stop()
		return nil, fmt.Errorf("signerd not ready after 60s:\n%s", d.log)
	}
	return d, nil
}

// memory samples signerd's resident set every 50 ms until it exits,
// keeping the peak of its anonymous part (heap, stacks, the module's own
// memory). The kernel keeps the peak of the whole (VmHWM) itself; that
// whole also counts the pages of the store file bbolt has mapped and
// touched, which are page cache and grow with the store.
func (d *benchDaemon) memory() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-tick.C:
			if st, err := d.status(); err == nil {
				d.mu.Lock()
				d.anonPeak = max(d.anonPeak, st["RssAnon"])
				d.mu.Unlock()
			}
		}
	}
}

// peakRSS is signerd's peak resident set so far (VmHWM) and the peak of
// its anonymous part, in MiB.
func (d *benchDaemon) peakRSS() (total, anon float64, err error) {
	st, err := d.status()
	if err != nil {
		return 0, 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.anonPeak = max(d.anonPeak, st["RssAnon"])
	return float64(st["VmHWM"]) / 1024, float64(d.anonPeak) / 1024, nil
}

// status reads the kB fields of /proc/PID/status.
func (d *benchDaemon) status() (map[string]int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for line := range strings.Lines(string(raw)) {
		name, value, ok := strings.Cut(line, ":")
		if v, isKB := strings.CutSuffix(strings.TrimSpace(value), " kB"); ok && isKB {
			if n, err := strconv.Atoi(v); err == nil {
				out[name] = n
			}
		}
	}
	if _, ok := out["VmHWM"]; !ok {
		return nil, errors.New("no VmHWM in /proc status")
	}
	return out, nil
}

// stop sends SIGTERM and waits for signerd to drain and exit.
func (d *benchDaemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			return fmt.Errorf("signerd: %v\n%s", err, d.log)
		}
		return nil
	case <-time.After(2 * time.Minute):
		d.cmd.Process.Kill()
		return fmt.Errorf("signerd did not stop in 2 minutes:\n%s", d.log)
	}
}

// client is one RA connection to signerd.
func (d *benchDaemon) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
		},
		MaxConnsPerHost: 1,
	}}
}

// signCRL has signerd sign a full CRL and returns its entries and how long
// the request took.
func (d *benchDaemon) signCRL() (int, time.Duration, error) {
	start := time.Now()
	resp, err := d.client().Post("http://signerd/v1/crl", "", nil)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct{ Code, Message string }
		json.Unmarshal(der, &e)
		return 0, 0, fmt.Errorf("sign CRL: HTTP %d %s: %s", resp.StatusCode, e.Code, e.Message)
	}
	crl, err := smx509.ParseRevocationList(der)
	if err != nil {
		return 0, 0, fmt.Errorf("sign CRL: %w", err)
	}
	return len(crl.RevokedCertificateEntries), took, nil
}
