package main

import (
	"bytes"
	"cmp"
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

	"github.com/jackc/pgx/v5"

	"signerd/api"
	"signerd/ceremony"
	"signerd/hsm"
	"signerd/revocation"
	"signerd/store"
	"signerd/store/pglocal"
)

// benchLab is the bench's throwaway CA: a SoftHSM2 token folder of its own,
// a root and an issuing CA made by the same ceremonies an operator runs,
// and the stores signerd runs on: a bbolt file, and a database on a local
// PostgreSQL server started for the run. All of it lives in one temporary
// folder.
type benchLab struct {
	dir    string
	module string
	token  hsm.TokenSpec
	bolt   string          // the bbolt store's file
	pg     *pglocal.Server // nil until startPostgres
	pgDSN  string          // the PostgreSQL store's database
	crl    benchCRL        // the issuer's CRL layout and schedule
	// signerdEnv is added to every signerd's environment (-signerd-env):
	// GOGC or GOMEMLIMIT for signerd alone, not for the bench.
	signerdEnv []string
	// signerdLog, if set, is a file every signerd's output is appended
	// to (-signerd-log), e.g. its GODEBUG=gctrace=1 lines.
	signerdLog string
}

// The stores a bench measures, by the names -store and the report use.
const (
	storeBolt     = "bolt"
	storePostgres = "postgres"
)

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
	l := &benchLab{dir: dir, module: module, bolt: filepath.Join(dir, "signerd.db")}
	if err := l.ceremonies(); err != nil {
		l.remove()
		return nil, err
	}
	l.token = hsm.TokenSpec{Module: module, Token: "bench",
		PINShares: []string{l.path("pin-share-1.pem"), l.path("pin-share-2.pem")}}
	return l, nil
}

func (l *benchLab) path(name string) string { return filepath.Join(l.dir, name) }

// remove stops the PostgreSQL server, if one was started, and removes the
// folder.
func (l *benchLab) remove() error {
	var err error
	if l.pg != nil {
		err = l.pg.Remove()
	}
	return errors.Join(err, os.RemoveAll(l.dir))
}

