package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/engine"
	"signerd/hsm"
	"signerd/store"
)

// config is signerd's configuration, parsed once (loadConfig) into the
// typed values the packages take: nothing parses a duration, a DSN or a
// mode again after it. Defaults are filled in, by the package that owns a
// setting where it has one (the store, the engine) and here for signerd's
// own.
type config struct {
	// path and digest identify the file loaded, for the start-up event.
	path   string
	digest [sha256.Size]byte

	HSM struct {
		hsm.TokenSpec // resolved
		Sessions      int
		ProbeInterval time.Duration
		// PINRefusedMarker is the marker's path, defaulted for the store.
		PINRefusedMarker string
	}
	Issuers []issuerConfig
	// SM2ID is the SM2 signer ID; nil: the engine's default.
	SM2ID []byte
	Node  string
	Store storeConfig
	// Socket is where and how signerd serves.
	Socket socketConfig
	Roles  roles
	// Engine holds the engine's settings from the file (queue, CRL
	// validity, clock step, store stall threshold, sealing, RA signature
	// skew); start adds what only exists at run time (store, keys,
	// profiles, log). The engine fills in its defaults.
	Engine engine.Config
	Audit  struct {
		Key           string // the audit key's label
		RefusalWindow time.Duration
	}
	RASignatures raSignatures // prepared
	// OCSP is the ocsp section: ResponderKey is the delegated responder's
	// key label, "" when each issuing key signs its responses.
	OCSP struct {
		ResponderKey string
	}
	// Publish is the publication directory ("" for none) and how many
	// numbered CRLs it keeps per series.
	Publish struct {
		Dir  string
		Keep int
	}
	Profiles map[string]*engine.Profile
	Debug    bool // log_level: debug
}

// storeConfig is the store to open: a file (Path) or a database
// (Postgres), with its options.
type storeConfig struct {
	Path            string
	Options         store.Options
	Postgres        *store.PostgresDSN
	PostgresOptions store.PostgresOptions
	// BackupTimeout: store.backup_timeout, defaulted (file only).
	BackupTimeout time.Duration
}

// socketConfig is socket, with its defaults filled in.
type socketConfig struct {
	Path                 string
	Group                string
	Mode                 uint32
	MaxConnectionsPerUID int
	Timeouts             httpTimeouts
}

// Defaults of signerd's own settings.
const (
	defaultProbeInterval        = 5 * time.Second
	defaultAuditKey             = "signerd-audit"
	defaultSocketMode           = 0o660
	defaultMaxConnectionsPerUID = 256
)

// noPasswordHelp is what to use instead of a password in the DSN.
const noPasswordHelp = "give the password in a passfile (passfile=/etc/signerd/pgpass in the DSN, " +
	"or PGPASSFILE in the unit's environment; mode 0600, format host:port:dbname:user:password), " +
	"or use peer authentication over the server's Unix socket (host=/run/postgresql) or a client certificate " +
	"(sslcert=, sslkey=, sslmode=verify-full)"

// fileKeys name the fields of the packages' options by the file's keys,
// for their validation errors.
var fileKeys = map[string]string{
	// store.Options, store.PostgresOptions
	"InitialMmapSize": "store.initial_mmap_size",
	"Timeout":         "store.postgres.timeout",
	"MaxConns":        "store.postgres.max_conns",
	"NodeLease":       "store.postgres.node_lease",
	"Node":            "node",
	// engine.Config
	"QueueSize":                   "queue.size",
	"BatchSize":                   "queue.batch",
	"CRLValidity":                 "crl.validity",
	"CRLSchedule.Interval":        "crl.interval",
	"CRLSchedule.Retry":           "crl.retry",
	"CRLSchedule.AfterRevocation": "crl.after_revocation",
	"CRLSchedule.DeltaInterval":   "crl.delta_interval",
	"CRLSchedule.DeltaValidity":   "crl.delta_validity",
	"OCSP":                        "ocsp",
	"OCSP.Validity":               "ocsp.validity",
	"OCSP.ResponderValidity":      "ocsp.responder_validity",
	"ClockMaxStep":                "clock_max_step",
	"WriteStallAfter":             "store.write_stall_after",
	"SealEvery":                   "audit.seal_every",
	"SealInterval":                "audit.seal_interval",
	"RASignatureSkew":             "ra_signatures.max_skew",
}

