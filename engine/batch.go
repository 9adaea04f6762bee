package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/issuance"
	"signerd/store"
)

// Test hooks run after the batch's first transaction and after signing, so
// a test can kill the process exactly between the two transactions.
var testHookReserved, testHookSigned func()

// Test hooks of the commit stage: one injects a refusal of a reservation
// (its request ids), the other is told how many batches each transaction
// carried.
var (
	testHookReserving func(ids []string) error
	testHookCommitted func(batches int)
)

var kindStatistic = map[string]string{kindIssue: store.StatIssued, kindRenew: store.StatRenewed, kindExtend: store.StatExtended}

// issueStages are the stages a batch of certificate orders (issue,
// renewal, extension) goes through in the BatchQueue: prepare, commit
// (reserve), sign, commit (record). It holds what they use: the store and
// the HSM through their health, the clock's guard, the issuer that signs,
// the random source serials come from.
type issueStages struct {
	// layouts say which CRL each certificate names.
	layouts *crlLayouts
	// ocsp is told of each certificate issued, whose response is due.
	ocsp        *ocspSigner
	store       *storeHealth
	hsm         *hsmHealth
	clock       *clock
	issuer      *issuance.Issuer // the active one: every batch's
	random      io.Reader
	metrics     Metrics
	log         *slog.Logger
	node        string // the store's node ("" if not shared)
	signTimeout time.Duration
	now         func() time.Time
	// signingKeys are the parsed keys of the requests being signed.
	signingKeys tbsKeys
}

// A batch goes from checked orders to answered callers through stages,
// each on its own goroutine (BatchQueue), so the HSM is never idle while
// the store syncs:
//
// prepare:
//  1. stamp one time for the batch (the clock rule);
//  2. sort out replays, conflicts and orders already in flight;
//  3. draw serials and build and lint each certificate, in parallel.
//
// commit (reserve):
//  4. a transaction records every request as signing, with its serial
//     and TBS (record before sign); a renewal or extension checks there
//     again that the certificate it replaces is current and claims it, so
//     of several replacements only one is ever signed; and every request
//     checks there again that its key is not compromised nor certified,
//     or being signed, for another use, so of two requests for one key
//     with different uses only one is ever signed.
//
// sign: 5. the HSM signs, spread over its sessions.
//
// commit (record):
//  6. a transaction records every certificate, or burns the serial of
//     every attempt that failed, with the audit events (record before
//     answer); a replacement whose predecessor was revoked or held, or a
//     certificate whose key was revoked for keyCompromise, while it was
//     signed is not recorded but burned (it never leaves signerd);
//  7. the queue answers each caller with its own result.
//
// Steps 6 and 4 of consecutive batches share one transaction whenever
// both are ready (commit): one commit per batch under load. A record
// comes before a reservation in it, so a reservation sees the keys and
// claims the record settled.
func (s *issueStages) prepare(b *batch) {
	s.metrics.Batch(len(b.jobs))
	now, err := s.clock.read()
	if err != nil {
		s.clock.alarm(err, len(b.jobs)) // each job's caller records its refusal (auditRefusal)
		failAll(b.jobs, err)
		return
	}
	// A time outside the issuer's validity signs nothing: the operator's
	// problem, refused before anything is reserved (and before a renewal
	// or extension is judged on its old certificate, which ends with the
	// issuer), and it does not raise the guard.
	if err := issuerValidAt(s.issuer, now); err != nil {
		failAll(b.jobs, err)
		return
	}
	// Raised now, not when the batch is recorded, so a lifecycle change
	// stamped meanwhile is not dated before it.
	s.clock.advance(now)
	b.now, b.iss = now, s.issuer
	s.burnStranded()
	if err := s.store.view(func(tx *store.Tx) error {
		if err := tx.Prefetch(prefetchOf(b.jobs)); err != nil {
			return err
		}
		for _, j := range b.jobs {
			s.classify(tx, j, now)
		}
		return nil
	}); err != nil {
		failAll(b.jobs, errorf(api.CodeInternal, "batch %d: read store: %v", b.n, err))
		return
	}
	attempts := pending(b.jobs)
	parallel(attempts, func(j *job) {
		serial, err := issuance.NewSerial(s.random)
		if err != nil {
			j.fail(errorf(api.CodeHSMUnavailable, "%v", err))
			return
		}
		d, err := build(j.o, b.iss, serial.Bytes(), now, s.layouts.shards(b.iss.ID()))
		if err != nil {
			j.fail(err)
			return
		}
		j.draft = d
	})
	b.attempts = pending(attempts)
}

