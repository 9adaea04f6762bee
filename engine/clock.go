package engine

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"signerd/api"
	"signerd/store"
)

// clock hands out the times stamped on certificates (notBefore), CRLs
// (thisUpdate) and lifecycle changes (revocation, hold, restore). Stamps
// never go backwards (SPEC §6.2a): if the system clock reads earlier than
// the last stamp — stepped back by NTP, an operator or an attacker — the
// operation is refused rather than backdated. Revocation is refused too: a
// revocation dated before something already signed would make a CRL signed
// earlier, which does not list it, contradict the record, and a CRL would
// list an entry dated after its thisUpdate. Dating it later than the clock
// instead would misstate when a key was compromised. The way out when the
// guard itself is wrong (a clock that ran ahead, since corrected) is an
// operator's acknowledged reset at start (Config.AcknowledgeClockReset).
// The guard is raised only by times something carries: a refused
// operation leaves it where it was.
type clock struct {
	mu   sync.Mutex
	now  func() time.Time
	last time.Time

	// maxStep is Config.ClockMaxStep (noteSigningTime). The alarms go to
	// the log, the audit log (store) and metrics.
	maxStep time.Duration
	log     *slog.Logger
	metrics Metrics
	store   *storeHealth

	// The refusals while the clock reads behind the guard are each
	// recorded as the refused request (with its actor, tallied); the
	// system's clock.alarm event is written at the first refusal of an
	// episode (one that follows a read the guard let pass, or none) and
	// then at most once per clockAlarmEvery, with how many were refused
	// since the last: RA retries cannot grow it.
	behind    bool      // an episode is under way: no read let pass since its alarm
	alarmedAt time.Time // when its last alarm was written, by time.Now: monotonic, not the clock that is wrong
	refused   int       // refusals since the last alarm
}

// clockAlarmEvery is how often a clock.alarm event is written again while
// the clock stays behind the guard.
const clockAlarmEvery = time.Hour

// alarmDue counts n refusals because the clock reads behind the guard and
// reports whether a clock.alarm event is due now, with the refusals it
// covers (these and those since the last alarm).
func (c *clock) alarmDue(n int) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused += n
	if c.behind && time.Since(c.alarmedAt) < clockAlarmEvery {
		return false, 0
	}
	c.behind, c.alarmedAt = true, time.Now()
	since := c.refused
	c.refused = 0
	return true, since
}

// alarm reports n refusals because the clock went backwards: each in the
// log at error level, and in the audit log as one clock.alarm event per
// episode (clock.alarmDue), not per request; the refused requests
// themselves are recorded by their callers, with their actors, as
// refusals (tallied by the refusal sink).
func (c *clock) alarm(err error, n int) {
	c.log.Error("clock alarm", "err", err, "refused", n, "remedy", clockRemedy)
	due, since := c.alarmDue(n)
	if !due {
		return
	}
	reason := fmt.Sprintf("%v; %d clock_backwards refusals since the last clock.alarm, this one included", err, since)
	if aerr := c.store.appendEvent(store.Event{Actor: store.System, Action: "clock.alarm", Outcome: store.OutcomeRefused,
		Reason: reason, Detail: clockRemedy}); aerr != nil {
		c.log.Error("audit clock alarm", "err", aerr)
	}
}

// read reads the clock, refusing a time before the guard, and leaves the
// guard as it is: a change or CRL stamped inside its write transaction
// raises it when it notes the time (noteSigningTime), so one refused (an
// expired certificate, an expired issuer) does not raise the guard to a
// time nothing carries.
func (c *clock) read() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now().UTC().Truncate(time.Second) // certificates and CRLs carry seconds
	if t.Before(c.last) {
		return time.Time{}, errorf(api.CodeClockBackwards,
			"system clock reads %s, before the last signing time %s: refusing to sign backdated objects",
			t.Format(time.RFC3339), c.last.Format(time.RFC3339))
	}
	c.behind = false // the episode, if any, is over: the next refusal alarms at once
	return t, nil
}

// advance raises the guard to t (never lowers it).
func (c *clock) advance(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.last) {
		c.last = t
	}
}

