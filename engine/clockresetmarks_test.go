package engine_test

import (
	"strings"
	"testing"
	"time"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestClockResetLowersRAReplayMarks: an acknowledged clock reset lowers,
// in its transaction, an RA replay mark the clock that ran ahead raised
// to the corrected clock plus the RA signatures' max_skew, no further: a
// mark within max_skew of the clock (one a request dated ahead by the
// RA's skew raised while the clock was right) and one before the clock
// are left as they are, and the event counts and names what it lowered.
// With no skew (no request can have been dated ahead of the clock) the
// mark is lowered to the clock itself.
func TestClockResetLowersRAReplayMarks(t *testing.T) {
	for _, tc := range []struct {
		name string
		skew time.Duration
	}{
		{"max_skew 2m", 2 * time.Minute},
		{"no skew", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := enginetest.NewCA(t)
			st := enginetest.OpenStore(t)
			clk, base := clockNow()
			ahead := base.AddDate(0, 0, 100)
			corrected := base.Add(time.Minute)
			clk.set(ahead)
			e := ca.Engine(t, st, engine.Config{Now: clk.read, RASignatureSkew: tc.skew})
			raAhead, raWithinSkew, raBefore := []byte{0x5b, 0x1c}, []byte{0x5b, 0x1e}, []byte{0x5b, 0x1d}
			marks := map[string]struct{ raised, want time.Time }{
				string(raAhead):      {ahead.Add(time.Second), corrected.Add(tc.skew)},
				string(raWithinSkew): {corrected.Add(tc.skew), corrected.Add(tc.skew)},
				string(raBefore):     {base.Add(-time.Hour), base.Add(-time.Hour)},
			}
			for serial, m := range marks {
				if err := e.RaiseRAReplayMark([]byte(serial), m.raised); err != nil {
					t.Fatal(err)
				}
			}
			mustCRL(t, e) // signed while ahead: the guard is ahead
			e.Close()

			clk.set(corrected)
			e = ca.Engine(t, st, engine.Config{Now: clk.read, AcknowledgeClockReset: "Li Wei, ticket 4711", RASignatureSkew: tc.skew})
			defer e.Close()
			for serial, m := range marks {
				if got, err := e.RAReplayMark([]byte(serial)); err != nil || !got.Equal(m.want) {
					t.Errorf("mark of %x after the reset: %s, %v; want %s", serial, got, err, m.want)
				}
			}
			resets := eventsOf(t, st, "clock.reset.acknowledged")
			if len(resets) != 1 || !strings.Contains(resets[0].Reason, "1 RA replay marks after the clock plus max_skew "+tc.skew.String()) ||
				!strings.Contains(resets[0].Reason, store.HexSerial(raAhead)) || strings.Contains(resets[0].Reason, store.HexSerial(raBefore)) ||
				strings.Contains(resets[0].Reason, store.HexSerial(raWithinSkew)) {
				t.Errorf("clock.reset.acknowledged events %+v: want one counting and naming the lowered mark only", resets)
			}
		})
	}
}
