package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"signerd/hsm"
)

// configFile is signerd's configuration file as written (YAML). Unknown
// keys are errors, so a misspelt setting never silently takes its
// default. loadConfig maps it to config; nothing else reads it.
type configFile struct {
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
	Issuers []issuerConfig `yaml:"issuers"`
	SM2ID   string         `yaml:"sm2_id"`
	// Node names this signerd among the nodes that share one PostgreSQL
	// store (each with its own audit chain and HSM); empty: the only
	// signerd of its store.
	Node   string     `yaml:"node"`
	Store  storeFile  `yaml:"store"`
	Socket socketFile `yaml:"socket"`
	Roles  roles      `yaml:"roles"`
	Queue  struct {
		Size  int `yaml:"size"`
		Batch int `yaml:"batch"`
	} `yaml:"queue"`
	// CRLValidity is the older spelling of crl.validity.
	CRLValidity duration `yaml:"crl_validity"`
	// CRL is when signerd signs CRLs by itself (engine.CRLSchedule).
	CRL struct {
		Interval        duration `yaml:"interval"`         // default 6h
		Validity        duration `yaml:"validity"`         // default 24h
		AfterRevocation duration `yaml:"after_revocation"` // default 5m
		DeltaInterval   duration `yaml:"delta_interval"`   // default none
		DeltaValidity   duration `yaml:"delta_validity"`   // default 2 × delta_interval
		Retry           duration `yaml:"retry"`            // default 30s
	} `yaml:"crl"`
	// OCSP is how signerd pre-signs OCSP responses (engine.OCSP).
	OCSP struct {
		// Validity is a response's nextUpdate − thisUpdate (default 24h;
		// "0s" turns pre-signing off).
		Validity *duration `yaml:"validity"`
		// Responder is "delegated" (default: a key of its own, certified
		// for OCSP signing by the active issuing key) or "issuer" (each
		// issuing key signs its certificates' responses).
		Responder string `yaml:"responder"`
		// ResponderKey labels the delegated responder's SM2 key, generated
		// in the token at the first start (default "signerd-ocsp").
		ResponderKey      string   `yaml:"responder_key"`
		ResponderValidity duration `yaml:"responder_validity"` // default 720h
	} `yaml:"ocsp"`
	// Publish is the directory every CRL and OCSP response signed is
	// written into, for a web server, an LDAP loader or the OCSP responder
	// (package publish); none by default.
	Publish struct {
		Dir  string `yaml:"dir"`
		Keep int    `yaml:"keep"` // numbered CRLs kept per series (default 10)
	} `yaml:"publish"`
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
	// RASignatures: when required, RA requests must carry an SM2
	// signature by an RA certificate (ra-sign profile, cmcRA EKU) this CA
	// issued, optionally only those listed (rasig.go).
	RASignatures struct {
		Required bool     `yaml:"required"`
		MaxSkew  duration `yaml:"max_skew"` // default 5m
		// AllowedSerials and AllowedSubjects, when either is set, narrow
		// the RA certificates (those with the cmcRA EKU) to the ones
		// listed: by hex serial, or by subject exactly as the API shows it.
		AllowedSerials  []string `yaml:"allowed_serials"`
		AllowedSubjects []string `yaml:"allowed_subjects"`
		// ReplayMemory is how many signed requests signerd remembers for
		// each RA certificate (default replayCacheSize).
		ReplayMemory int `yaml:"replay_memory"`
	} `yaml:"ra_signatures"`
	Profiles yaml.Node `yaml:"profiles"`
	LogLevel string    `yaml:"log_level"`
}

type issuerConfig struct {
	Key         string `yaml:"key"`
	Certificate string `yaml:"certificate"`
	// CRL is how the issuer's certificates are split among CRLs
	// (engine.CRLShards): fixed once certificates exist.
	CRL struct {
		Shards   int    `yaml:"shards"`
		URL      string `yaml:"url"`
		DeltaURL string `yaml:"delta_url"`
	} `yaml:"crl"`
}

// storeFile is where the CA's records are and how signerd opens and
// watches them: a bbolt file (path), or a PostgreSQL database (postgres).
// A bare path ("store: /var/lib/signerd/signerd.db") is the file with
// defaults.
type storeFile struct {
	Path string `yaml:"path"`
	// Postgres is the database that holds the store instead of a file.
	Postgres *postgresFile `yaml:"postgres"`
	// InitialMmapSize is the address space the file is mapped with at
	// open (store.Options; default 1GiB; 0: only what the file holds).
	InitialMmapSize *byteSize `yaml:"initial_mmap_size"`
	// WriteStallAfter is how long writes may wait with none completing
	// before health reports the store stalled and the watchdog is
	// withheld (engine.Config; default, or 0: 10s; at least 100ms).
	WriteStallAfter duration `yaml:"write_stall_after"`
	// BackupTimeout is how long sending a store backup may take beyond
	// one second per MiB of the copy, after which the copy is dropped
	// (default, or 0: 1m; at least 1s; backup.go).
	BackupTimeout duration `yaml:"backup_timeout"`
}

// storeKeys are the keys of a store mapping, for the message that
// refuses any other.
const storeKeys = "path, postgres, initial_mmap_size, write_stall_after, backup_timeout"

func (s *storeFile) UnmarshalYAML(n *yaml.Node) error {
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
	type plain storeFile
	return n.Decode((*plain)(s))
}

// postgresFile is store.postgres: the database that holds the store.
type postgresFile struct {
	// DSN names the database (a libpq keyword/value string or a
	// postgres:// URL). It must not hold a password: the config file is
	// read by whoever reads signerd's configuration, and its digest is
	// audited.
	DSN string `yaml:"dsn"`
	// Timeout bounds each store transaction (store.PostgresOptions;
	// default, or 0: 10s; at least 1s).
	Timeout duration `yaml:"timeout"`
	// MaxConns is how many connections signerd's pool keeps at most
	// (default, or 0: 8), besides the one that marks the database in use.
	MaxConns int32 `yaml:"max_conns"`
	// NodeLease is how long this node's claim on its name lasts
	// unrenewed (store.PostgresOptions; default, or 0: 15s; at least 1s):
	// a process that finds the name claimed waits this long for a
	// renewal before it takes the name over.
	NodeLease duration `yaml:"node_lease"`
}

func (p *postgresFile) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: store.postgres: a mapping with dsn", n.Line)
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "dsn", "timeout", "max_conns", "node_lease":
		default:
			return fmt.Errorf("line %d: store.postgres: unknown key %q (dsn, timeout, max_conns, node_lease)", k.Line, k.Value)
		}
	}
	type plain postgresFile
	return n.Decode((*plain)(p))
}

type socketFile struct {
	Path  string `yaml:"path"`
	Group string `yaml:"group"` // owner group of the socket file
	Mode  string `yaml:"mode"`  // octal, default 0660
	// MaxConnectionsPerUID caps the connections one uid holds open
	// (default 256: an RA's pool of concurrent requests fits well within).
	MaxConnectionsPerUID int `yaml:"max_connections_per_uid"`
	// Timeouts bound how long a client may take (httpTimeouts).
	Timeouts struct {
		ReadHeader duration `yaml:"read_header"`
		Read       duration `yaml:"read"`
		Write      duration `yaml:"write"`
		Idle       duration `yaml:"idle"`
		Export     duration `yaml:"export"`
	} `yaml:"timeouts"`
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

// duration is a Go duration ("90s", "5m").
type duration struct{ time.Duration }

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// roles maps peers to roles by uid and gid.
type roles map[string]struct {
	UIDs []int `yaml:"uids"`
	GIDs []int `yaml:"gids"`
}
