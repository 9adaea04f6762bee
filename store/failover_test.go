package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"signerd/store/pgtest"
)

// failoverLedger is what the writers of TestPostgresFailover were told
// was written: every Update that returned nil.
type failoverLedger struct {
	mu      sync.Mutex
	issued  map[string]bool // hex serial: certificate, serial and issue event acknowledged
	revoked map[string]bool // hex serial: revocation acknowledged
	// tried: a revocation failed, which may have committed all the same
	// (its commit's answer lost) and not been retried before the end.
	tried    map[string]bool
	attempts int
	failures map[string]int // what the failed Updates said, cut to its kind
	// firstAfter is when the first Update after promoted began returned
	// nil; afterPromotion counts each writer's acknowledged Updates that
	// began after it.
	promoted       time.Time
	firstAfter     time.Time
	afterPromotion map[int]int
}

func (l *failoverLedger) acknowledged(writer int, began time.Time, issued, revoked string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if issued != "" {
		l.issued[issued] = true
	}
	if revoked != "" {
		l.revoked[revoked] = true
	}
	if !l.promoted.IsZero() && !began.Before(l.promoted) {
		if l.firstAfter.IsZero() {
			l.firstAfter = time.Now()
		}
		l.afterPromotion[writer]++
	}
}

func (l *failoverLedger) failed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures[err.Error()]++
}

func (l *failoverLedger) count() (issued, attempts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.issued), l.attempts
}

// carriedOn reports whether every one of writers has had n Updates
// acknowledged since the promotion.
func (l *failoverLedger) carriedOn(writers, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w := range writers {
		if l.afterPromotion[w] < n {
			return false
		}
	}
	return true
}