// commit writes, in one transaction, the results of signed and the
// reservation of prepared, results first. If the transaction fails for a
// reason other than the store's, which may be one batch's alone (a
// refused CRL layout, the clock), each is tried again alone, so one
// batch's refusal fails no other.
func (s *issueStages) commit(signed, prepared *batch) {
	var parts []commitPart
	if signed != nil {
		parts = append(parts, commitPart{reads: recordReads(signed), write: func(tx *store.Tx) error { return s.recordTx(tx, signed) },
			done: func(err error) { s.recorded(signed, err) }})
	}
	if prepared != nil && len(prepared.attempts) > 0 {
		parts = append(parts, commitPart{reads: prefetchOf(prepared.attempts), write: func(tx *store.Tx) error { return s.reserveTx(tx, prepared) },
			done: func(err error) { s.reservedTx(prepared, err) }})
	}
	if len(parts) == 0 {
		return
	}
	err := s.store.update(func(tx *store.Tx) error { return writeParts(tx, parts...) })
	if testHookCommitted != nil && err == nil {
		testHookCommitted(len(parts))
	}
	if err != nil && len(parts) > 1 && !storeFailed(err) {
		for _, p := range parts {
			p.done(s.store.update(func(tx *store.Tx) error { return writeParts(tx, p) }))
		}
		return
	}
	for _, p := range parts {
		p.done(err)
	}
}

// commitPart is one batch's share of a commit: what it reads, what it
// writes in the transaction, and what it does once the transaction ends.
type commitPart struct {
	reads store.Prefetch
	write func(*store.Tx) error
	done  func(error)
}

// writeParts writes parts in tx, every part's reads named first, so that
// a database fetches them all in one round trip.
func writeParts(tx *store.Tx, parts ...commitPart) error {
	for _, p := range parts {
		if err := tx.Prefetch(p.reads); err != nil {
			return err
		}
	}
	for _, p := range parts {
		if err := p.write(tx); err != nil {
			return err
		}
	}
	return nil
}

// reserveTx records every drafted request of b as signing, with its
// serial and TBS (record before sign). It may run more than once (commit
// tries a part again alone), so it starts from the drafts each time.
func (s *issueStages) reserveTx(tx *store.Tx, b *batch) error {
	for _, j := range b.attempts {
		j.err = nil
	}
	if testHookReserving != nil {
		ids := make([]string, len(b.attempts))
		for i, j := range b.attempts {
			ids[i] = j.o.id
		}
		if err := testHookReserving(ids); err != nil {
			return err
		}
	}
	signing, err := keysBeingSigned(tx, &s.signingKeys)
	if err != nil {
		return err
	}
	for _, j := range b.attempts {
		if err := s.reserve(tx, j, b.now, &signing); err != nil {
			return err
		}
	}
	if err := s.layouts.pin(tx, b.iss.ID()); err != nil {
		return err
	}
	return s.clock.noteSigningTime(tx, b.now)
}

// reservedTx ends b's reservation: on success b.reserved is what the HSM
// will sign; on failure every attempt fails.
func (s *issueStages) reservedTx(b *batch, err error) {
	if err != nil {
		if storeFailed(err) {
			// A database may have committed what it could not confirm
			// (the connection died at the commit, and the server could not
			// say): the requests would then be left signing, answered
			// request_in_progress until a restart. They are stranded, so
			// the next batch burns whatever of them was recorded.
			s.store.strand(reservedDrafts(b.attempts))
		}
		failAll(b.attempts, errorf(storeCode(err), "batch %d: record requests: %v", b.n, err))
		return
	}
	s.store.note(nil)
	s.layouts.pinCommitted()
	if testHookReserved != nil {
		testHookReserved()
	}
	b.reserved = pending(b.attempts)
}

