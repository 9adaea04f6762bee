package engine

import (
	"testing"
	"time"
)

// TestCRLNumber: a CRL is numbered by its signing time in Unix
// nanoseconds, or one more than the last number if that is larger.
func TestCRLNumber(t *testing.T) {
	sec := time.Date(2026, 11, 29, 16, 0, 0, 0, time.UTC)
	ns := uint64(sec.UnixNano())
	for _, c := range []struct {
		name       string
		next       uint64
		thisUpdate time.Time
		read       time.Time
		want       uint64
	}{
		{"fresh store", 1, sec, sec.Add(123), ns + 123},
		{"store numbered 1, 2, 3 before", 4, sec, sec.Add(5), ns + 5},
		{"same nanosecond as the last", ns + 6, sec, sec.Add(5), ns + 6},
		{"clock reset below the last", ns + uint64(time.Hour), sec, sec, ns + uint64(time.Hour)},
		{"clock stepped back between the readings", 1, sec, sec.Add(-time.Second), ns},
		{"reading past the next second", 1, sec, sec.Add(1500 * time.Millisecond), ns + uint64(1500*time.Millisecond)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := crlNumber(c.next, c.thisUpdate, c.read); got != c.want {
				t.Errorf("crlNumber(%d, %s, %s) = %d, want %d", c.next, c.thisUpdate, c.read, got, c.want)
			}
		})
	}
}
