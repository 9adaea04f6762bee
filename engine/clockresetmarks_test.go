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
// to just before the corrected clock (a request dated at the clock's
// second is after it, one dated a second before is not), leaves a mark
// before the clock as it is, and counts and names what it lowered.
func TestClockResetLowersRAReplayMarks(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	var clk settableClock
	base := time.Now().UTC().Truncate(time.Second)
	ahead := base.AddDate(0, 0, 100)
	clk.set(ahead)
	e := ca.Engine(t, st, engine.Config{Now: clk.read})
	raAhead, raBefore := []byte{0x5b, 0x1c}, []byte{0x5b, 0x1d}
	if err := e.RaiseRAReplayMark(raAhead, ahead.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := e.RaiseRAReplayMark(raBefore, base.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	mustCRL(t, e) // signed while ahead: the guard is ahead
	e.Close()

	corrected := base.Add(time.Minute)
	clk.set(corrected)
	e = ca.Engine(t, st, engine.Config{Now: clk.read, AcknowledgeClockReset: "Li Wei, ticket 4711"})
	defer e.Close()
	mark, err := e.RAReplayMark(raAhead)
	if err != nil || !mark.Before(corrected) || mark.Before(corrected.Add(-time.Second)) {
		t.Errorf("mark after the reset: %s, %v; want just before the clock %s", mark, err, corrected)
	}
	if mark, err := e.RAReplayMark(raBefore); err != nil || !mark.Equal(base.Add(-time.Hour)) {
		t.Errorf("mark before the clock after the reset: %s, %v; want it left at %s", mark, err, base.Add(-time.Hour))
	}
	resets := eventsOf(t, st, "clock.reset.acknowledged")
	if len(resets) != 1 || !strings.Contains(resets[0].Reason, "1 RA replay marks at or after it lowered") ||
		!strings.Contains(resets[0].Reason, store.HexSerial(raAhead)) || strings.Contains(resets[0].Reason, store.HexSerial(raBefore)) {
		t.Errorf("clock.reset.acknowledged events %+v: want one counting and naming the lowered mark only", resets)
	}
}
