package store

import (
	"bytes"
	"testing"
	"time"
)

// TestLowerRAReplayMarks: marks after the time given (the engine gives
// the reset clock plus max_skew) are lowered to it, to the nanosecond;
// those at or before it are left, one a nanosecond before included, and
// the lowered ones are named; a store that never held a mark lowers none.
func TestLowerRAReplayMarks(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e engine) { testLowerRAReplayMarks(t, e.openNew(t)) })
}

func testLowerRAReplayMarks(t *testing.T, s *Store) {
	reset := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	if err := s.Update(func(tx *Tx) error {
		lowered, err := tx.LowerRAReplayMarks(reset)
		if err != nil || len(lowered) != 0 {
			t.Errorf("no marks: lowered %x, %v", lowered, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	marks := []struct {
		serial []byte
		mark   time.Time
		want   time.Time
	}{
		{[]byte{0x01}, reset.AddDate(0, 0, 100), reset},
		{[]byte{0x02}, reset.Add(time.Second), reset},
		{[]byte{0x03}, reset, reset},
		{[]byte{0x05}, reset.Add(time.Nanosecond), reset},
		{[]byte{0x06}, reset.Add(-time.Nanosecond), reset.Add(-time.Nanosecond)},
		{[]byte{0x04}, reset.Add(-time.Hour), reset.Add(-time.Hour)},
	}
	if err := s.Update(func(tx *Tx) error {
		for _, m := range marks {
			if err := tx.RaiseRAReplayMark(m.serial, m.mark); err != nil {
				return err
			}
		}
		lowered, err := tx.LowerRAReplayMarks(reset)
		if err != nil {
			return err
		}
		if len(lowered) != 3 || !bytes.Equal(lowered[0], []byte{0x01}) || !bytes.Equal(lowered[1], []byte{0x02}) ||
			!bytes.Equal(lowered[2], []byte{0x05}) {
			t.Errorf("lowered %x, want 01, 02 and 05", lowered)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx *Tx) error {
		for _, m := range marks {
			got, err := tx.RAReplayMark(m.serial)
			if err != nil {
				return err
			}
			if !got.Equal(m.want) {
				t.Errorf("mark of %x: %s, want %s", m.serial, got, m.want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