// keyed names a package's refused option by its key in the file.
func keyed(err error) error {
	var oe *store.OptionError
	if errors.As(err, &oe) && fileKeys[oe.Option] != "" {
		return fmt.Errorf("%s %w", fileKeys[oe.Option], oe.Err)
	}
	var ce *engine.ConfigError
	if errors.As(err, &ce) && fileKeys[ce.Field] != "" {
		return fmt.Errorf("%s %w", fileKeys[ce.Field], ce.Err)
	}
	return err
}

func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f configFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := f.config()
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.path, c.digest = path, sha256.Sum256(raw)
	return c, nil
}

// config checks the file's settings and maps them to typed values.
func (f *configFile) config() (*config, error) {
	c := &config{Roles: f.Roles, Issuers: f.Issuers, Node: f.Node, Debug: f.LogLevel == "debug"}
	c.HSM.TokenSpec, c.HSM.Sessions = f.HSM.TokenSpec, f.HSM.Sessions
	if err := c.HSM.Resolve(false); err != nil {
		return nil, fmt.Errorf("hsm: %w", err)
	}
	switch {
	case len(f.Issuers) == 0:
		return nil, errors.New("at least one issuer is required")
	case f.Socket.Path == "":
		return nil, errors.New("socket.path is required")
	}
	if f.SM2ID != "" {
		c.SM2ID = []byte(f.SM2ID)
	}
	if f.Node != "" {
		if err := store.ValidNodeName(f.Node); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	var err error
	if c.Store, err = f.Store.config(f.Node); err != nil {
		return nil, keyed(err)
	}
	c.HSM.PINRefusedMarker = f.HSM.PINRefusedMarker
	if c.HSM.PINRefusedMarker == "" {
		if c.HSM.PINRefusedMarker, err = pinRefusedMarkerFor(c.Store); err != nil {
			return nil, err
		}
	}
	c.HSM.ProbeInterval = f.HSM.ProbeInterval.Duration
	if c.HSM.ProbeInterval <= 0 {
		c.HSM.ProbeInterval = defaultProbeInterval
	}
	if c.Socket, err = f.Socket.config(); err != nil {
		return nil, err
	}
	c.Audit.Key, c.Audit.RefusalWindow = f.Audit.Key, f.Audit.RefusalWindow.Duration
	if c.Audit.RefusalWindow <= 0 {
		c.Audit.RefusalWindow = defaultRefusalWindow
	}
	if c.Audit.Key == "" {
		c.Audit.Key = defaultAuditKey
	}
	for i, ic := range f.Issuers {
		if ic.Key == c.Audit.Key {
			return nil, fmt.Errorf("audit.key %q is an issuing key; the audit key signs nothing but seals", c.Audit.Key)
		}
		if err := (engine.CRLShards{Count: ic.CRL.Shards, URL: ic.CRL.URL, DeltaURL: ic.CRL.DeltaURL}).Validate(); err != nil {
			return nil, fmt.Errorf("issuers[%d] (%s) crl: %w", i, ic.Key, err)
		}
	}
	for role := range f.Roles {
		if role != roleRA && role != roleOperator && role != roleAuditor {
			return nil, fmt.Errorf("roles: unknown role %q (ra, operator, auditor)", role)
		}
	}
	rs := f.RASignatures
	c.RASignatures = raSignatures{Required: rs.Required, MaxSkew: rs.MaxSkew.Duration, AllowedSerials: rs.AllowedSerials,
		AllowedSubjects: rs.AllowedSubjects, ReplayMemory: rs.ReplayMemory}
	if err := c.RASignatures.prepare(); err != nil {
		return nil, err
	}
	validity := f.CRL.Validity.Duration
	if f.CRLValidity.Duration != 0 {
		if validity != 0 {
			return nil, errors.New("crl_validity and crl.validity both given: crl_validity is the older spelling of crl.validity; keep one")
		}
		validity = f.CRLValidity.Duration
	}
	schedule, err := f.crlSchedule()
	if err != nil {
		return nil, err
	}
	c.Engine = engine.Config{QueueSize: f.Queue.Size, BatchSize: f.Queue.Batch, CRLValidity: validity, CRLSchedule: schedule,
		ClockMaxStep: f.ClockMaxStep.Duration, WriteStallAfter: f.Store.WriteStallAfter.Duration,
		SealEvery: f.Audit.SealEvery, SealInterval: f.Audit.SealInterval.Duration, RASignatureSkew: c.RASignatures.MaxSkew}
	if c.Engine.OCSP, c.OCSP.ResponderKey, err = f.ocsp(); err != nil {
		return nil, err
	}
	if c.OCSP.ResponderKey == c.Audit.Key {
		return nil, fmt.Errorf("ocsp.responder_key %q is the audit key; each key signs one kind of thing", c.OCSP.ResponderKey)
	}
	for _, ic := range f.Issuers {
		if ic.Key == c.OCSP.ResponderKey {
			return nil, fmt.Errorf("ocsp.responder_key %q is an issuing key; a delegated responder signs responses only", ic.Key)
		}
	}
	if err := c.Engine.Validate(); err != nil {
		return nil, keyed(err)
	}
	c.Publish.Dir, c.Publish.Keep = f.Publish.Dir, f.Publish.Keep
	if c.Publish.Keep < 0 {
		return nil, fmt.Errorf("publish.keep %d: negative", c.Publish.Keep)
	}
	if c.Publish.Dir != "" && !filepath.IsAbs(c.Publish.Dir) {
		return nil, fmt.Errorf("publish.dir %q: an absolute path", c.Publish.Dir)
	}
	if c.Profiles, err = f.profiles(); err != nil {
		return nil, err
	}
	return c, nil
}

// Defaults of the CRL schedule: signerd signs CRLs by itself.
const defaultCRLInterval = 6 * time.Hour

// Defaults of the ocsp section.
const (
	defaultOCSPValidity     = 24 * time.Hour
	defaultOCSPResponderKey = "signerd-ocsp"
)

// ocsp is the ocsp section as the engine takes it (the responder's key,
// loaded at start, aside), and the delegated responder's key label.
func (f *configFile) ocsp() (engine.OCSP, string, error) {
	o := f.OCSP
	c := engine.OCSP{Validity: defaultOCSPValidity, ResponderValidity: o.ResponderValidity.Duration}
	if o.Validity != nil {
		c.Validity = o.Validity.Duration
	}
	switch o.Responder {
	case "", "delegated":
		label := o.ResponderKey
		if label == "" {
			label = defaultOCSPResponderKey
		}
		if c.Validity == 0 {
			label = ""
		}
		return c, label, nil
	case "issuer":
		if o.ResponderKey != "" || o.ResponderValidity.Duration != 0 {
			return c, "", errors.New("ocsp.responder_key and responder_validity are for responder: delegated")
		}
		return c, "", nil
	}
	return c, "", fmt.Errorf("ocsp.responder %q: delegated or issuer", o.Responder)
}

// crlSchedule is the crl section as the engine takes it. Its waits are a
// second at least: the engine takes shorter ones (its tests do), an
// operator's would only spin.
func (f *configFile) crlSchedule() (engine.CRLSchedule, error) {
	c := f.CRL
	s := engine.CRLSchedule{Interval: c.Interval.Duration, AfterRevocation: c.AfterRevocation.Duration,
		DeltaInterval: c.DeltaInterval.Duration, DeltaValidity: c.DeltaValidity.Duration, Retry: c.Retry.Duration}
	if s.Interval == 0 {
		s.Interval = defaultCRLInterval
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"crl.interval", s.Interval}, {"crl.after_revocation", s.AfterRevocation}, {"crl.delta_interval", s.DeltaInterval}, {"crl.retry", s.Retry}} {
		if d.v != 0 && d.v < time.Second {
			return s, fmt.Errorf("%s %s: under a second", d.key, d.v)
		}
	}
	return s, nil
}

