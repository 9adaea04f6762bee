package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"signerd/api"
	"signerd/crl"
	"signerd/publish"
	"signerd/store"
)

// CRLSchedule is when the engine signs CRLs without being asked (SPEC
// §5.5): every shard's complete CRL at least every Interval, a change
// (revocation, hold, restore) listed within AfterRevocation, and deltas
// every DeltaInterval. Its zero value signs none; signerd always sets it.
type CRLSchedule struct {
	// Interval is the most time between a shard's complete CRLs. The
	// CRL's validity (Config.CRLValidity) must outlast it by half an
	// interval at least: the time failed signings are retried before
	// relying parties find the last CRL expired.
	Interval time.Duration
	// AfterRevocation bounds how long a change waits to be listed. A
	// shard's CRLs are signed at most this often for changes, so a burst
	// of revocations goes into few CRLs (default 5m; at most Interval).
	AfterRevocation time.Duration
	// DeltaInterval, if set, has each shard's delta CRL signed this
	// often, valid DeltaValidity (default twice DeltaInterval).
	DeltaInterval time.Duration
	DeltaValidity time.Duration
	// Retry is the wait before a failed signing is tried again (default
	// 30s, or an eighth of the validity left over the interval if that is
	// shorter), doubling with each failure up to that eighth or 5 minutes,
	// whichever is shorter; an HSM or store seen back ends the wait.
	Retry time.Duration
	// Poll is how often the store is read for changes other nodes made
	// and for CRLs they signed (default a quarter of AfterRevocation, at
	// most 30s).
	Poll time.Duration
}

// MinCRLStep bounds the schedule's shortest waits from below, so that a
// mistyped setting cannot have it spin.
const MinCRLStep = 10 * time.Millisecond

// on reports whether the engine signs CRLs by itself.
func (s CRLSchedule) on() bool { return s.Interval > 0 }

// withDefaults fills in the zero fields, for CRLs valid validity.
func (s CRLSchedule) withDefaults(validity time.Duration) CRLSchedule {
	if !s.on() {
		return s
	}
	if s.AfterRevocation <= 0 {
		s.AfterRevocation = min(5*time.Minute, s.Interval)
	}
	if s.DeltaValidity <= 0 {
		s.DeltaValidity = 2 * s.DeltaInterval
	}
	if s.Retry <= 0 {
		s.Retry = max(min(30*time.Second, (validity-s.Interval)/8), MinCRLStep)
	}
	if s.Poll <= 0 {
		s.Poll = max(min(s.AfterRevocation/4, 30*time.Second), MinCRLStep)
	}
	return s
}

// validate refuses a schedule under which a CRL could expire before the
// next is due, with validity the complete CRLs' validity.
func (s CRLSchedule) validate(validity time.Duration) error {
	if !s.on() {
		return nil
	}
	if validity < time.Second || (s.DeltaInterval > 0 && s.DeltaValidity < time.Second) {
		return &ConfigError{"CRLValidity", fmt.Errorf("%s (delta %s): under a second; a CRL's times have seconds", validity, s.DeltaValidity)}
	}
	if s.AfterRevocation < MinCRLStep || s.Retry < MinCRLStep || s.Poll < MinCRLStep || (s.DeltaInterval > 0 && s.DeltaInterval < MinCRLStep) {
		return &ConfigError{"CRLSchedule", fmt.Errorf("after_revocation %s, retry %s, poll %s, delta interval %s: each at least %s",
			s.AfterRevocation, s.Retry, s.Poll, s.DeltaInterval, MinCRLStep)}
	}
	if s.Retry >= validity-s.Interval {
		return &ConfigError{"CRLSchedule.Retry", fmt.Errorf("%s: not shorter than what the validity leaves over the interval (%s), no retry would come before the CRL expired", s.Retry, validity-s.Interval)}
	}
	if validity < s.Interval+s.Interval/2 {
		return &ConfigError{"CRLValidity", fmt.Errorf("%s: must be at least 1.5 × the CRL interval %s, to leave time for retries", validity, s.Interval)}
	}
	if s.AfterRevocation > s.Interval {
		return &ConfigError{"CRLSchedule.AfterRevocation", fmt.Errorf("%s: longer than the interval %s", s.AfterRevocation, s.Interval)}
	}
	if s.DeltaInterval > 0 {
		if s.DeltaInterval >= s.Interval {
			return &ConfigError{"CRLSchedule.DeltaInterval", fmt.Errorf("%s: not shorter than the interval %s of complete CRLs", s.DeltaInterval, s.Interval)}
		}
		if s.DeltaValidity < s.DeltaInterval+s.DeltaInterval/2 {
			return &ConfigError{"CRLSchedule.DeltaValidity", fmt.Errorf("%s: must be at least 1.5 × the delta interval %s", s.DeltaValidity, s.DeltaInterval)}
		}
	}
	return nil
}

