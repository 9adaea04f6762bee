// Command signerd is the CA's signing daemon: it holds the HSM session,
// runs the issuance engine, and serves RA software, operators and auditors
// over one local Unix socket (HTTP/1.1 + JSON; no network listener).
//
//	signerd --config /etc/signerd/signerd.yaml
package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/activation"
	sd "github.com/coreos/go-systemd/v22/daemon"

	"signerd/engine"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/publish"
	"signerd/store"
)

// Exit statuses. systemd/signerd.service restarts signerd on failure,
// except after exitPINRefused (RestartPreventExitStatus=): a token locks
// its user PIN after a few wrong tries, so a refused PIN is presented once
// and an operator fixes it. Socket activation starts signerd regardless of
// Restart=, so a refusal also leaves a marker (pinmarker.go) that keeps
// every later start from reading or presenting the PIN.
const (
	exitFailure = 1 // start-up failed or serving stopped: restarting may help
	exitUsage   = 2 // bad command line
	// exitPINRefused: the token refused the user PIN (wrong, locked,
	// expired) or the PIN could not be read (missing, a mode beyond 0600,
	// another uid's file), at start-up or when restoring a lost login; or
	// such a refusal is recorded (hsm.pin_refused_marker) and the HSM was
	// not opened.
	exitPINRefused = 3
)

func main() {
	fs := flag.NewFlagSet("signerd", flag.ContinueOnError)
	configPath := fs.String("config", "/etc/signerd/signerd.yaml", "configuration `file`")
	ack := fs.String("acknowledge-audit-break", "", "start although the audit log fails its check; the `statement` (who, why) is audited")
	ackClock := fs.String("acknowledge-clock-reset", "", "start although the clock reads before the last signing time, lowering the guard to it; the `statement` (who, why) is audited")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile (go tool pprof) from start to stop into `file`")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitUsage)
	}
	tuneGC()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	// An acknowledgement is recorded as the operator's statement: one
	// that says nothing is no acknowledgement.
	for _, name := range []string{"acknowledge-audit-break", "acknowledge-clock-reset"} {
		if f := fs.Lookup(name); f != nil && f.Value.String() != "" {
			if why := statementFault(f.Value.String()); why != "" {
				log.Error("refusing to start: --" + name + " needs a statement of who acknowledges and why: " + why)
				os.Exit(exitUsage)
			}
		}
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		log.Error("refusing to start", "err", err)
		os.Exit(exitFailure)
	}
	acks := acknowledgements{auditBreak: *ack, clockReset: *ackClock}
	if cfg.Debug {
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			log.Error("refusing to start", "err", err)
			os.Exit(exitFailure)
		}
		defer stop()
	}
	marker := cfg.HSM.PINRefusedMarker
	refused, says, err := pinRefusedEarlier(marker)
	if err == nil && !refused {
		err = checkMarkerFolder(marker)
	}
	if err != nil {
		log.Error("refusing to start", "err", err)
		os.Exit(exitFailure)
	}
	if refused {
		log.Error("refusing to start: a PIN refusal is recorded, and signerd does not present the PIN "+
			"again until an operator removes the record; the HSM was not opened",
			"marker", marker, "recorded", says, "to_start_again", markerRemedy(marker), "exit_status", exitPINRefused)
		notify("STATUS=PIN refused earlier (" + marker + "); fix the PIN, then rm " + marker)
		os.Exit(exitPINRefused)
	}
	if err := run(cfg, acks, log); err != nil {
		if hsm.PINRefused(err) {
			if merr := recordPINRefused(marker, time.Now(), err); merr != nil {
				log.Error("the PIN refusal could not be recorded: a new start (socket activation) would present "+
					"the PIN again; stop signerd.socket", "err", merr)
			}
			log.Error("signerd stopped: the HSM refused the PIN or it could not be read; "+
				"not restarting, so the PIN is not tried again", "err", err, "exit_status", exitPINRefused,
				"marker", marker, "to_start_again", markerRemedy(marker))
			notify("STATUS=HSM refused the PIN; fix it, then rm " + marker)
			os.Exit(exitPINRefused)
		}
		if errors.Is(err, engine.ErrAuditBroken) {
			restore := "restore a copy of the store that passes this check " +
				"(signerctl store verify FILE shows a copy's audit head and last seal)"
			if cfg.Store.Postgres != nil {
				restore = "restore the database from its base backup and replay the WAL archive to its end " +
					"(README, Backup and restore (PostgreSQL)), which brings back what was written after the base backup"
			}
			log.Error("signerd stopped", "err", err, "to_start", restore+", or, to serve from this store as it is, "+
				`start signerd once with --acknowledge-audit-break "who, why": the statement is audited and sealed`)
			os.Exit(exitFailure)
		}
		log.Error("signerd stopped", "err", err)
		os.Exit(exitFailure)
	}
}