// reservedDrafts are the requests attempts would have recorded as signing,
// by id and serial.
func reservedDrafts(attempts []*job) []*store.Request {
	rs := make([]*store.Request, 0, len(attempts))
	for _, j := range attempts {
		rs = append(rs, &store.Request{ID: j.o.id, Serial: j.draft.serial})
	}
	return rs
}

// sign has the HSM sign every reserved certificate of b.
func (s *issueStages) sign(b *batch) {
	if len(b.reserved) == 0 {
		return
	}
	b.signed = make([]*smx509.Certificate, len(b.reserved))
	b.signErr = make([]error, len(b.reserved))
	ctx, cancel := context.WithTimeout(context.Background(), s.signTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, j := range b.reserved {
		wg.Go(func() { b.signed[i], b.signErr[i] = s.signDraft(ctx, j.draft, b.iss) })
	}
	wg.Wait()
	if testHookSigned != nil {
		testHookSigned()
	}
}

// signDraft has the HSM sign d and returns the final certificate, checked
// by issuance: the signature verified, the TBS byte for byte the one
// linted and recorded, the lints passed again.
func (s *issueStages) signDraft(ctx context.Context, d *draft, iss *issuance.Issuer) (*smx509.Certificate, error) {
	out, err := s.hsm.issue(ctx, iss, d.tok)
	if err != nil {
		return nil, err
	}
	return out.Certificate, nil
}

// recordTx records what the HSM signed in b and burns what it did not.
// It may run more than once (commit tries a part again alone), so it
// starts from the signatures each time.
func (s *issueStages) recordTx(tx *store.Tx, b *batch) error {
	for _, j := range b.reserved {
		j.err, j.cert = nil, nil
	}
	for i, j := range b.reserved {
		if b.signErr[i] != nil {
			if err := s.fail(tx, j, b.signErr[i]); err != nil {
				return err
			}
			continue
		}
		if err := s.recordCertificate(tx, j, b.iss, b.signed[i], b.now); err != nil {
			return err
		}
	}
	return nil
}

// recordReads names what recordTx reads of b.
func recordReads(b *batch) store.Prefetch {
	p := prefetchOf(b.reserved)
	for _, j := range b.reserved {
		p.Statistics = append(p.Statistics, store.StatisticKey(store.Month(b.now), j.o.profile.Name, kindStatistic[j.o.kind]))
	}
	return p
}

// recorded ends b's record: on failure nothing is answered with an
// unrecorded certificate.
func (s *issueStages) recorded(b *batch, err error) {
	if err != nil {
		// The requests stay "signing" until a later transaction (or the
		// next start) burns their serials.
		s.log.Error("record signed batch", "batch", b.n, "err", err)
		for _, j := range b.reserved {
			j.cert = nil
			j.fail(errorf(storeCode(err), "batch %d: record certificates: %v", b.n, err))
		}
		s.burnAfterFailure(b.reserved)
		return
	}
	s.store.note(nil)
	s.ocsp.changed()
}

// classify answers what needs no signing: a replay of an issued request,
// a conflicting reuse of a request id, a request already in flight, or a
// renewal of a certificate that is not current.
func (s *issueStages) classify(tx *store.Tx, j *job, now time.Time) {
	r, err := tx.Request(j.o.id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.checkReplaced(tx, j, now)
		return
	case err != nil:
		j.fail(errorf(api.CodeInternal, "read request %s: %v", j.o.id, err))
		return
	case !bytes.Equal(r.Digest, j.o.digest):
		j.fail(errorf(api.CodeRequestConflict, "request_id %q was used before for a different request", j.o.id))
		return
	}
	switch r.State {
	case store.RequestIssued:
		c, err := tx.Certificate(r.Serial)
		if err != nil {
			j.fail(errorf(api.CodeInternal, "request %s: %v", j.o.id, err))
			return
		}
		j.cert = c
	case store.RequestSigning:
		j.fail(s.inProgress(tx, j.o.id))
	default: // failed before: try again with a new serial
		s.checkReplaced(tx, j, now)
	}
}

// inProgress is the answer to a request whose id is being signed. Being
// signed by another node, it says which: the RA retrying here after that
// node went down keeps getting this answer until the node's next start
// ends the attempt (burns its serial), after which the retry signs anew.
func (s *issueStages) inProgress(tx *store.Tx, id string) *Error {
	node, signing, err := tx.SigningNode(id)
	if err == nil && signing && node != s.node {
		return errorf(api.CodeInProgress, "request %q is being signed by node %s; retry to get its certificate "+
			"(if node %s stopped, its next start ends that attempt and a retry signs the request anew)", id, node, node)
	}
	return errorf(api.CodeInProgress, "request %q is being signed; retry to get its certificate", id)
}

// checkReplaced answers early a renewal or extension of a certificate that
// cannot be replaced; reserve checks again in the transaction that counts.
func (s *issueStages) checkReplaced(tx *store.Tx, j *job, now time.Time) {
	if j.o.replaces == nil {
		return
	}
	if _, err := replaceable(tx, j.o, now); err != nil {
		j.fail(err)
	}
}

// replaceable returns the certificate o renews or extends if o may replace
// it at now (the batch's time): it is good, has not expired, was not
// replaced, and no other request is replacing it. An expired certificate
// is not renewed or extended: its holder applies anew (issue), as for any
// certificate that is no longer valid. The error is an *Error, with
// api.CodeInternal if the store failed.
func replaceable(tx *store.Tx, o *order, now time.Time) (*store.Certificate, error) {
	old, err := tx.Certificate(o.replaces)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errorf(api.CodeNotFound, "no certificate with serial %x", o.replaces)
	case err != nil:
		return nil, errorf(api.CodeInternal, "read certificate %x: %v", o.replaces, err)
	case old.SupersededBy != nil:
		return nil, errorf(api.CodeAlreadySuperseded, "certificate %x was replaced by %x; only a current certificate can be renewed or extended", o.replaces, old.SupersededBy)
	}
	if old.Superseding != "" && old.Superseding != o.id {
		live, err := claimInFlight(tx, old)
		if err != nil {
			return nil, errorf(api.CodeInternal, "certificate %x: %v", o.replaces, err)
		}
		if live {
			return nil, errorf(api.CodeAlreadySuperseded, "certificate %x is being replaced by another request", o.replaces)
		}
	}
	switch {
	case old.Status != store.StatusGood:
		return nil, errorf(api.CodeInvalidState, "certificate %x is %s; only a current certificate can be renewed or extended", o.replaces, old.Status)
	case !old.NotAfter.After(now):
		return nil, errorf(api.CodeInvalidState, "certificate %x expired %s; an expired certificate is not renewed or extended, its holder applies anew",
			o.replaces, old.NotAfter.Format(time.RFC3339))
	}
	return old, nil
}