// CRLMetrics, if Config.Metrics implements it, is told of each CRL the
// schedule signs (with its size in bytes) or fails to sign or publish.
type CRLMetrics interface {
	CRLSigned(name CRLName, size int)
	CRLFailed(name CRLName)
}

// CRLFailure is a series whose scheduled signing, or publication, fails.
type CRLFailure struct {
	Name CRLName
	// Publishing: the CRL is signed and recorded (GET /v1/crl serves it);
	// writing it into the publication directory fails.
	Publishing bool
	// Since is the first failure of this run of them, Attempts how many.
	Since    time.Time
	Attempts int
	Code     api.Code
	Error    string
	// Expires is the nextUpdate of the series' latest CRL, by which a good
	// one must be signed (zero: none signed yet).
	Expires time.Time
	// last is the last attempt, next when the next is due; resumed: an
	// attempt was made at once when the HSM or store came back, which is
	// done once per run of failures (a key that alone fails would
	// otherwise be tried again at every other key's success).
	last, next time.Time
	resumed    bool
}

// failureKey names a failing step: a series' signing or its publication,
// each retried on its own, so that a directory that takes no file holds
// up no CRL.
type failureKey struct {
	name       CRLName
	publishing bool
}

// CRLFailures are the series whose scheduled signing fails now.
func (e *Engine) CRLFailures() []CRLFailure { return e.schedule.failures() }

// crlSchedule signs CRLs on CRLSchedule, on every node: each reads the
// shards' states, and the one whose reservation transaction finds a CRL
// due signs it (the transaction that takes its number re-checks that no
// other node signed or claimed it meanwhile), so a shard gets one CRL per
// interval, not one per node. It also writes into the publication
// directory every CRL the store holds that the directory lacks: those
// other nodes signed, and those a crash or a failed write left out.
type crlSchedule struct {
	e   *Engine
	cfg CRLSchedule

	worker

	mu      sync.Mutex
	failing map[failureKey]*CRLFailure
	// shown is the latest number written into the publication directory
	// per series, as far as this process knows.
	shown map[CRLName]uint64
}

func newCRLSchedule(e *Engine, cfg CRLSchedule) *crlSchedule {
	return &crlSchedule{e: e, cfg: cfg, worker: newWorker(), failing: map[failureKey]*CRLFailure{}, shown: map[CRLName]uint64{}}
}

// StartCRLSchedule starts signing CRLs on Config.CRLSchedule (if set):
// the daemon starts it once it has recorded its own start, so that the
// audit log shows signerd started before anything it signed by itself.
func (e *Engine) StartCRLSchedule() { e.schedule.start(e.schedule.cfg.on(), e.schedule.run) }

// changed tells the schedule a certificate's listing changed here.
func (s *crlSchedule) changed() { s.wake() }

func (s *crlSchedule) run() {
	for s.wait(min(max(s.pass(), 10*time.Millisecond), s.cfg.Poll)) {
	}
}

// shardView is what one pass reads of a shard.
type shardView struct {
	name    CRLName
	state   store.CRLState
	pending bool // a change of the shard is not yet on its complete CRL
}