// startCPUProfile profiles the daemon into a new file until stop is called
// (signerctl bench --cpu-profile); it has no network face.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// acknowledgements are an operator's statements on the command line,
// which let this one start past a check that would refuse it; they are
// not configuration, and are audited with what they acknowledge.
type acknowledgements struct {
	auditBreak string // --acknowledge-audit-break
	clockReset string // --acknowledge-clock-reset
}

// daemon is a started signerd: everything run opened, in the order to
// close it.
type daemon struct {
	metrics *metrics
	module  *hsm.Module
	store   *store.Store
	engine  *engine.Engine
	// published is the publication directory (nil: none), locked while
	// signerd runs.
	published *publish.Dir
	// refusals records the refusals of the API and of the engine,
	// tallied (refusals.go).
	refusals *refusalLog
}

func (d *daemon) close() {
	if d.refusals != nil {
		d.refusals.Close() // before the engine: it writes through it
	}
	if d.engine != nil {
		d.engine.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
	if d.published != nil {
		d.published.Close()
	}
	if d.module != nil {
		d.module.Close()
	}
}

// run starts signerd, serves until SIGTERM or SIGINT, then drains.
func run(cfg *config, acks acknowledgements, log *slog.Logger) error {
	d := &daemon{}
	defer d.close()
	if err := d.start(cfg, acks, log); err != nil {
		return err
	}
	// From the moment clients can connect, SIGTERM means drain and remove
	// the socket, never the default death that leaves the file behind.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	l, activated, releaseSocket, err := listener(cfg.Socket)
	if err != nil {
		return fmt.Errorf("socket %s: %w", cfg.Socket.Path, err)
	}
	defer releaseSocket()
	refusals := d.refusals
	l = limitPerPeer(l, cfg.Socket.MaxConnectionsPerUID, log, d.metrics, refusals)
	for _, o := range cfg.Roles.overlaps() {
		log.Warn("duties not separated: one principal holds several roles", "principal", o)
	}
	a := &server{eng: d.engine, log: log, metrics: d.metrics, sigs: cfg.RASignatures, refused: refusals,
		backupTimeout: cfg.Store.BackupTimeout, exportTimeout: cfg.Socket.Timeouts.Export}
	srv := httpServer(a.routes(cfg.Roles), cfg.Socket.Timeouts, log)
	stopSweep := func() {}
	if d.engine.SharedStore() {
		stopSweep = sweepNonceClaims(d.engine, cfg.RASignatures.MaxSkew, log)
	}
	defer stopSweep()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("ready", "socket", l.Addr().String(), "socket_activated", activated)
	serving := "STATUS=serving on " + l.Addr().String()
	notify(sd.SdNotifyReady, serving)
	stopMonitor := d.monitor(cfg.HSM.ProbeInterval, serving)
	defer stopMonitor()
	var stopErr error
	stopOutcome, stopReason := store.OutcomeOK, "signal"
	select {
	case sig := <-stop:
		log.Info("stopping: draining requests", "signal", sig.String())
		notify(sd.SdNotifyStopping, "STATUS=draining the signing queue")
	case <-d.module.LoginRefused():
		// The PIN was changed or locked behind signerd's back. The module
		// will not present it again, and nothing can be signed: stop, so
		// the unit's restart does not present it either.
		stopErr = fmt.Errorf("HSM: %w", d.module.LoginRefusal())
		stopOutcome, stopReason = store.OutcomeFailed, "PIN refused"
		log.Error("stopping: the HSM refused the PIN when signerd logged in again", "err", stopErr)
		notify(sd.SdNotifyStopping, "STATUS=HSM refused the PIN; draining and stopping")
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	// Stop accepting, let every request in progress get its answer, then
	// finish whatever is still queued.
	stopMonitor()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	refusals.Close() // what is tallied is recorded before the stop
	if err := d.engine.Audit(store.Event{Actor: store.System, Action: "signerd.stop", Outcome: stopOutcome,
		Reason: stopReason}); err != nil {
		log.Error("audit stop", "err", err)
	}
	stopSweep()
	d.engine.Close() // drains the queue, then seals the log
	if stopErr != nil {
		return stopErr
	}
	log.Info("stopped")
	return nil
}

// httpServer serves h on the socket, cutting off clients by the
// configured timeouts.
func httpServer(h http.Handler, t httpTimeouts, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ConnContext:       withPeer,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
		// "OPTIONS *" goes to the handler, which refuses and audits it,
		// instead of a 200 from the server itself.
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// start opens the HSM, checks the issuing keys against their
// certificates, runs the power-on self-test, opens the store and starts
// the engine (which resolves any batch a crash interrupted).
func (d *daemon) start(cfg *config, acks acknowledgements, log *slog.Logger) error {
	notify("STATUS=logging in to the HSM")
	var err error
	d.module, err = cfg.HSM.Open(cfg.HSM.Sessions)
	if err != nil {
		return fmt.Errorf("HSM: %w", err)
	}
	ctx := context.Background()
	var issuers []*issuance.Issuer
	var signers []crypto.Signer
	shards := map[string]engine.CRLShards{}
	for _, ic := range cfg.Issuers {
		iss, signer, err := issuance.LoadIssuer(ctx, d.module, ic.Key, ic.Certificate, cfg.SM2ID)
		if err != nil {
			return err
		}
		issuers = append(issuers, iss)
		signers = append(signers, signer)
		shards[iss.ID()] = engine.CRLShards{Count: ic.CRL.Shards, URL: ic.CRL.URL, DeltaURL: ic.CRL.DeltaURL}
	}
	if cfg.Publish.Dir != "" {
		if d.published, err = publish.Open(cfg.Publish.Dir, cfg.Publish.Keep); err != nil {
			return fmt.Errorf("publish.dir: %w", err)
		}
	}
	auditKey, generated, err := loadAuditKey(ctx, d.module, cfg.Audit.Key)
	if err != nil {
		return err
	}
	newAuditKey := ""
	if generated {
		log.Info("audit key generated", "label", cfg.Audit.Key)
		newAuditKey = cfg.Audit.Key
	}
	signers = append(signers, auditKey)
	var responderKey issuance.Signer
	if cfg.OCSP.ResponderKey != "" {
		k, key, generated, err := loadSM2Key(ctx, d.module, cfg.OCSP.ResponderKey)
		if err != nil {
			return fmt.Errorf("OCSP responder key: %w", err)
		}
		if generated {
			log.Info("OCSP responder key generated", "label", cfg.OCSP.ResponderKey)
		}
		signers = append(signers, k)
		if responderKey, err = issuance.KeySigner(key, cfg.SM2ID); err != nil {
			return fmt.Errorf("OCSP responder key: %w", err)
		}
	}
	notify("STATUS=power-on self-test")
	if err := d.module.SelfTest(ctx, signers...); err != nil {
		return err
	}
	log.Info("self-test passed", "keys", len(signers))
	notify("STATUS=opening the store and resolving interrupted batches")
	if d.store, err = cfg.Store.open(log); err != nil {
		return err
	}
	d.metrics = newMetrics(func() int { return d.engine.Queue().Depth() },
		func() bool { return d.engine.HSM().Up }, func() bool { return d.engine.Store().Writable },
		func(max int) (int, error) { return d.engine.OCSPDue(max) })
	// The engine's refusals are tallied with the API's; nothing is
	// refused before engine.New returns, so d.engine is set by then.
	d.refusals = newRefusalLog(func(ev store.Event) error { return d.engine.Audit(ev) }, cfg.Roles,
		cfg.Audit.RefusalWindow, log, d.metrics)
	ec := cfg.Engine // the file's settings, and what exists only now
	ec.Store, ec.Issuers, ec.Profiles, ec.SM2ID, ec.Random = d.store, issuers, cfg.Profiles, cfg.SM2ID, d.module.Random()
	ec.Log, ec.Metrics, ec.Refusals = log, d.metrics, d.refusals
	ec.CRLShards, ec.Publish = shards, d.published
	ec.OCSP.ResponderKey = responderKey
	ec.AuditKey, ec.AuditKeyGenerated, ec.AuditAnchor = auditKey, newAuditKey, d.module.DataObject(anchorLabel(cfg))
	ec.AcknowledgeAuditBreak, ec.AcknowledgeClockReset = acks.auditBreak, acks.clockReset
	d.engine, err = engine.New(ec)
	if err != nil {
		return err
	}
	labels := make([]string, len(cfg.Issuers))
	for i, ic := range cfg.Issuers {
		labels[i] = ic.Key
	}
	detail := fmt.Sprintf("config sha256 %x; token %s; issuing keys %q; audit key %q; self-test passed",
		cfg.digest, cfg.HSM.Name(), labels, cfg.Audit.Key)
	if cfg.Node != "" {
		claim := d.store.Claim()
		detail += fmt.Sprintf("; node %s, claim generation %d", cfg.Node, claim.Generation)
		if claim.TakenFrom != "" {
			detail += fmt.Sprintf(", taken over from %s, which held it without renewing", store.BoundedText(claim.TakenFrom, 128))
		}
	}
	if err := d.engine.Audit(store.Event{Actor: store.System, Action: "signerd.start", Object: cfg.path, Outcome: store.OutcomeOK,
		Detail: detail}); err != nil {
		return err
	}
	d.engine.StartCRLSchedule()
	d.engine.StartOCSP()
	return nil
}

// anchorLabel names the HSM object that anchors this signerd's audit
// chain: a node's own, so that an HSM once used by the unnamed signerd or
// by another node (a token restored from its backup) anchors each chain
// apart.
func anchorLabel(cfg *config) string {
	if cfg.Node != "" {
		return cfg.Audit.Key + "-anchor@" + cfg.Node
	}
	return cfg.Audit.Key + "-anchor"
}

// open opens the store file, or the database, the config names.
func (c storeConfig) open(log *slog.Logger) (*store.Store, error) {
	if c.Postgres == nil {
		return store.OpenWith(c.Path, c.Options)
	}
	st, err := store.OpenPostgresDSN(c.Postgres, c.PostgresOptions)
	if err != nil {
		return nil, err
	}
	// Never the DSN whole: it may name files and settings that are no
	// business of the log's.
	log.Info("store opened on PostgreSQL", "host", strings.Join(c.Postgres.Hosts(), ","), "dbname", c.Postgres.Database())
	if node := c.PostgresOptions.Node; node != "" {
		claim := st.Claim()
		log.Info("node name claimed", "node", node, "generation", claim.Generation, "taken_from", claim.TakenFrom)
	}
	return st, nil
}

// loadAuditKey finds the audit key, or generates it on first start.
func loadAuditKey(ctx context.Context, m *hsm.Module, label string) (*hsm.SM2Signer, bool, error) {
	signer, _, generated, err := loadSM2Key(ctx, m, label)
	if err != nil {
		return nil, false, fmt.Errorf("audit key %w", err)
	}
	return signer, generated, nil
}

// loadSM2Key finds the SM2 key labelled label in the token, generating it
// there if it is missing (signerd's own keys: the audit key, the
// delegated OCSP responder's); generated says which.
func loadSM2Key(ctx context.Context, m *hsm.Module, label string) (*hsm.SM2Signer, *hsm.Key, bool, error) {
	key, err := m.FindKey(ctx, label)
	generated := false
	if errors.Is(err, hsm.ErrKeyNotFound) {
		key, err = m.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: hsm.SM2})
		generated = true
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("%q: %w", label, err)
	}
	signer, err := key.SM2Signer(nil)
	return signer, key, generated, err
}

// notify sends sd_notify lines to systemd; outside systemd it does nothing.
func notify(lines ...string) {
	sd.SdNotify(false, strings.Join(lines, "\n"))
}

// listener is the socket systemd passed (socket activation), else one
// signerd creates. release, called once signerd has stopped serving,
// removes a socket signerd created if its path still names it; systemd's
// socket is systemd's to remove.
func listener(cfg socketConfig) (l net.Listener, activated bool, release func(), err error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, false, nil, err
	}
	switch {
	case len(ls) > 1:
		return nil, false, nil, fmt.Errorf("systemd passed %d sockets; signerd serves exactly one", len(ls))
	case len(ls) == 1 && ls[0] == nil:
		return nil, false, nil, errors.New("systemd passed a socket that is not a stream listener")
	case len(ls) == 1:
		if _, ok := ls[0].(*net.UnixListener); !ok {
			return nil, false, nil, fmt.Errorf("systemd passed a %s socket; signerd serves Unix sockets only", ls[0].Addr().Network())
		}
		return ls[0], true, func() {}, nil
	}
	l, release, err = listen(cfg)
	return l, false, release, err
}