// claimInFlight reports whether the renewal or extension that claimed old
// (old.Superseding) is still being signed to replace it. A claim whose
// request is not (failed, issued, missing, or recorded as replacing
// another certificate) is a leftover: a signerd from before claims were
// released, or a store edited or restored, can leave one, and it must not
// keep the certificate from being replaced for ever. It counts as
// released; the next replacement's reserve overwrites it. No start-up
// sweep over all certificates is needed for that.
func claimInFlight(tx *store.Tx, old *store.Certificate) (bool, error) {
	r, err := tx.Request(old.Superseding)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read request %s: %w", old.Superseding, err)
	}
	return r.State == store.RequestSigning && bytes.Equal(r.Replaces, old.Serial), nil
}

// reserve records j's request as signing with its serial and TBS. A
// request that turns out to be a duplicate within this batch, or a serial
// drawn before, fails j alone. signing holds the keys being signed (see
// keysBeingSigned); j's is added once it is reserved.
func (s *issueStages) reserve(tx *store.Tx, j *job, now time.Time, signing *[]keyInUse) error {
	r, err := tx.Request(j.o.id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		r = &store.Request{ID: j.o.id, Digest: j.o.digest, Kind: j.o.kind, Profile: j.o.profile.Name, Created: now}
	case err != nil:
		return err
	case !bytes.Equal(r.Digest, j.o.digest):
		j.fail(errorf(api.CodeRequestConflict, "request_id %q was used before for a different request", j.o.id))
		return nil
	case r.State != store.RequestFailed:
		j.fail(s.inProgress(tx, j.o.id))
		return nil
	}
	old, err := reservable(tx, j.o, now, *signing)
	if err != nil {
		if CodeOf(err) == api.CodeInternal {
			return err
		}
		j.fail(err)
		return nil
	}
	if err := tx.ReserveSerial(j.draft.serial, j.o.id); err != nil {
		if errors.Is(err, store.ErrSerialUsed) {
			j.fail(errorf(api.CodeInternal, "serial collision; retry the request"))
			return nil
		}
		return err
	}
	if old != nil {
		if old.Superseding != "" && old.Superseding != j.o.id {
			s.log.Warn("leftover claim on a certificate released", "serial", store.HexSerial(old.Serial),
				"claimed_by", old.Superseding, "request_id", j.o.id)
		}
		old.Superseding = j.o.id
		if err := tx.PutCertificate(old); err != nil {
			return err
		}
	}
	r.State, r.Serial, r.TBS, r.Error, r.Updated = store.RequestSigning, j.draft.serial, j.draft.tok.TBS(), "", now
	r.Replaces = j.o.replaces
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	*signing = append(*signing, keyInUse{pub: j.o.pub, usage: j.o.profile.LintUsage().KeyUsage(), serial: j.draft.serial})
	return nil
}

