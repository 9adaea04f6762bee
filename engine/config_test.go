package engine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"signerd/engine"
)

// TestConfigValidate: zero takes the default, a negative size or duration
// and a stall threshold below MinWriteStallAfter are refused, naming the
// field.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   engine.Config
		field string // "" if accepted
		err   string
	}{
		{"defaults", engine.Config{}, "", ""},
		{"set", engine.Config{QueueSize: 8, BatchSize: 2, SealEvery: 1, CRLValidity: time.Hour, SealInterval: time.Second,
			ClockMaxStep: time.Hour, WriteStallAfter: engine.MinWriteStallAfter}, "", ""},
		{"negative queue", engine.Config{QueueSize: -1}, "QueueSize", "-1: negative"},
		{"negative batch", engine.Config{BatchSize: -2}, "BatchSize", "-2: negative"},
		{"negative seal count", engine.Config{SealEvery: -1}, "SealEvery", "negative"},
		{"negative CRL validity", engine.Config{CRLValidity: -time.Hour}, "CRLValidity", "-1h0m0s: negative"},
		{"negative seal interval", engine.Config{SealInterval: -time.Second}, "SealInterval", "negative"},
		{"negative clock step", engine.Config{ClockMaxStep: -time.Second}, "ClockMaxStep", "negative"},
		{"stall too short", engine.Config{WriteStallAfter: 10 * time.Millisecond}, "WriteStallAfter", "10ms: below 100ms"},
		{"negative stall", engine.Config{WriteStallAfter: -time.Second}, "WriteStallAfter", "below 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *engine.ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field || !strings.Contains(ce.Err.Error(), tt.err) {
				t.Fatalf("%v, want %s refused with %q", err, tt.field, tt.err)
			}
		})
	}
}