// clockRemedy is what the log and the audit log tell an operator when the
// clock reads before the last signing time.
const clockRemedy = "signing, revocation, hold, restore and CRLs are refused until the clock passes the last signing time; " +
	"if the clock is wrong, correct it; if it is right and the last signing time was stamped by a clock that ran ahead, " +
	`restart signerd once with --acknowledge-clock-reset "who, why" (audited) to lower the guard to the clock`

// defaultClockMaxStep is how far a signing time may lie ahead of the last
// one before a forward step is alarmed: longer than any pause between two
// CRLs of a working CA, short enough to catch a clock set days ahead.
const defaultClockMaxStep = 7 * 24 * time.Hour

// ClockStepMetrics, if Config.Metrics implements it, is told of each
// forward step of the clock larger than Config.ClockMaxStep.
type ClockStepMetrics interface {
	ClockStep(ahead time.Duration)
}

// noteSigningTime records now as the last signing time in tx. A step of
// more than Config.ClockMaxStep past the one recorded is alarmed (log,
// clock.step event in the same transaction, metric), not refused: a CA
// that was stopped or idle that long looks the same, and refusing would
// lock it. The alarm lets an operator catch a clock that ran ahead before
// it is corrected and the guard refuses everything.
func (c *clock) noteSigningTime(tx *store.Tx, now time.Time) error {
	last, err := tx.LastSigningTime()
	if err != nil {
		return err
	}
	if step := now.Sub(last); !last.IsZero() && step > c.maxStep {
		why := fmt.Sprintf("clock reads %s, %v after the last signing time %s (more than clock_max_step %v): "+
			"expected if signerd was stopped or idle that long; otherwise the clock ran ahead: correct it, then "+
			`restart signerd with --acknowledge-clock-reset "who, why"`,
			now.Format(time.RFC3339), step, last.Format(time.RFC3339), c.maxStep)
		c.log.Warn("clock stepped forward", "reason", why)
		if _, err := tx.Append(store.Event{Actor: store.System, Action: "clock.step", Outcome: store.OutcomeOK, Reason: why}); err != nil {
			return err
		}
		if m, ok := c.metrics.(ClockStepMetrics); ok {
			m.ClockStep(step)
		}
	}
	c.advance(now)
	return tx.NoteSigningTime(now)
}

// startClock loads the guard in tx at start: the last signing time and the
// latest revocation or hold time (a store written before they were noted
// holds them only in its revocation index). If the clock reads before it,
// an operator's acknowledged reset lowers it to the clock; without one the
// guard stays and the log says what to do.
func (e *Engine) startClock(tx *store.Tx) error {
	last, err := tx.LastSigningTime()
	if err != nil {
		return err
	}
	revoked, err := loadRevocations(tx)
	if err != nil {
		return err
	}
	if revoked.After(last) {
		last = revoked
	}
	e.clock.last = last
	wall := e.cfg.Now().UTC()
	now := wall.Truncate(time.Second)
	if !now.Before(last) {
		if e.cfg.AcknowledgeClockReset != "" {
			e.log.Warn("--acknowledge-clock-reset given but the clock is not behind the last signing time: nothing reset; remove the flag",
				"clock", now, "last_signing_time", last)
		}
		return nil
	}
	if e.cfg.AcknowledgeClockReset == "" {
		// The start goes on (status, export and a small step back that
		// clears itself need no operator); each refusal until then is
		// alarmed and audited with the remedy (alarm).
		e.log.Error("clock alarm: at start the system clock reads before the last signing time",
			"clock", now, "last_signing_time", last, "remedy", clockRemedy)
		return nil
	}
	return e.resetClock(tx, now, wall, last)
}

// raMarksNote names the RA certificates whose replay marks a reset
// lowered (at most maxNamedMarks of them) and what that reopens.
func raMarksNote(marks [][]byte, skew time.Duration) string {
	if len(marks) == 0 {
		return ""
	}
	const maxNamedMarks = 32
	var b strings.Builder
	b.WriteString(" (RA certificates")
	for i, serial := range marks {
		if i == maxNamedMarks {
			fmt.Fprintf(&b, " and %d more", len(marks)-i)
			break
		}
		fmt.Fprintf(&b, " %x", serial)
	}
	fmt.Fprintf(&b, ": a request one of them signed while the clock ran ahead, dated more than max_skew %v after the clock, "+
		"is refused as a replay no longer; replace those RA certificates if such a request may have been captured; "+
		"their fresh requests dated before the clock plus max_skew are refused replayed_request until the clock passes it, "+
		"at most %v)", skew, skew)
	return b.String()
}