// reservable checks again, where it counts, what may have changed since
// the request was taken. The certificate a renewal or extension replaces
// (returned, for reserve to claim): a revocation or another replacement
// may have been recorded since classify read it. Claiming it in reserve's
// transaction makes every later replacement see it taken, and lets record
// tell whether it was revoked or held while this one was signed. The
// key's compromise and its use: a keyCompromise revocation, or a
// certificate or request for the key with another use, may have been
// recorded since; requests reserved but not yet recorded (signing) count
// as well. An error with api.CodeInternal is the store failing; any other
// refuses the request.
func reservable(tx *store.Tx, o *order, now time.Time, signing []keyInUse) (*store.Certificate, error) {
	var old *store.Certificate
	if o.replaces != nil {
		var err error
		if old, err = replaceable(tx, o, now); err != nil {
			return nil, err
		}
	}
	if err := checkKeyUsable(tx, o); err != nil {
		return nil, err
	}
	if err := keyUsedOtherwise(tx, o, signing); err != nil {
		return nil, err
	}
	return old, nil
}

// recordCertificate stores an issued certificate with its audit event and statistics.
// A renewal or extension is recorded only if the certificate it replaces is
// still good and still claimed by it; otherwise its serial is burned. It
// is judged expired or not at now, the batch's time that reserve judged
// it at and that the new certificate's notBefore carries, so reserve and
// record agree: a certificate valid when its replacement was reserved is
// replaced without a gap even if it expires while the HSM signs.
func (s *issueStages) recordCertificate(tx *store.Tx, j *job, iss *issuance.Issuer, c *smx509.Certificate, now time.Time) error {
	o := j.o
	var old *store.Certificate
	if o.replaces != nil {
		var err error
		if old, err = tx.Certificate(o.replaces); err != nil {
			return err
		}
		if old.Status != store.StatusGood || old.Superseding != o.id || !old.NotAfter.After(now) {
			why := fmt.Sprintf("certificate %x became %s while its %s was being signed", o.replaces, old.Status, o.kind)
			switch {
			case old.Status != store.StatusGood:
			case old.Superseding != o.id: // claimed by another request: cannot happen while this one is signing
				why = fmt.Sprintf("certificate %x is no longer claimed by this %s", o.replaces, o.kind)
			default: // reserve judged it at the same time: cannot happen
				why = fmt.Sprintf("certificate %x expired %s", o.replaces, old.NotAfter.Format(time.RFC3339))
			}
			return s.discard(tx, j, api.CodeInvalidState, why)
		}
	}
	if err := checkKeyUsable(tx, o); err != nil {
		if CodeOf(err) == api.CodeInternal {
			return err
		}
		return s.discard(tx, j, CodeOf(err), "its key was revoked for keyCompromise while it was being signed")
	}
	rec := &store.Certificate{Serial: j.draft.serial, DER: c.Raw, Profile: o.profile.Name, Subject: c.Subject.String(),
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, Issuer: iss.ID(), RequestID: o.id, Status: store.StatusGood,
		Replaces: o.replaces}
	if err := tx.PutCertificate(rec); err != nil {
		return err
	}
	if err := tx.SetSerialState(rec.Serial, store.SerialIssued); err != nil {
		return err
	}
	if err := s.ocsp.markDue(tx, rec.Issuer, rec.Serial, now); err != nil {
		return err
	}
	r, err := tx.Request(o.id)
	if err != nil {
		return err
	}
	r.State, r.Updated = store.RequestIssued, now
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	if old != nil {
		old.Status, old.SupersededBy, old.Superseding = store.StatusSuperseded, rec.Serial, ""
		if err := tx.PutCertificate(old); err != nil {
			return err
		}
	}
	if err := tx.Count(store.Month(now), o.profile.Name, kindStatistic[o.kind], 1); err != nil {
		return err
	}
	reason := fmt.Sprintf("request %s, profile %s, subject %s", o.id, o.profile.Name, rec.Subject)
	if o.replaces != nil {
		reason += fmt.Sprintf(", replaces %x", o.replaces)
	}
	if _, err := tx.Append(store.Event{Actor: o.actor, Action: "certificate." + o.kind, Object: store.HexSerial(rec.Serial),
		Outcome: store.OutcomeOK, Reason: reason}); err != nil {
		return err
	}
	j.cert = rec
	return nil
}

