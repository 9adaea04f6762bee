package main

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketTimeoutsConfig: socket.timeouts sets the HTTP server's
// timeouts and the audit export's; each left out keeps its default, each
// out of its bounds is refused with its key, and an unknown key in it is
// refused with its line.
func TestSocketTimeoutsConfig(t *testing.T) {
	const head = "hsm: {module: /m.so, token: ca, pin_file: /p}\nissuers: [{key: k, certificate: /c.pem}]\nstore: /s.db\n"
	defaults := httpTimeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: time.Minute, Idle: time.Minute, Export: time.Hour}
	tests := []struct {
		name, socket string
		want         httpTimeouts
		err          string
	}{
		{name: "defaults", socket: "socket: {path: /s}", want: defaults},
		{name: "all set", socket: "socket:\n  path: /s\n  timeouts: {read_header: 2s, read: 30s, write: 5m, idle: 10s, export: 3h}",
			want: httpTimeouts{ReadHeader: 2 * time.Second, Read: 30 * time.Second, Write: 5 * time.Minute, Idle: 10 * time.Second, Export: 3 * time.Hour}},
		{name: "one set", socket: "socket: {path: /s, timeouts: {write: 2m}}",
			want: httpTimeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 2 * time.Minute, Idle: time.Minute, Export: time.Hour}},
		{name: "zero is the default", socket: "socket: {path: /s, timeouts: {idle: 0s}}", want: defaults},
		{name: "short read takes the header's default down", socket: "socket: {path: /s, timeouts: {read: 3s}}",
			want: httpTimeouts{ReadHeader: 3 * time.Second, Read: 3 * time.Second, Write: time.Minute, Idle: time.Minute, Export: time.Hour}},
		{name: "bounds", socket: "socket: {path: /s, timeouts: {read_header: 1s, read: 10m, write: 1h, idle: 1s, export: 1m}}",
			want: httpTimeouts{ReadHeader: time.Second, Read: 10 * time.Minute, Write: time.Hour, Idle: time.Second, Export: time.Minute}},

		{name: "header too short", socket: "socket: {path: /s, timeouts: {read_header: 100ms}}", err: "socket.timeouts.read_header 100ms: below 1s"},
		{name: "negative read", socket: "socket: {path: /s, timeouts: {read: -1s}}", err: "socket.timeouts.read -1s: below 1s"},
		{name: "write too long", socket: "socket: {path: /s, timeouts: {write: 2h}}", err: "socket.timeouts.write 2h0m0s: more than 1h0m0s"},
		{name: "idle too long", socket: "socket: {path: /s, timeouts: {idle: 90m}}", err: "socket.timeouts.idle 1h30m0s: more than 1h0m0s"},
		{name: "export too short", socket: "socket: {path: /s, timeouts: {export: 30s}}", err: "socket.timeouts.export 30s: below 1m0s"},
		{name: "export too long", socket: "socket: {path: /s, timeouts: {export: 25h}}", err: "socket.timeouts.export 25h0m0s: more than 24h0m0s"},
		{name: "header longer than the request", socket: "socket: {path: /s, timeouts: {read_header: 20s, read: 10s}}",
			err: "socket.timeouts.read_header 20s: more than socket.timeouts.read 10s"},
		{name: "not a duration", socket: "socket: {path: /s, timeouts: {read: soon}}", err: "line 4"},
		{name: "unknown key", socket: "socket:\n  path: /s\n  timeouts:\n    header: 5s", err: "line 7: field header not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signerd.yaml")
			if err := os.WriteFile(path, []byte(head+tt.socket+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("loaded with %q: %v, want an error with %q", tt.socket, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Socket.Timeouts != tt.want {
				t.Fatalf("timeouts %+v, want %+v", c.Socket.Timeouts, tt.want)
			}
			srv := httpServer(http.NotFoundHandler(), c.Socket.Timeouts, slog.New(slog.DiscardHandler))
			if srv.ReadHeaderTimeout != tt.want.ReadHeader || srv.ReadTimeout != tt.want.Read ||
				srv.WriteTimeout != tt.want.Write || srv.IdleTimeout != tt.want.Idle {
				t.Fatalf("HTTP server timeouts: header %v, read %v, write %v, idle %v; want %+v",
					srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, tt.want)
			}
		})
	}
}

// TestEngineSettingsConfig: the engine's settings reach engine.Config as
// written, and what the engine refuses is reported with the file's key.
func TestEngineSettingsConfig(t *testing.T) {
	const head = "hsm: {module: /m.so, token: ca, pin_file: /p}\nissuers: [{key: k, certificate: /c.pem}]\nstore: /s.db\nsocket: {path: /s}\n"
	c := loadTestConfig(t, head+"queue: {size: 16, batch: 4}\ncrl_validity: 12h\nclock_max_step: 1h\n"+
		"audit: {seal_every: 10, seal_interval: 30s}\nra_signatures: {max_skew: 2m}\n")
	e := c.Engine
	if e.QueueSize != 16 || e.BatchSize != 4 || e.CRLValidity != 12*time.Hour || e.ClockMaxStep != time.Hour ||
		e.SealEvery != 10 || e.SealInterval != 30*time.Second || e.RASignatureSkew != 2*time.Minute || c.RASignatures.MaxSkew != 2*time.Minute {
		t.Fatalf("engine settings %+v", e)
	}
	for setting, want := range map[string]string{
		"queue: {size: -1}":           "queue.size -1: negative",
		"queue: {batch: -1}":          "queue.batch -1: negative",
		"crl_validity: -1h":           "crl.validity -1h0m0s: negative",
		"clock_max_step: -1s":         "clock_max_step -1s: negative",
		"audit: {seal_every: -5}":     "audit.seal_every -5: negative",
		"audit: {seal_interval: -1s}": "audit.seal_interval -1s: negative",
	} {
		path := filepath.Join(t.TempDir(), "signerd.yaml")
		if err := os.WriteFile(path, []byte(head+setting+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", setting, err, want)
		}
	}
}

func loadTestConfig(t *testing.T, text string) *config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signerd.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
