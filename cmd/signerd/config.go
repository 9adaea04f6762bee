package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/engine"
	"signerd/hsm"
	"signerd/store"
)

// minWriteStallAfter bounds store.write_stall_after from below: several
// fsyncs on a slow disk.
const minWriteStallAfter = 100 * time.Millisecond

// maxInitialMmapSize bounds store.initial_mmap_size: 64 GiB of address
// space, far more than a CA's store needs mapped ahead.
const maxInitialMmapSize = 64 << 30

// config is signerd's configuration file. Unknown keys are errors, so a
// misspelt setting never silently takes its default.
type config struct {
	HSM struct {
		hsm.TokenSpec `yaml:",inline"`
		Sessions      int `yaml:"sessions"`
		// ProbeInterval is how often signerd checks that the HSM signs
		// (default 5s; under a systemd watchdog at least twice per
		// interval).
		ProbeInterval duration `yaml:"probe_interval"`
		// PINRefusedMarker is the file a PIN refusal leaves, which keeps
		// every later start from presenting the PIN until an operator
		// removes it (pinmarker.go; default hsm-pin-refused beside the
		// store file, or in $STATE_DIRECTORY for a database store).
		PINRefusedMarker string `yaml:"pin_refused_marker"`
	} `yaml:"hsm"`
	// Issuers are the issuing keys (by label) and their certificates
	// (PEM); the first issues new certificates.
	Issuers []struct {
		Key         string `yaml:"key"`
		Certificate string `yaml:"certificate"`
	} `yaml:"issuers"`
	SM2ID string `yaml:"sm2_id"`
	// Node names this signerd among the nodes that share one PostgreSQL
	// store (each with its own audit chain and HSM); empty: the only
	// signerd of its store.
	Node   string    `yaml:"node"`
	Store  storeCfg  `yaml:"store"`
	Socket socketCfg `yaml:"socket"`
	Roles  roles     `yaml:"roles"`
	Queue  struct {
		Size  int `yaml:"size"`
		Batch int `yaml:"batch"`
	} `yaml:"queue"`
	CRLValidity duration `yaml:"crl_validity"`
	// ClockMaxStep: a signing time more than this after the last one is
	// alarmed as a forward step of the clock (default 168h; engine).
	ClockMaxStep duration `yaml:"clock_max_step"`
	// Audit seals the audit log with an SM2 key of its own, generated in
	// the token on first start when missing (SPEC §7.2).
	Audit struct {
		Key          string   `yaml:"key"` // default "signerd-audit"
		SealEvery    int      `yaml:"seal_every"`
		SealInterval duration `yaml:"seal_interval"`
		// RefusalWindow is how long refusals are counted before their
		// tally is written as one event (default 10s; refusals.go).
		RefusalWindow duration `yaml:"refusal_window"`
	} `yaml:"audit"`
	// ackAuditBreak is an operator's --acknowledge-audit-break statement.
	ackAuditBreak string
	// ackClockReset is an operator's --acknowledge-clock-reset statement.
	ackClockReset string
	// path and digest identify the file loaded, for the start-up event.
	path   string
	digest [sha256.Size]byte
	// RASignatures: when required, RA requests must carry an SM2
	// signature by an RA certificate (ra-sign profile, cmcRA EKU) this CA
	// issued, optionally only those listed (rasig.go).
	RASignatures raSignatures `yaml:"ra_signatures"`
	Profiles     yaml.Node    `yaml:"profiles"`
	LogLevel     string       `yaml:"log_level"`
}

// storeCfg is where the CA's records are and how signerd opens and
// watches them: a bbolt file (path), or a PostgreSQL database (postgres).
// A bare path ("store: /var/lib/signerd/signerd.db") is the file with
// defaults.
type storeCfg struct {
	Path string `yaml:"path"`
	// Postgres is the database that holds the store instead of a file.
	Postgres *postgresCfg `yaml:"postgres"`
	// InitialMmapSize is the address space the file is mapped with at
	// open (store.Options; default 1GiB; 0: only what the file holds).
	InitialMmapSize *byteSize `yaml:"initial_mmap_size"`
	// WriteStallAfter is how long writes may wait with none completing
	// before health reports the store stalled and the watchdog is
	// withheld (default, or 0: 10s; at least 100ms).
	WriteStallAfter duration `yaml:"write_stall_after"`
	// BackupTimeout is how long sending a store backup may take beyond
	// one second per MiB of the copy, after which the copy is dropped
	// (default, or 0: 1m; at least 1s; backup.go).
	BackupTimeout duration `yaml:"backup_timeout"`
}

// storeKeys are the keys of a store mapping, for the message that
// refuses any other.
const storeKeys = "path, postgres, initial_mmap_size, write_stall_after, backup_timeout"

func (s *storeCfg) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Path = n.Value
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: store: a path, or a mapping with path or postgres", n.Line)
	}
	// A node decodes without the file's strictness: check the keys here.
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "path", "postgres", "initial_mmap_size", "write_stall_after", "backup_timeout":
		default:
			return fmt.Errorf("line %d: store: unknown key %q (%s)", k.Line, k.Value, storeKeys)
		}
	}
	type plain storeCfg
	return n.Decode((*plain)(s))
}

// options are the bbolt store's open options.
func (s storeCfg) options() store.Options {
	o := store.Options{InitialMmapSize: store.DefaultInitialMmapSize}
	if s.InitialMmapSize != nil {
		o.InitialMmapSize = int(*s.InitialMmapSize)
	}
	return o
}