// discard burns the serial of an attempt the HSM signed after what it
// relied on changed: the certificate it replaces was revoked or put on
// hold, or its key was revoked for keyCompromise. What the HSM signed is
// never recorded as issued and never leaves signerd (the TBS stays in the
// request's record), so a revocation acknowledged to an RA is never
// followed by a valid certificate for what it revoked. The RA is told code
// and may retry where that can succeed (a hold lifted).
func (s *issueStages) discard(tx *store.Tx, j *job, code api.Code, why string) error {
	r, err := tx.Request(j.o.id)
	if err != nil {
		return err
	}
	why = fmt.Sprintf("%s; the new certificate was discarded and serial %x burned", why, r.Serial)
	s.log.Warn("signed certificate discarded", "request_id", j.o.id, "serial", store.HexSerial(r.Serial), "why", why)
	err = errorf(code, "%s", why)
	err.(*Error).audited = true // by the burn
	j.fail(err)
	return s.burn(tx, r, j.o.actor, why)
}

// fail burns the serial of an attempt the HSM did not complete.
func (s *issueStages) fail(tx *store.Tx, j *job, cause error) error {
	r, err := tx.Request(j.o.id)
	if err != nil {
		return err
	}
	code := api.CodeInternal
	if errors.Is(cause, errHSM) {
		code = api.CodeHSMUnavailable
	}
	s.log.Error("sign certificate", "request_id", j.o.id, "serial", store.HexSerial(r.Serial), "err", cause)
	err = errorf(code, "signing failed (serial %x burned; retry the request): %v", r.Serial, cause)
	err.(*Error).audited = true // by the burn
	j.fail(err)
	return s.burn(tx, r, j.o.actor, cause.Error())
}

// burnInterrupted resolves requests a crash left between the two batch
// transactions: nothing was recorded as issued, so whatever the HSM may
// have signed never left the process; the serial is burned and the RA may
// retry the request.
func (s *issueStages) burnInterrupted(tx *store.Tx) error {
	stuck, err := tx.InFlight()
	if err != nil {
		return err
	}
	for _, r := range stuck {
		const why = "signerd stopped while the request was being signed; serial burned, retry the request"
		if err := s.burn(tx, r, store.System, why); err != nil {
			return err
		}
		s.log.Warn("burned serial of interrupted request", "request_id", r.ID, "serial", store.HexSerial(r.Serial))
	}
	return nil
}