// pass signs every CRL due now and republishes what the directory lacks;
// it returns how long until the next is due.
func (s *crlSchedule) pass() time.Duration {
	views, err := s.read()
	if err != nil {
		s.e.log.Warn("CRL schedule: read the store", "err", err)
		return s.cfg.Poll
	}
	wait := s.cfg.Interval
	for _, v := range views {
		select {
		case <-s.stop:
			return 0
		default:
		}
		now := s.e.cfg.Now()
		if f := s.failure(failureKey{v.name, true}); f == nil || !f.next.After(now) {
			s.republish(v)
		}
		if v.name.Delta && v.state.Number == 0 {
			continue // a delta follows a complete CRL, signed first
		}
		at := s.dueAt(v)
		if f := s.failure(failureKey{v.name, false}); f != nil && f.next.After(at) {
			if f.resumed || !s.outageOver(f) {
				at = f.next
			} else {
				s.resumed(failureKey{v.name, false})
			}
		}
		if at.After(now) {
			wait = min(wait, at.Sub(now))
			continue
		}
		s.sign(v)
	}
	return wait
}

// read reads every series' state, and which shards have changes not yet
// on their complete CRL.
func (s *crlSchedule) read() ([]shardView, error) {
	var views []shardView
	err := s.e.view(func(tx *store.Tx) error {
		views = views[:0]
		for _, iss := range s.e.cfg.Issuers {
			id, shards := iss.ID(), s.e.layouts.shards(iss.ID())
			n := shards.count()
			first := len(views)
			least := uint64(0)
			for k := range n {
				st, err := tx.CRLShardState(id, k)
				if err != nil {
					return err
				}
				views = append(views, shardView{name: CRLName{Issuer: id, Shard: k}, state: st})
				if k == 0 || st.BaseSeq < least {
					least = st.BaseSeq
				}
			}
			shardViews := views[first:]
			err := tx.CRLChanges(id, least, func(c store.CRLChange) error {
				v := &shardViews[crl.Shard(c.Serial, n)]
				if c.Seq > v.state.BaseSeq {
					v.pending = true
				}
				return nil
			})
			if err != nil {
				return err
			}
			if s.cfg.DeltaInterval > 0 {
				for _, v := range shardViews {
					d := v
					d.name.Delta = true
					views = append(views, d)
				}
			}
		}
		return nil
	})
	return views, err
}

// expires is when the latest CRL of v's series expires.
func (v shardView) expires() time.Time {
	if v.name.Delta {
		return v.state.DeltaNextUpdate
	}
	return v.state.NextUpdate
}

// dueAt is when v's next CRL is due: a complete CRL an interval after the
// last, or AfterRevocation after it when a change waits (at once if
// that is past); a delta a delta interval after the last delta.
func (s *crlSchedule) dueAt(v shardView) time.Time {
	st := v.state
	if st.Number == 0 {
		return time.Time{} // now
	}
	if v.name.Delta {
		return st.DeltaThisUpdate.Add(s.cfg.DeltaInterval)
	}
	at := st.ThisUpdate.Add(s.cfg.Interval)
	if soon := st.ThisUpdate.Add(s.cfg.AfterRevocation); v.pending && soon.Before(at) {
		at = soon
	}
	return at
}

// sign signs v's CRL unless, in the transaction that would take its
// number, another node has signed or claimed it since v was read.
func (s *crlSchedule) sign(v shardView) {
	ctx, cancel := context.WithTimeout(context.Background(), s.e.cfg.SignTimeout)
	defer cancel()
	node := s.e.store.Node()
	due := func(st store.CRLState, now time.Time) bool {
		if st.Claim != nil && st.Claim.Node != node && st.Claim.Until.After(now) {
			return false
		}
		if v.name.Delta {
			return st.Number != 0 && st.DeltaNumber == v.state.DeltaNumber
		}
		return st.Number == v.state.Number
	}
	der, err := s.e.signCRL(ctx, store.System, v.name, due)
	switch {
	case errors.Is(err, errNotDue):
		return
	case err != nil:
		s.alarm(failureKey{v.name, false}, err, v.expires())
		return
	}
	s.recovered(failureKey{v.name, false})
	if m, ok := s.e.cfg.Metrics.(CRLMetrics); ok {
		m.CRLSigned(v.name, len(der))
	}
}

// outageOver reports whether the HSM or the store that failed f's last
// attempt has come back since: the wait the failures built up is then
// over, and the CRL is signed at once rather than after it.
func (s *crlSchedule) outageOver(f *CRLFailure) bool {
	switch f.Code {
	case api.CodeHSMUnavailable:
		h := s.e.HSM()
		return h.Up && h.Since.After(f.last)
	case api.CodeStoreUnavailable:
		st := s.e.Store()
		return st.Writable && st.Since.After(f.last)
	}
	return false
}