// config checks the store section and maps it to the store's options.
func (s *storeFile) config(node string) (storeConfig, error) {
	switch {
	case s.Path == "" && s.Postgres == nil:
		return storeConfig{}, errors.New("store is required (store: PATH, store.path, or store.postgres)")
	case s.Path != "" && s.Postgres != nil:
		return storeConfig{}, errors.New("store: path and postgres both given; the store is one or the other")
	}
	if s.Postgres != nil {
		// Both are about the file: a database has no memory map, and its
		// backups are the database's own (pg_basebackup), not signerd's.
		if s.InitialMmapSize != nil {
			return storeConfig{}, errors.New("store.initial_mmap_size is for a store file (store.path), not store.postgres")
		}
		if s.BackupTimeout.Duration != 0 {
			return storeConfig{}, errors.New("store.backup_timeout is for a store file (store.path): signerd does not copy a PostgreSQL store " +
				"(back it up with pg_basebackup and WAL archiving)")
		}
		return s.Postgres.config(node)
	}
	if node != "" {
		return storeConfig{}, fmt.Errorf("node %q: nodes share a store on PostgreSQL (store.postgres); a store file has one signerd", node)
	}
	c := storeConfig{Path: s.Path, Options: store.Options{InitialMmapSize: store.DefaultInitialMmapSize},
		BackupTimeout: s.BackupTimeout.Duration}
	if d := c.BackupTimeout; d != 0 && d < time.Second {
		return storeConfig{}, fmt.Errorf("store.backup_timeout %s: below 1s", d)
	}
	if c.BackupTimeout == 0 {
		c.BackupTimeout = defaultBackupTimeout
	}
	if s.InitialMmapSize != nil {
		c.Options.InitialMmapSize = int(*s.InitialMmapSize)
	}
	return c, c.Options.Validate()
}