// burn ends r's attempt without a certificate.
func (s *issueStages) burn(tx *store.Tx, r *store.Request, actor store.Actor, why string) error {
	if err := tx.SetSerialState(r.Serial, store.SerialBurned); err != nil {
		return err
	}
	r.State = store.RequestFailed
	r.Burned = append(r.Burned, r.Serial)
	r.Error = why
	r.Updated = s.now().UTC()
	if err := tx.PutRequest(r); err != nil {
		return err
	}
	if err := releaseClaim(tx, r); err != nil {
		return err
	}
	_, err := tx.Append(store.Event{Actor: actor, Action: "certificate." + r.Kind, Object: store.HexSerial(r.Serial),
		Outcome: store.OutcomeFailed, Reason: fmt.Sprintf("request %s: %s", r.ID, why)})
	return err
}

// releaseClaim lets go of the certificate a failed renewal or extension
// claimed, so it can be replaced again.
func releaseClaim(tx *store.Tx, r *store.Request) error {
	if r.Replaces == nil {
		return nil
	}
	old, err := tx.Certificate(r.Replaces)
	if err != nil {
		return err
	}
	if old.Superseding != r.ID {
		return nil
	}
	old.Superseding = ""
	return tx.PutCertificate(old)
}

// burnAfterFailure tries once more to burn serials whose results could not
// be recorded, so their requests can be retried without a restart; if the
// store still takes no write, the next batch tries again.
func (s *issueStages) burnAfterFailure(jobs []*job) {
	err := s.store.update(func(tx *store.Tx) error {
		for _, j := range jobs {
			r, err := tx.Request(j.o.id)
			if err != nil {
				return err
			}
			if r.State == store.RequestSigning {
				if err := s.burn(tx, r, j.o.actor, "result could not be recorded"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("burn serials after failed batch; the next batch will", "err", err)
		stranded := make([]*store.Request, len(jobs))
		for i, j := range jobs {
			stranded[i] = &store.Request{ID: j.o.id, Serial: j.draft.serial}
		}
		s.store.strand(stranded)
	}
}

// burnStranded burns the serials of stranded requests still signing with
// the serial they were stranded with.
func (s *issueStages) burnStranded() {
	rs := s.store.takeStranded()
	if len(rs) == 0 {
		return
	}
	err := s.store.update(func(tx *store.Tx) error {
		for _, stranded := range rs {
			r, err := tx.Request(stranded.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue // its reservation was never recorded
			}
			if err != nil {
				return err
			}
			if r.State == store.RequestSigning && bytes.Equal(r.Serial, stranded.Serial) {
				if err := s.burn(tx, r, store.System, "result could not be recorded; serial burned, retry the request"); err != nil {
					return err
				}
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNodeTakenOver), errors.Is(err, store.ErrLogBehind):
		// This process writes nothing more, ever. The requests stay
		// signing under its node, and the next process to start as the
		// node (or this one restarted) burns them at start-up.
		s.log.Error("serials of stranded requests left to the next start: this process writes no more", "requests", len(rs), "err", err)
	case err != nil:
		s.log.Error("burn serials of stranded requests; will try again", "err", err)
		s.store.strand(rs)
	}
}

// pending returns the jobs not yet answered.
func pending(jobs []*job) []*job {
	var out []*job
	for _, j := range jobs {
		if j.err == nil && j.cert == nil {
			out = append(out, j)
		}
	}
	return out
}

func failAll(jobs []*job, err error) {
	for _, j := range jobs {
		j.fail(err)
	}
}

// parallel runs fn on each job, on as many goroutines as there are jobs.
func parallel(jobs []*job, fn func(*job)) {
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { fn(j) })
	}
	wg.Wait()
}

// prefetchOf names what a stage of the batch reads for jobs: each request,
// and once drafted, its serial, whether its key is compromised, and the
// certificates already issued for its key. On a database store that is one
// round trip for the stage instead of several per request.
func prefetchOf(jobs []*job) store.Prefetch {
	var p store.Prefetch
	for _, j := range jobs {
		p.Requests = append(p.Requests, j.o.id)
		if j.draft == nil {
			continue
		}
		p.Serials = append(p.Serials, j.draft.serial)
		if spki, digest, err := j.o.keySPKI(); err == nil {
			p.CompromisedKeys = append(p.CompromisedKeys, digest)
			p.KeySPKIs = append(p.KeySPKIs, spki)
		}
	}
	return p
}