// monitor probes the HSM every interval, and at least twice per systemd
// watchdog interval, until the returned stop is called. While the HSM
// signs and store writes complete, systemd gets its watchdog ping; while
// the HSM does not sign, or store writes have stalled (engine.StoreStatus),
// the pings stop and STATUS says why: signerd keeps serving what it can
// and recovers by itself when the HSM or the store does, unless the
// outage outlasts WatchdogSec and systemd restarts it. An outage's start
// and end are audited by the engine; a stall, once over.
func (d *daemon) monitor(interval time.Duration, serving string) (stop func()) {
	watchdog, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		watchdog = 0
	}
	if watchdog > 0 {
		interval = min(interval, watchdog/2)
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		up := true
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			// A probe may write (an HSM outage's audit event): not into a
			// stalled store, where it would wait with it.
			st := d.engine.Store()
			var err error
			if !st.Stalled {
				ctx, cancel := context.WithTimeout(context.Background(), interval)
				err = d.engine.ProbeHSM(ctx)
				cancel()
			}
			switch {
			case st.Stalled:
				notify("STATUS=store " + st.Error + ", withholding the watchdog")
			case err != nil:
				notify("STATUS=HSM unavailable, withholding the watchdog: " + err.Error())
			case !up:
				notify(serving)
			}
			up = err == nil && !st.Stalled
			if up && watchdog > 0 {
				notify(sd.SdNotifyWatchdog)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// statementFault says what makes an acknowledgement's statement no
// statement ("" if nothing): it must name someone or something (a letter
// or a digit), and hold nothing that hides or reorders what it shows
// (control, format or bidirectional characters, invalid UTF-8), so that
// the audited statement reads as it was typed. strings.TrimSpace alone
// keeps zero-width characters such as U+200B, U+2060 and U+FEFF.
func statementFault(s string) string {
	if !utf8.ValidString(s) {
		return "it is not UTF-8"
	}
	seen := false
	for _, r := range s {
		switch {
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Bidi_Control, r) || r == 0x2028 || r == 0x2029:
			return fmt.Sprintf("it holds U+%04X, a control, format or bidirectional character", r)
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			seen = true
		}
	}
	if !seen {
		return "it holds no letter or digit"
	}
	return ""
}