// validate checks the store section and fills in its defaults.
func (s *storeCfg) validate() error {
	switch {
	case s.Path == "" && s.Postgres == nil:
		return errors.New("store is required (store: PATH, store.path, or store.postgres)")
	case s.Path != "" && s.Postgres != nil:
		return errors.New("store: path and postgres both given; the store is one or the other")
	}
	if d := s.WriteStallAfter.Duration; d != 0 && d < minWriteStallAfter {
		return fmt.Errorf("store.write_stall_after %s: below %s, an ordinary commit would count as a stall", d, minWriteStallAfter)
	}
	if s.Postgres != nil {
		// Both are about the file: a database has no memory map, and its
		// backups are the database's own (pg_basebackup), not signerd's.
		if s.InitialMmapSize != nil {
			return errors.New("store.initial_mmap_size is for a store file (store.path), not store.postgres")
		}
		if s.BackupTimeout.Duration != 0 {
			return errors.New("store.backup_timeout is for a store file (store.path): signerd does not copy a PostgreSQL store " +
				"(back it up with pg_basebackup and WAL archiving)")
		}
		return s.Postgres.validate()
	}
	if d := s.BackupTimeout.Duration; d != 0 && d < time.Second {
		return fmt.Errorf("store.backup_timeout %s: below 1s", d)
	}
	if s.BackupTimeout.Duration == 0 {
		s.BackupTimeout.Duration = defaultBackupTimeout
	}
	if s.InitialMmapSize != nil && (*s.InitialMmapSize > maxInitialMmapSize) {
		return fmt.Errorf("store.initial_mmap_size %d: more than %d", *s.InitialMmapSize, maxInitialMmapSize)
	}
	return nil
}

// byteSize is a size in bytes: a number, or one with a KiB, MiB or GiB
// suffix.
type byteSize int64

func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	v, unit := n.Value, int64(1)
	for suffix, u := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if num, ok := strings.CutSuffix(v, suffix); ok {
			v, unit = strings.TrimSpace(num), u
		}
	}
	x, err := strconv.ParseInt(v, 10, 64)
	if err != nil || x < 0 || x > math.MaxInt64/unit {
		return fmt.Errorf("line %d: %q: want a size in bytes, KiB, MiB or GiB", n.Line, n.Value)
	}
	*b = byteSize(x * unit)
	return nil
}

type socketCfg struct {
	Path  string `yaml:"path"`
	Group string `yaml:"group"` // owner group of the socket file
	Mode  string `yaml:"mode"`  // octal, default 0660
	// MaxConnectionsPerUID caps the connections one uid holds open
	// (default 256: an RA's pool of concurrent requests fits well within).
	MaxConnectionsPerUID int `yaml:"max_connections_per_uid"`
}

// roles maps peers to roles by uid and gid.
type roles map[string]struct {
	UIDs []int `yaml:"uids"`
	GIDs []int `yaml:"gids"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.path, c.digest = path, sha256.Sum256(raw)
	return &c, nil
}

func (c *config) validate() error {
	if err := c.HSM.Resolve(false); err != nil {
		return fmt.Errorf("hsm: %w", err)
	}
	switch {
	case len(c.Issuers) == 0:
		return errors.New("at least one issuer is required")
	case c.Socket.Path == "":
		return errors.New("socket.path is required")
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if c.Node != "" {
		if err := store.ValidNodeName(c.Node); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if c.Store.Postgres == nil {
			return fmt.Errorf("node %q: nodes share a store on PostgreSQL (store.postgres); a store file has one signerd", c.Node)
		}
		c.Store.Postgres.node = c.Node
	}
	if c.HSM.PINRefusedMarker == "" {
		marker, err := pinRefusedMarkerFor(c.Store)
		if err != nil {
			return err
		}
		c.HSM.PINRefusedMarker = marker
	}
	if c.HSM.ProbeInterval.Duration <= 0 {
		c.HSM.ProbeInterval.Duration = 5 * time.Second
	}
	if c.Socket.MaxConnectionsPerUID <= 0 {
		c.Socket.MaxConnectionsPerUID = 256
	}
	if c.Audit.RefusalWindow.Duration <= 0 {
		c.Audit.RefusalWindow.Duration = defaultRefusalWindow
	}
	if c.Audit.Key == "" {
		c.Audit.Key = "signerd-audit"
	}
	for _, ic := range c.Issuers {
		if ic.Key == c.Audit.Key {
			return fmt.Errorf("audit.key %q is an issuing key; the audit key signs nothing but seals", c.Audit.Key)
		}
	}
	for role := range c.Roles {
		if role != roleRA && role != roleOperator && role != roleAuditor {
			return fmt.Errorf("roles: unknown role %q (ra, operator, auditor)", role)
		}
	}
	if err := c.RASignatures.prepare(); err != nil {
		return err
	}
	if c.Socket.Mode != "" {
		if _, err := strconv.ParseUint(c.Socket.Mode, 8, 32); err != nil {
			return fmt.Errorf("socket.mode %q: not octal", c.Socket.Mode)
		}
	}
	return nil
}

// profiles returns the engine profiles: the built-ins with the config's
// profiles section laid over them.
func (c *config) profiles() (map[string]*engine.Profile, error) {
	if c.Profiles.Kind == 0 {
		return engine.BuiltinProfiles(), nil
	}
	doc, err := yaml.Marshal(map[string]*yaml.Node{"profiles": &c.Profiles})
	if err != nil {
		return nil, err
	}
	return engine.LoadProfiles(doc)
}
