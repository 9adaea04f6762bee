package engine

import (
	"fmt"
	"time"
)

// MinWriteStallAfter bounds Config.WriteStallAfter from below: several
// fsyncs on a slow disk. Below it an ordinary commit would count as a
// stall.
const MinWriteStallAfter = 100 * time.Millisecond

// DefaultCRLValidity is a complete CRL's validity unless configured.
const DefaultCRLValidity = 24 * time.Hour

// ConfigError is a Config field Validate refuses: Field is its name, Err
// says what is wrong with its value ("VALUE: why"), so that a caller can
// name the setting in its own terms (a config file's key).
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + " " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks the tunables an operator may set. Zero stands for the
// default (New fills it in); a negative size or duration is refused rather
// than taken for the default, since it can only be a mistake.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"QueueSize", c.QueueSize}, {"BatchSize", c.BatchSize}, {"SealEvery", c.SealEvery}} {
		if f.v < 0 {
			return &ConfigError{f.name, fmt.Errorf("%d: negative", f.v)}
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"CRLValidity", c.CRLValidity}, {"SignTimeout", c.SignTimeout}, {"SealInterval", c.SealInterval},
		{"ClockMaxStep", c.ClockMaxStep}, {"RASignatureSkew", c.RASignatureSkew}} {
		if f.d < 0 {
			return &ConfigError{f.name, fmt.Errorf("%s: negative", f.d)}
		}
	}
	sc := c.CRLSchedule
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"CRLSchedule.Interval", sc.Interval}, {"CRLSchedule.AfterRevocation", sc.AfterRevocation},
		{"CRLSchedule.DeltaInterval", sc.DeltaInterval}, {"CRLSchedule.DeltaValidity", sc.DeltaValidity},
		{"CRLSchedule.Retry", sc.Retry}, {"CRLSchedule.Poll", sc.Poll}} {
		if f.d < 0 {
			return &ConfigError{f.name, fmt.Errorf("%s: negative", f.d)}
		}
	}
	if err := c.OCSP.validate(); err != nil {
		return err
	}
	validity := c.CRLValidity
	if validity == 0 {
		validity = DefaultCRLValidity
	}
	if err := sc.withDefaults(validity).validate(validity); err != nil {
		return err
	}
	if d := c.WriteStallAfter; d != 0 && d < MinWriteStallAfter {
		return &ConfigError{"WriteStallAfter", fmt.Errorf("%s: below %s, an ordinary commit would count as a stall", d, MinWriteStallAfter)}
	}
	return nil
}