// republish writes v's latest CRL from the store into the publication
// directory if the directory lacks it.
func (s *crlSchedule) republish(v shardView) {
	pub := s.e.cfg.Publish
	number := v.state.Number
	if v.name.Delta {
		number = v.state.DeltaNumber
	}
	if pub == nil || number == 0 {
		return
	}
	s.mu.Lock()
	known := s.shown[v.name]
	s.mu.Unlock()
	if known >= number {
		return
	}
	series := publish.Series{Issuer: v.name.Issuer, Shard: v.name.Shard, Delta: v.name.Delta}
	if have, ok, err := pub.LatestCRL(series); err == nil && ok && have >= number {
		s.published(v.name, have)
		return
	}
	der, number, err := s.e.latestCRL(v.name)
	if err != nil {
		s.alarm(failureKey{v.name, true}, fmt.Errorf("read CRL to publish: %w", err), v.expires())
		return
	}
	if _, err := pub.PutCRL(series, number, der); err != nil {
		s.alarm(failureKey{v.name, true}, fmt.Errorf("publish CRL #%d: %w", number, err), v.expires())
		return
	}
	s.published(v.name, number)
}

// published notes that number is in the directory for name.
func (s *crlSchedule) published(name CRLName, number uint64) {
	s.mu.Lock()
	s.shown[name] = max(s.shown[name], number)
	s.mu.Unlock()
	s.recovered(failureKey{name, true})
}

// alarm records a failure of name's signing or publication: logged,
// counted, shown by health, and tried again after a backoff. The failed
// signature itself is audited where it failed (recordCRL).
func (s *crlSchedule) alarm(key failureKey, err error, expires time.Time) {
	now := s.e.cfg.Now()
	s.mu.Lock()
	f := s.failing[key]
	if f == nil {
		f = &CRLFailure{Name: key.name, Publishing: key.publishing, Since: now}
		s.failing[key] = f
	}
	f.Attempts++
	f.Error, f.Code, f.Expires, f.last = err.Error(), CodeOf(err), expires, now
	backoff := s.backoff(f.Attempts)
	f.next = now.Add(backoff)
	attempts := f.Attempts
	s.mu.Unlock()
	what := "CRL signing failed"
	if key.publishing {
		what = "CRL publication failed"
	}
	s.e.log.Error(what, "crl", key.name.String(), "attempt", attempts, "retry_in", backoff.String(), "err", err)
	if m, ok := s.e.cfg.Metrics.(CRLMetrics); ok {
		m.CRLFailed(key.name)
	}
}

// maxCRLBackoff bounds the wait between two attempts, whatever the
// validity leaves: a CRL is tried at least this often while it fails.
const maxCRLBackoff = 5 * time.Minute

// backoff is the wait after the attempts-th failure in a row: Retry,
// doubling, up to an eighth of the validity left over the interval and
// maxCRLBackoff.
func (s *crlSchedule) backoff(attempts int) time.Duration {
	ceiling := min(max((s.e.cfg.CRLValidity-s.cfg.Interval)/8, s.cfg.Retry), max(maxCRLBackoff, s.cfg.Retry))
	if attempts > 30 {
		return ceiling
	}
	return min(s.cfg.Retry<<(attempts-1), ceiling)
}

// resumed notes that key's failure was tried again at once on a
// recovery.
func (s *crlSchedule) resumed(key failureKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.failing[key]; f != nil {
		f.resumed = true
	}
}

// recovered clears key's failure, if any.
func (s *crlSchedule) recovered(key failureKey) {
	s.mu.Lock()
	f := s.failing[key]
	delete(s.failing, key)
	s.mu.Unlock()
	if f != nil {
		s.e.log.Info("CRL signing or publication recovered", "crl", key.name.String(), "publishing", key.publishing,
			"failed_since", f.Since, "attempts", f.Attempts)
	}
}

func (s *crlSchedule) failure(key failureKey) *CRLFailure {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.failing[key]; f != nil {
		c := *f
		return &c
	}
	return nil
}

func (s *crlSchedule) failures() []CRLFailure {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CRLFailure, 0, len(s.failing))
	for _, f := range s.failing {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b CRLFailure) int { return a.Since.Compare(b.Since) })
	return out
}