func (l *benchLab) ceremonies() error {
	if err := os.Mkdir(l.path("tokens"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(l.path("softhsm2.conf"), []byte(softHSMConf(l.path("tokens"))), 0o600); err != nil {
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

// softHSMConf is a SoftHSM2 configuration with its tokens in dir.
func softHSMConf(dir string) string {
	return fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", dir)
}

func day(t time.Time) string { return t.Format(time.RFC3339) }

// ceiling is the HSM's own speed: SM2 signatures per second on the issuing
// key straight through the hsm package (software re-verification
// included, as signerd does it), from as many workers as sessions, and
// the CPU time this process spent per signature meanwhile, in ms
// (SoftHSM2 signs in the process, so that is the HSM's CPU per signature
// with its verification; the bench does nothing else during the run).
func (l *benchLab) ceiling(sessions int, d time.Duration) (perS, cpuMS float64, err error) {
	m, err := l.token.Open(sessions)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	key, err := m.FindKey(context.Background(), benchIssuingKey)
	if err != nil {
		return 0, 0, err
	}
	signer, err := key.SM2Signer(nil)
	if err != nil {
		return 0, 0, err
	}
	cpuBefore, err := selfCPU()
	if err != nil {
		return 0, 0, err
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
	elapsed := time.Since(start)
	cpuAfter, err := selfCPU()
	switch {
	case err != nil:
		return 0, 0, err
	case signErr != nil:
		return 0, 0, fmt.Errorf("HSM ceiling: %w", signErr)
	case total == 0:
		return 0, 0, errors.New("HSM ceiling: no signature made")
	}
	return float64(total) / elapsed.Seconds(), ms(cpuAfter-cpuBefore) / float64(total), nil
}

// selfCPU is the user and system CPU time this process has used, to the
// microsecond (getrusage), not the clock ticks of /proc/PID/stat: the
// ceiling's CPU is divided by thousands of signatures, not by one run.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("bench CPU time: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// prefillSet is what a prefill writes: n certificate records, as if
// signerd had issued them, revoked of them revoked (spread evenly), so
// issuance and CRLs can be measured on a grown store. Every store of a run
// gets the same records. They are synthetic: unique random serials with
// their serial and request records, as issuance writes them, around one
// certificate's DER signed by a software key (realistic sizes, no
// signature by this CA). The serials are drawn first and written in
// order, so each transaction appends to the trees and the fill leaves a
// bbolt file as compact as years of small batches would, not strewn with
// the free pages of rewriting the same pages over and over.
type prefillSet struct {
	// markOCSP: each certificate's OCSP response is made due at the
	// prefill's time, and the store records the engine's one-time marking
	// of older certificates as done, so that signerd starts on a full
	// refresh with nothing left to mark.
	markOCSP bool
	der      []byte
	issuer   string
	serials  [][16]byte
	revoked  int
	now      time.Time
	crl      benchCRL
}

func (l *benchLab) newPrefill(n, revoked int, crl benchCRL) (*prefillSet, error) {
	der, err := sampleCertificate()
	if err != nil {
		return nil, err
	}
	iss, err := os.ReadFile(l.path("issuing.pem"))
	if err != nil {
		return nil, err
	}
	issCert, err := smx509.ParseCertificatePEM(iss)
	if err != nil {
		return nil, err
	}
	p := &prefillSet{der: der, issuer: fmt.Sprintf("%x", issCert.SubjectKeyId), serials: make([][16]byte, n),
		// To the second, as signerd stamps what it signs: a later
		// fraction would read as the last signing time, ahead of a clock
		// signerd reads (truncated) within the same second, and signerd
		// would refuse to sign as if the clock had gone back.
		revoked: revoked, now: time.Now().UTC().Truncate(time.Second), crl: crl}
	for i := range p.serials {
		// issuance.NewSerial's shape: 16 octets, the first 0x01 to 0x7f
		// (redrawn when zero), so the serials spread over the CRL shards
		// as issued ones do; each shard is a range of the first two.
		for p.serials[i][0] == 0 {
			rand.Read(p.serials[i][:])
			p.serials[i][0] &= 0x7f
		}
	}
	slices.SortFunc(p.serials, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	return p, nil
}

// prefillReasons are the CRLReasons of the prefilled revocations, in turn:
// one in ten keyCompromise, the rest unspecified, superseded and
// cessationOfOperation, the reasons a CA mostly records. Every prefilled
// certificate certifies the same key, so their keyCompromise revocations
// all name one compromised key, and signerd reads the certificate of each
// at every start (the engine's loadRevocations): with every revocation a
// keyCompromise, a 100,000-entry store takes seconds to start on bbolt,
// and longer than a transaction may take on PostgreSQL.
var prefillReasons = []revocation.Reason{revocation.KeyCompromise, revocation.Unspecified, revocation.Unspecified, revocation.Unspecified,
	revocation.Unspecified, revocation.Superseded, revocation.Superseded, revocation.Superseded, revocation.CessationOfOperation, revocation.CessationOfOperation}

// prefillPerTx is how many certificates one prefill transaction writes:
// large transactions make the fill fast on both engines (one fsync each;
// on PostgreSQL, multi-row statements at commit).
const prefillPerTx = 20000

// write writes the set into st through the store's own API, in large
// transactions.
func (p *prefillSet) write(st *store.Store, name string, progress io.Writer) error {
	n := len(p.serials)
	stride := n + 1
	if p.revoked > 0 {
		stride = n / p.revoked
	}
	listed := 0
	for done := 0; done < n; done += prefillPerTx {
		err := st.Update(func(tx *store.Tx) error {
			if done == 0 && p.crl.partitioned() {
				// As signerd records it with the first certificate it
				// issues: the certificates name their shard's URL.
				if err := tx.PutCRLLayout(p.issuer, p.crl.layout()); err != nil {
					return err
				}
			}
			for i := done; i < min(done+prefillPerTx, n); i++ {
				serial := p.serials[i][:]
				id := fmt.Sprintf("prefill-%09d", i)
				c := &store.Certificate{Serial: serial, DER: p.der, Profile: "person-sign", Subject: "CN=prefill,C=CN",
					NotBefore: p.now, NotAfter: p.now.AddDate(1, 0, 0), Issuer: p.issuer, RequestID: id, Status: store.StatusGood}
				if i%stride == 0 && listed < p.revoked {
					c.Status, c.RevokedAt, c.Reason = store.StatusRevoked, p.now, prefillReasons[listed%len(prefillReasons)]
					listed++
				}
				if err := tx.ReserveSerial(serial, id); err != nil {
					return err
				}
				if err := tx.SetSerialState(serial, store.SerialIssued); err != nil {
					return err
				}
				if err := tx.PutRequest(&store.Request{ID: id, Digest: serial, Kind: "issue", Profile: c.Profile,
					Created: p.now, Updated: p.now, State: store.RequestIssued, Serial: serial, TBS: p.der}); err != nil {
					return err
				}
				if err := tx.PutCertificate(c); err != nil {
					return err
				}
				if p.markOCSP {
					if err := tx.MarkOCSPDue(p.issuer, serial, p.now); err != nil {
						return err
					}
				}
			}
			if p.markOCSP && done+prefillPerTx >= n {
				return tx.PutOCSPBackfill(nil, true)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("prefill %s store: %w", name, err)
		}
		if (done/prefillPerTx)%10 == 9 {
			fmt.Fprintf(progress, "bench: %s: prefilled %d of %d\n", name, min(done+prefillPerTx, n), n)
		}
	}
	return p.pruneChanges(st, name)
}

// pruneChanges empties the change log the prefill's revocations wrote
// into: a store that has run for years holds only the changes since its
// shards' latest complete CRLs (each CRL prunes what every shard lists),
// not one record per revocation ever made. Left in, they would have each
// CRL the bench measures delete its share of a million records.
func (p *prefillSet) pruneChanges(st *store.Store, name string) error {
	for {
		pruned := 0
		err := st.Update(func(tx *store.Tx) error {
			seq, err := tx.CRLChangeSeq()
			if err != nil {
				return err
			}
			pruned, err = tx.PruneCRLChanges(p.issuer, seq, prefillPerTx)
			return err
		})
		if err != nil {
			return fmt.Errorf("prefill %s store: %w", name, err)
		}
		if pruned == 0 {
			return nil
		}
	}
}

// openStore opens the named store for the bench itself (the prefill),
// while no signerd runs on it.
func (l *benchLab) openStore(name string) (*store.Store, error) {
	if name == storePostgres {
		// A prefill transaction of prefillPerTx certificates takes longer
		// than signerd's batches are allowed to.
		return store.OpenPostgres(l.pgDSN, store.PostgresOptions{Timeout: 10 * time.Minute})
	}
	return store.Open(l.bolt)
}

// benchPostgresSettings size the local server for a benchmark on this
// machine, with durability as in production: fsync and synchronous_commit
// on (each commit waits for its WAL to reach the disk), full page writes.
// max_wal_size only spaces checkpoints: a million-certificate prefill
// writes gigabytes of WAL, and a checkpoint every gigabyte would be most
// of its time; it changes nothing a commit promises.
var benchPostgresSettings = []pglocal.Setting{
	{Name: "shared_buffers", Value: "256MB"},
	{Name: "fsync", Value: "on"},
	{Name: "synchronous_commit", Value: "on"},
	{Name: "full_page_writes", Value: "on"},
	{Name: "max_wal_size", Value: "4GB"},
}

// benchPostgresShown are the settings the bench reports, as the server
// reports them.
var benchPostgresShown = []string{"shared_buffers", "fsync", "synchronous_commit", "full_page_writes",
	"wal_level", "wal_sync_method", "max_wal_size", "checkpoint_timeout", "max_connections"}

// benchDatabase is the PostgreSQL store's database.
const benchDatabase = "signerd"

// startPostgres starts a PostgreSQL server in the lab folder and creates
// the store's database with signerd's schema. With statements, the
// server loads pg_stat_statements, so the bench can count the statements
// signerd sends.
func (l *benchLab) startPostgres(statements bool) (*pgReport, error) {
	settings := benchPostgresSettings
	if statements {
		settings = append(slices.Clip(settings), pglocal.Setting{Name: "shared_preload_libraries", Value: "'pg_stat_statements'"})
	}
	pg, err := pglocal.Start(l.dir, settings...)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL for the bench: %w", err)
	}
	l.pg = pg
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if l.pgDSN, err = pg.CreateDatabase(ctx, benchDatabase); err != nil {
		return nil, fmt.Errorf("PostgreSQL for the bench: %w", err)
	}
	if statements {
		if err := pg.Exec(ctx, benchDatabase, "CREATE EXTENSION pg_stat_statements"); err != nil {
			return nil, fmt.Errorf("PostgreSQL for the bench: %w", err)
		}
	}
	if _, err := store.UpgradePostgres(ctx, l.pgDSN); err != nil {
		return nil, fmt.Errorf("PostgreSQL for the bench: %w", err)
	}
	conn, err := pgx.Connect(ctx, l.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL for the bench: %w", err)
	}
	defer conn.Close(context.Background())
	r := &pgReport{Settings: map[string]string{}}
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&r.Version); err != nil {
		return nil, fmt.Errorf("PostgreSQL for the bench: version: %w", err)
	}
	for _, name := range benchPostgresShown {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return nil, fmt.Errorf("PostgreSQL for the bench: setting %s: %w", name, err)
		}
		r.Settings[name] = v
	}
	return r, nil
}

// pgStatement is one statement's share of a run, from pg_stat_statements.
type pgStatement struct {
	Query   string  `json:"query"`
	Calls   int64   `json:"calls"`
	TotalMS float64 `json:"total_ms"`
	Rows    int64   `json:"rows"`
}

// resetStatements empties pg_stat_statements, so the next read counts one
// run.
func (l *benchLab) resetStatements() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.pg.Exec(ctx, benchDatabase, "SELECT pg_stat_statements_reset()"); err != nil {
		return fmt.Errorf("reset pg_stat_statements: %w", err)
	}
	return nil
}

// statements is what the store's database ran since resetStatements,
// most called first (the bench's own reset and read are left out).
func (l *benchLab) statements() ([]pgStatement, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, l.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT query, calls, total_exec_time, rows FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC, total_exec_time DESC`)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pgStatement, error) {
		var s pgStatement
		err := row.Scan(&s.Query, &s.Calls, &s.TotalMS, &s.Rows)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	return out, nil
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
// one of its stores, with every commit durable (bbolt fsyncs each one and
// signerd has no switch to turn that off; the bench's PostgreSQL runs with
// fsync and synchronous_commit on).
type benchDaemon struct {
	cmd    *exec.Cmd
	socket string
	log    *bytes.Buffer
	exited chan error
	done   chan struct{} // closed when signerd has exited
	ready  time.Duration // from exec to READY=1

	mu       sync.Mutex
	anonPeak int // kB
	// phasePeak is the peak of RssAnon since the last anonPhase.
	phasePeak int // kB
}

// storeConfig is the store: line of signerd's config for the named store.
func (l *benchLab) storeConfig(name string) (string, error) {
	switch name {
	case storeBolt:
		return "store: " + l.bolt, nil
	case storePostgres:
		// JSON's string is a YAML double-quoted scalar.
		dsn, err := json.Marshal(l.pgDSN)
		return fmt.Sprintf("store: {postgres: {dsn: %s}}", dsn), err
	}
	return "", fmt.Errorf("no store %q", name)
}

// daemonSpec is one signerd the bench starts: on which store, as which
// node, with which HSM.
type daemonSpec struct {
	store string // storeBolt or storePostgres
	// node is the signerd's node name on the PostgreSQL store; "" for a
	// signerd alone on its store.
	node string
	// softHSMConf names the node's own token folder (nodeToken); "" for
	// the lab's token.
	softHSMConf     string
	sessions, batch int
	cpuProfile      string
	// extra is more of signerd's config, appended as it is; without it,
	// OCSP pre-signing is off: the issuance runs measure issuance, which
	// the OCSP responses of each certificate issued would compete with
	// for the HSM.
	extra string
}

// id names the daemon's socket, config, marker and audit key: the store's
// name, or with a node the node's.
func (s daemonSpec) id() string {
	if s.node != "" {
		return "node-" + s.node
	}
	return s.store
}

// startSignerd writes a config with this store and batch size and starts
// signerd, returning when it has told the notify socket READY=1. Each
// store and each node has a socket, an audit key and a config of its own,
// so signerd can run on each at once: the audit anchor the HSM keeps is
// the audit key's, and each store's (or node's) audit chain needs its own.
func (l *benchLab) startSignerd(bin string, spec daemonSpec) (*benchDaemon, error) {
	id := spec.id()
	sock := l.path("signerd-" + id + ".sock")
	uid := os.Getuid()
	storeLine, err := l.storeConfig(spec.store)
	if err != nil {
		return nil, err
	}
	node := ""
	if spec.node != "" {
		node = "node: " + spec.node + "\n"
	}
	cfg := fmt.Sprintf("%shsm: {module: %s, token: bench, pin_shares: [%s], sessions: %d, pin_refused_marker: %s}\n"+
		"issuers: [{key: %s, certificate: %s%s}]\n%s\n%saudit: {key: bench-audit-%s}\nsocket: {path: %s}\nqueue: {batch: %d}\n"+
		"roles: {ra: {uids: [%d]}, operator: {uids: [%d]}}\n%s",
		node, l.module, strings.Join(l.token.PINShares, ", "), spec.sessions, l.path("pin-refused-"+id),
		benchIssuingKey, l.path("issuing.pem"), l.crl.issuerConfig(), storeLine, l.crl.scheduleConfig(), id, sock, spec.batch, uid, uid,
		cmp.Or(spec.extra, "ocsp: {validity: 0s}\n"))
	config := l.path("signerd-" + id + ".yaml")
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
	if spec.cpuProfile != "" {
		args = append(args, "--cpu-profile", spec.cpuProfile)
	}
	d := &benchDaemon{socket: sock, log: new(bytes.Buffer), exited: make(chan error, 1), done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+notifyPath), l.signerdEnv...)
	if spec.softHSMConf != "" {
		// The later of two settings of a variable is the one exec passes.
		d.cmd.Env = append(d.cmd.Env, "SOFTHSM2_CONF="+spec.softHSMConf)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if l.signerdLog != "" {
		f, err := os.OpenFile(l.signerdLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("signerd log: %w", err)
		}
		defer f.Close() // signerd holds its own descriptor
		fmt.Fprintf(f, "== signerd %s, batch %d, %s\n", id, spec.batch, time.Now().Format(time.RFC3339Nano))
		d.cmd.Stdout, d.cmd.Stderr = f, f
	}
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
				d.phasePeak = max(d.phasePeak, st["RssAnon"])
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

// anonPhase is the peak of signerd's anonymous memory since the last
// call (or its start), in MiB, so a report can say which part of a run
// took it.
func (d *benchDaemon) anonPhase() float64 {
	st, err := d.status()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.phasePeak = max(d.phasePeak, st["RssAnon"])
	}
	peak := d.phasePeak
	d.phasePeak = 0
	return float64(peak) / 1024
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

// processCPU is the CPU time pid and its descendants have used, in the
// kernel's clock ticks (/proc/PID/stat): its own, that of its children
// that have exited and been waited for, and that of its live children
// (a server's backends), whose own children are counted the same way.
func processCPU(pid int) (ticks int64, err error) {
	own, err := procTicks(pid)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, err := procParent(child); err == nil && ppid == pid {
			if t, err := processCPU(child); err == nil { // it may have exited meanwhile
				own += t
			}
		}
	}
	return own, nil
}

// procStatFields are the fields of /proc/PID/stat after the command name,
// which may hold spaces and parentheses: the first is field 3, the state.
func procStatFields(pid int) ([]string, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(raw[end+1:]))
	if len(fields) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return fields, nil
}

func procParent(pid int) (int, error) {
	fields, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(fields[1])
}

// procTicks is utime + stime + cutime + cstime (fields 14 to 17).
func procTicks(pid int) (int64, error) {
	fields, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, f := range fields[11:15] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		sum += n
	}
	return sum, nil
}

// cpu is the CPU ticks used so far by signerd and, on the postgres store,
// by the PostgreSQL server.
func (l *benchLab) cpu(d *benchDaemon, storeName string) ([2]int64, error) {
	var out [2]int64
	var err error
	if out[0], err = processCPU(d.cmd.Process.Pid); err != nil {
		return out, fmt.Errorf("signerd CPU time: %w", err)
	}
	if storeName == storePostgres {
		if out[1], err = processCPU(l.pg.PID()); err != nil {
			return out, fmt.Errorf("PostgreSQL CPU time: %w", err)
		}
	}
	return out, nil
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture signerd builds for.
const clockTick = 10 * time.Millisecond

// batches is how many batches signerd has signed so far and how many
// requests they held, from its metrics.
func (d *benchDaemon) batches() (count, requests float64, err error) {
	resp, err := d.client().Get("http://signerd" + api.RouteMetrics.Path)
	if err != nil {
		return 0, 0, fmt.Errorf("signerd metrics: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, fmt.Errorf("signerd metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("signerd metrics: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	found := 0
	for line := range strings.Lines(string(raw)) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		var into *float64
		switch {
		case !ok:
			continue
		case name == "signerd_batch_size_count":
			into = &count
		case name == "signerd_batch_size_sum":
			into = &requests
		default:
			continue
		}
		if *into, err = strconv.ParseFloat(value, 64); err != nil {
			return 0, 0, fmt.Errorf("signerd metrics: %s: %w", name, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("signerd metrics: no signerd_batch_size histogram")
	}
	return count, requests, nil
}