// TestPostgresFailover is SPEC §9.3: a store opened on a DSN naming a
// primary and its synchronous standby (target_session_attrs=read-write)
// carries on, without being reopened, after the primary is killed under
// load and the standby promoted. Every write it acknowledged is on the new
// primary, the audit chain verifies, no serial is taken twice, and the
// database is marked in use by this store again.
func TestPostgresFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a primary and a standby")
	}
	primary := pgtest.Start(t)
	standby := primary.StartStandby(t, "signerd_standby")
	dsn := primary.CreateDatabase(t)
	mustUpgrade(t, dsn)
	failover := pgtest.FailoverDSN(t, dsn, primary, standby)
	s, err := OpenPostgres(failover, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const (
		writers = 4
		// before is how many certificates are acknowledged before the
		// kill, after how many each writer must have had acknowledged
		// after the promotion.
		before, after = 60, 15
		// loadBound only stops a test whose store never carries on.
		loadBound = 2 * time.Minute
	)
	l := &failoverLedger{issued: map[string]bool{}, revoked: map[string]bool{}, tried: map[string]bool{}, failures: map[string]int{}, afterPromotion: map[int]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeUntil(t, s, l, w, stop)
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	waitFor(t, loadBound, "certificates acknowledged before the kill", func() bool {
		issued, _ := l.count()
		return issued >= before
	})
	killed := time.Now()
	primary.Kill(t)
	down := time.Now()
	if err := s.Probe(); !errors.Is(err, ErrWrite) {
		t.Errorf("probe with the primary down and the standby not promoted: %v; want ErrWrite", err)
	}
	probed := time.Now()
	standby.Promote(t)
	promoted := time.Now()
	l.mu.Lock()
	l.promoted = promoted
	l.mu.Unlock()
	waitFor(t, loadBound, "the store's probe to pass after the promotion", func() bool { return s.Probe() == nil })
	healthy := time.Now()
	waitFor(t, loadBound, "every writer to carry on after the promotion", func() bool { return l.carriedOn(writers, after) })
	stopWriters()

	issued, attempts := l.count()
	t.Logf("%d writers, %d Updates, %d acknowledged certificates, %d acknowledged revocations; failures: %v",
		writers, attempts, issued, len(l.revoked), l.failures)
	ms := func(from, to time.Time) time.Duration { return to.Sub(from).Round(time.Millisecond) }
	t.Logf("kill: %v; probe failing during the outage: %v; promotion: %v; promotion to first acknowledged write begun after it: %v, to probe healthy: %v; kill to first acknowledged write: %v",
		ms(killed, down), ms(down, probed), ms(probed, promoted), ms(promoted, l.firstAfter), ms(promoted, healthy), ms(killed, l.firstAfter))

	// Everything below reads the promoted standby: the primary is down.
	err = s.View(func(tx *Tx) error {
		if err := tx.VerifyAuditChain(); err != nil {
			return fmt.Errorf("audit chain: %w", err)
		}
		for serial := range l.issued {
			raw, _ := hex.DecodeString(serial)
			c, err := tx.Certificate(raw)
			if err != nil {
				t.Errorf("acknowledged certificate %s: %v", serial, err)
				continue
			}
			switch revoked := c.Status == StatusRevoked; {
			case l.revoked[serial] && !revoked:
				t.Errorf("certificate %s is %s; its revocation was acknowledged", serial, c.Status)
			case revoked && !l.revoked[serial] && !l.tried[serial]:
				t.Errorf("certificate %s is revoked; no revocation of it was acknowledged or tried", serial)
			}
			if sr, err := tx.Serial(raw); err != nil || sr.State != SerialIssued || sr.RequestID != "req-"+serial {
				t.Errorf("serial %s: %+v, %v; want issued to req-%s", serial, sr, err, serial)
			}
		}
		for serial := range l.revoked {
			if !l.issued[serial] {
				t.Errorf("revocation of %s acknowledged, its issue not", serial)
			}
		}
		// Each serial issued once: one issue event each, and none of a
		// serial whose certificate is absent.
		issues := map[string]int{}
		revocations := map[string]bool{}
		err := tx.Events(1, func(e Event, _ []byte) error {
			switch e.Action {
			case "certificate.issue":
				issues[e.Object]++
			case "certificate.revoke":
				revocations[e.Object] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for serial, n := range issues {
			raw, _ := hex.DecodeString(serial)
			if _, err := tx.Certificate(raw); n != 1 || err != nil {
				t.Errorf("serial %s: %d issue events, certificate: %v", serial, n, err)
			}
		}
		for serial := range l.issued {
			if issues[serial] != 1 {
				t.Errorf("acknowledged certificate %s has %d issue events", serial, issues[serial])
			}
		}
		for serial := range l.revoked {
			if !revocations[serial] {
				t.Errorf("acknowledged revocation of %s has no event", serial)
			}
		}
		listed := 0
		if err := tx.Revoked("failover", func(RevokedEntry) error { listed++; return nil }); err != nil {
			return err
		}
		if listed < len(l.revoked) {
			t.Errorf("%d certificates on the revocation index, %d revocations acknowledged", listed, len(l.revoked))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// No acknowledged serial can be taken again.
	errRollBack := errors.New("roll back")
	err = s.Update(func(tx *Tx) error {
		for serial := range l.issued {
			raw, _ := hex.DecodeString(serial)
			if err := tx.ReserveSerial(raw, "again"); !errors.Is(err, ErrSerialUsed) {
				t.Errorf("serial %s reserved again after the failover: %v", serial, err)
			}
		}
		return errRollBack
	})
	if !errors.Is(err, errRollBack) {
		t.Fatal(err)
	}
	// The store marked the new primary's database in use again.
	if other, err := OpenPostgres(failover, PostgresOptions{}); err == nil || !strings.Contains(err.Error(), "in use by another signerd") {
		if err == nil {
			other.Close()
		}
		t.Errorf("a second open after the failover: %v; want refused as in use", err)
	}
}

// writeUntil issues certificates (serial, certificate and event in one
// Update) and revokes some of those acknowledged, until stop is closed.
// Every serial is tried once whatever came of it, as the engine burns a
// serial whose outcome it does not know.
func writeUntil(t *testing.T, s *Store, l *failoverLedger, writer int, stop <-chan struct{}) {
	var mine []string // this writer's acknowledged, unrevoked certificates
	for n := uint32(0); ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		raw := binary.BigEndian.AppendUint32([]byte{0x7f, byte(writer)}, n)
		serial := hex.EncodeToString(raw)
		revoke := ""
		if n%3 == 2 && len(mine) > 0 {
			revoke, mine = mine[0], mine[1:]
		}
		began := time.Now()
		err := s.Update(func(tx *Tx) error {
			if revoke != "" {
				return failoverRevoke(tx, revoke)
			}
			return failoverIssue(tx, raw, serial)
		})
		l.mu.Lock()
		l.attempts++
		l.mu.Unlock()
		switch {
		case err == nil && revoke != "":
			l.acknowledged(writer, began, "", revoke)
		case err == nil:
			l.acknowledged(writer, began, serial, "")
			mine = append(mine, serial)
		case errors.Is(err, ErrLogBehind) || !errors.Is(err, ErrWrite):
			t.Errorf("writer %d: %v; want ErrWrite (and not ErrLogBehind) while the database fails over", writer, err)
			return
		default:
			l.failed(err)
			if revoke != "" {
				l.mu.Lock()
				l.tried[revoke] = true
				l.mu.Unlock()
				// Revoked or not, it is tried again: a second revocation
				// of a revoked certificate changes nothing the test reads.
				mine = append(mine, revoke)
			}
			// No busy loop against a database that is not there.
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func failoverIssue(tx *Tx, raw []byte, serial string) error {
	if err := tx.ReserveSerial(raw, "req-"+serial); err != nil {
		return err
	}
	c := &Certificate{Serial: raw, DER: append([]byte("der "), raw...), Issuer: "failover", RequestID: "req-" + serial,
		Status: StatusGood, NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour)}
	if err := tx.PutCertificate(c); err != nil {
		return err
	}
	if err := tx.SetSerialState(raw, SerialIssued); err != nil {
		return err
	}
	_, err := tx.Append(Event{Actor: System, Action: "certificate.issue", Object: serial, Outcome: OutcomeOK})
	return err
}

func failoverRevoke(tx *Tx, serial string) error {
	raw, _ := hex.DecodeString(serial)
	c, err := tx.Certificate(raw)
	if err != nil {
		return err
	}
	c.Status, c.RevokedAt, c.Reason = StatusRevoked, time.Now(), 1
	if err := tx.PutCertificate(c); err != nil {
		return err
	}
	_, err = tx.Append(Event{Actor: System, Action: "certificate.revoke", Object: serial, Outcome: OutcomeOK})
	return err
}

// waitFor polls cond until it holds, failing the test after bound.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(bound); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPostgresFailoverDuringCommit: the primary is killed and the standby
// promoted while a commit is on its way. The commit never reached the
// standby, which says so at once: the update fails as ErrWrite without
// holding up the writes after it until its deadline, and the next one
// succeeds on the new primary.
func TestPostgresFailoverDuringCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a primary and a standby")
	}
	primary := pgtest.Start(t)
	standby := primary.StartStandby(t, "signerd_standby")
	dsn := primary.CreateDatabase(t)
	mustUpgrade(t, dsn)
	b := openTestPostgres(t, pgtest.FailoverDSN(t, dsn, primary, standby), PostgresOptions{})
	mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "before", "1") })

	b.testHookBeforeCommit = func(uint32) {
		primary.Kill(t)
		standby.Promote(t)
	}
	err := b.update(func(r records) error { return putAll(r, tableCerts, "lost", "2") })
	if !errors.Is(err, ErrWrite) || !strings.Contains(err.Error(), "never reached the server now answering") {
		t.Errorf("update whose commit was cut off by the failover: %v; want ErrWrite saying the new primary never had it", err)
	}
	b.testHookBeforeCommit = nil
	mustUpdate(t, b, func(r records) error { return putAll(r, tableCerts, "after", "3") })
	mustView(t, b, func(r records) error {
		wantRecords(t, r, tableCerts, "after", "3", "before", "1")
		return nil
	})
}