// config checks store.postgres and parses its DSN.
func (p *postgresFile) config(node string) (storeConfig, error) {
	if strings.TrimSpace(p.DSN) == "" {
		return storeConfig{}, errors.New("store.postgres.dsn is required (e.g. \"host=/run/postgresql dbname=signerd user=signerd\")")
	}
	// The DSN is never quoted in a message: a malformed one may hold a
	// secret where a password was meant to be left out.
	secret, err := store.PostgresDSNSecret(p.DSN)
	if err != nil {
		return storeConfig{}, fmt.Errorf("store.postgres.dsn (not shown): %w", err)
	}
	if secret != "" {
		return storeConfig{}, fmt.Errorf("store.postgres.dsn (not shown) holds a %s: a secret in the config file is read by whoever "+
			"reads the configuration and may be logged; %s", secret, noPasswordHelp)
	}
	c := storeConfig{PostgresOptions: store.PostgresOptions{Timeout: p.Timeout.Duration, MaxConns: p.MaxConns, Node: node,
		NodeLease: p.NodeLease.Duration}}
	if c.Postgres, err = store.ParsePostgresDSN(p.DSN); err != nil {
		return storeConfig{}, fmt.Errorf("store.postgres.dsn: %w", err)
	}
	return c, c.PostgresOptions.Validate()
}

// config checks the socket section and fills in its defaults.
func (s *socketFile) config() (socketConfig, error) {
	c := socketConfig{Path: s.Path, Group: s.Group, Mode: defaultSocketMode, MaxConnectionsPerUID: s.MaxConnectionsPerUID}
	if s.Mode != "" {
		mode, err := strconv.ParseUint(s.Mode, 8, 32)
		if err != nil {
			return socketConfig{}, fmt.Errorf("socket.mode %q: not octal", s.Mode)
		}
		c.Mode = uint32(mode)
	}
	if c.MaxConnectionsPerUID <= 0 {
		c.MaxConnectionsPerUID = defaultMaxConnectionsPerUID
	}
	t := s.Timeouts
	c.Timeouts = httpTimeouts{ReadHeader: t.ReadHeader.Duration, Read: t.Read.Duration, Write: t.Write.Duration,
		Idle: t.Idle.Duration, Export: t.Export.Duration}
	return c, c.Timeouts.fill()
}

// profiles are the engine profiles: the built-ins with the file's
// profiles section laid over them.
func (f *configFile) profiles() (map[string]*engine.Profile, error) {
	if f.Profiles.Kind == 0 {
		return engine.BuiltinProfiles(), nil
	}
	doc, err := yaml.Marshal(map[string]*yaml.Node{"profiles": &f.Profiles})
	if err != nil {
		return nil, err
	}
	return engine.LoadProfiles(doc)
}
