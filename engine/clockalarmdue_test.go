package engine

import (
	"signerd/api"
	"testing"
	"time"
)

// TestClockAlarmDueOncePerEpisodeThenHourly: of the refusals while the
// clock reads behind the guard, the first of an episode is alarmed, those
// after it are only counted until clockAlarmEvery has passed since the
// alarm (then one alarm carries their count), and a read the guard lets
// pass ends the episode, so the next refusal is alarmed at once. The hour
// is simulated by moving the alarm's time back, not waited for.
func TestClockAlarmDueOncePerEpisodeThenHourly(t *testing.T) {
	wall := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	now := wall
	c := &clock{now: func() time.Time { return now }, last: wall}
	now = wall.Add(-time.Minute) // stepped back
	steps := []struct {
		name      string
		before    func()
		n         int
		due       bool
		wantSince int
	}{
		{"first refusal of the episode", nil, 1, true, 1},
		{"a retry", nil, 1, false, 0},
		{"a batch of 64", nil, 64, false, 0},
		{"an hour later", func() { c.alarmedAt = c.alarmedAt.Add(-clockAlarmEvery) }, 1, true, 66},
		{"a retry after the reminder", nil, 1, false, 0},
		{"after the clock passed the guard and stepped back again", func() {
			now = wall
			if _, err := c.read(); err != nil {
				t.Fatal(err)
			}
			now = wall.Add(-time.Second)
		}, 1, true, 2},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		if _, err := c.read(); CodeOf(err) != api.CodeClockBackwards {
			t.Fatalf("%s: read %v, want %s", s.name, err, api.CodeClockBackwards)
		}
		due, since := c.alarmDue(s.n)
		if due != s.due || since != s.wantSince {
			t.Errorf("%s: alarm due %v covering %d, want %v covering %d", s.name, due, since, s.due, s.wantSince)
		}
	}
}