// resetClock lowers the guard from last to now on an operator's statement.
// Revocation and hold times later than now (stamped by the clock that ran
// ahead) are re-dated to now, so CRLs signed from now on list no entry
// dated after their thisUpdate; the event names how many. Certificates
// signed with a notBefore later than now keep it (they are signed); CRL
// numbers keep increasing. A clock before the issuing CA's notBefore is
// plainly wrong: the reset is refused and signerd does not start.
//
// RA replay marks later than wall (the clock, not truncated) plus
// Config.RASignatureSkew are lowered to it in the same transaction. A
// request accepted while the clock was right was dated at most max_skew
// after the clock then, so at or before the lowered mark: it stays
// refused. Lowering to the clock instead would reopen it (a mark is one
// time per RA and the nonces accepted lived only in that run's memory).
// That trades a lockout for a window, and the event says so: a request an
// RA signed while the clock ran ahead, dated D after wall plus max_skew,
// passes the date check again while the clock reads within max_skew of D,
// until accepted once. A fresh request dated D looks the same, so no lower
// mark would refuse the one and not the other; keeping the mark refuses
// both until the clock passes it. The cost of the skew: the RAs' fresh
// requests dated before wall plus max_skew are refused for at most
// max_skew. The event names the RA certificates whose marks were lowered,
// to be replaced if a request they signed while the clock ran ahead may
// have been captured.
func (e *Engine) resetClock(tx *store.Tx, now, wall, last time.Time) error {
	if iss := e.active.Cert; now.Before(iss.NotBefore) {
		return fmt.Errorf("refusing --acknowledge-clock-reset: the clock reads %s, before the issuing CA's notBefore %s: correct the clock",
			now.Format(time.RFC3339), iss.NotBefore.Format(time.RFC3339))
	}
	var ahead [][]byte
	if err := tx.AllRevoked(func(r store.RevokedEntry) error {
		if r.RevokedAt.After(now) {
			ahead = append(ahead, r.Serial)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, serial := range ahead {
		c, err := tx.Certificate(serial)
		if err != nil {
			return err
		}
		c.RevokedAt = now
		if err := tx.PutCertificate(c); err != nil {
			return err
		}
	}
	if err := tx.ResetSigningTime(now); err != nil {
		return err
	}
	// RA replay marks raised past dates the clock that ran ahead accepted
	// would refuse every fresh request of those RAs (replayed_request)
	// until the clock caught up; lowered with the guard, but no further
	// than the latest date a right clock could have accepted (a mark
	// refuses dates at or before it). What that reopens, and what the
	// operator does about it, is named with them.
	// OCSP responses made while the clock ran ahead carry a thisUpdate in
	// the future, which clients refuse: the pass over older certificates
	// is run again (ocspSigner.backfill), making those due now.
	if err := tx.PutOCSPBackfill(nil, false); err != nil {
		return err
	}
	skew := max(e.cfg.RASignatureSkew, 0)
	floor := wall.Add(skew)
	marks, err := tx.LowerRAReplayMarks(floor)
	if err != nil {
		return err
	}
	why := fmt.Sprintf("last signing time %s, clock reads %s: guard lowered to the clock; %d revocation or hold times after it re-dated to it; "+
		"%d RA replay marks after the clock plus max_skew %v (%s) lowered to it%s",
		last.Format(time.RFC3339), now.Format(time.RFC3339), len(ahead), len(marks), skew, floor.Format(time.RFC3339Nano), raMarksNote(marks, skew))
	if _, err := tx.Append(store.Event{Actor: store.System, Action: "clock.reset.acknowledged", Outcome: store.OutcomeOK,
		Reason: why, Detail: e.cfg.AcknowledgeClockReset}); err != nil {
		return err
	}
	e.log.Warn("clock reset acknowledged", "reason", why, "acknowledgement", e.cfg.AcknowledgeClockReset)
	e.clock.last = now
	return nil
}
