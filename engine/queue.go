package engine

import (
	"context"
	"sync"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/issuance"
	"signerd/store"
)

// job is one caller's order waiting for its batch.
type job struct {
	o     *order
	done  chan struct{}
	cert  *store.Certificate
	err   error
	draft *draft // built by the prepare stage
}

func (j *job) fail(err error) { j.err = err }

// BatchQueue is the bounded queue between callers and the HSM (SPEC §5.6).
// A full queue answers "busy" at once instead of making the caller wait.
// A batch is prepared, reserved (record before sign), signed and recorded
// (record before answer). One goroutine (run) takes batches off the
// queue, prepares them and writes the store; the HSM signs on another,
// so it signs one batch while the next is prepared and the one before is
// recorded. The recording of a signed batch and the reservation of the
// next share one store transaction: under load a batch costs one commit,
// not two. A batch is taken whenever the HSM has fewer than reservedAhead
// batches, and never waits to fill; while the HSM is busy the queue grows
// and the next batch is larger.
type BatchQueue struct {
	jobs      chan *job
	batchSize int

	mu      sync.RWMutex // guards closed against sends on a closed channel
	closed  bool
	drained chan struct{}
}

// reservedAhead is how many batches may be reserved and not yet recorded:
// the one the HSM signs and the one waiting for it, so the HSM goes on to
// the next batch at once while the last is recorded. The one waiting is
// taken off the queue when the one before it was signed, so an order
// waits no longer than with one batch per stage.
const reservedAhead = 2

// batch is the orders taken together and what each stage made of them.
type batch struct {
	n    uint64
	jobs []*job
	// Set by the prepare stage: the batch's time, its issuer, and the jobs
	// it drafted, for commit to reserve.
	now      time.Time
	iss      *issuance.Issuer
	attempts []*job
	// Set once reserved: the jobs recorded as signing, in the order the
	// sign stage's signed and signErr follow.
	reserved []*job
	signed   []*smx509.Certificate
	signErr  []error
}

// batchStages are the stages a batch goes through once taken off the
// queue (issueStages, in batch.go, are the certificates').
type batchStages interface {
	// prepare checks the batch's orders, answers those that need no
	// signature, and drafts the rest.
	prepare(*batch)
	// commit records, in one store transaction, what the HSM signed in
	// signed, or burns its serials, before any of its callers is
	// answered; and the drafts of prepared as signing (record before
	// sign), setting its reserved. Either may be nil.
	commit(signed, prepared *batch)
	// sign has the HSM sign what commit reserved.
	sign(*batch)
}

func newBatchQueue(size, batchSize int, stages batchStages) *BatchQueue {
	q := &BatchQueue{jobs: make(chan *job, size), batchSize: batchSize, drained: make(chan struct{})}
	// Buffered so that neither run nor the sign stage waits for the
	// other: at most reservedAhead batches are between them.
	toSign, signed := make(chan *batch, reservedAhead), make(chan *batch, reservedAhead)
	go runStage(stages.sign, toSign, signed)
	go q.run(stages, toSign, signed)
	return q
}

// runStage runs stage on each batch from in and hands it on to out.
func runStage(stage func(*batch), in <-chan *batch, out chan<- *batch) {
	defer close(out)
	for b := range in {
		stage(b)
		out <- b
	}
}

// run waits for a signed batch, or for an order while fewer than
// reservedAhead batches are reserved. Then it takes a batch off the queue
// if it may, prepares it and commits it with the signed batch, hands it to
// the sign stage and answers the signed batch's callers. Once the queue is
// closed and every batch answered, it closes drained.
func (q *BatchQueue) run(stages batchStages, toSign chan<- *batch, signed <-chan *batch) {
	defer close(q.drained)
	defer close(toSign)
	jobs := q.jobs // nil once closed and empty
	ahead := 0     // batches reserved and not yet recorded
	var n uint64
	for jobs != nil || ahead > 0 {
		var rec *batch
		var first *job
		select {
		case rec = <-signed:
		case j, ok := <-q.taking(jobs, ahead):
			if !ok {
				jobs = nil
				continue
			}
			first = j
		}
		if rec == nil {
			select {
			case rec = <-signed:
			default:
			}
		}
		if rec != nil {
			ahead--
		}
		var next *batch
		if first != nil || ahead < reservedAhead {
			var js []*job
			js, jobs = q.take(first, jobs)
			if len(js) > 0 {
				n++
				next = &batch{n: n, jobs: js}
				stages.prepare(next)
			}
		}
		stages.commit(rec, next)
		if rec != nil {
			answer(rec)
		}
		switch {
		case next == nil:
		case len(next.reserved) == 0:
			answer(next)
		default:
			ahead++
			toSign <- next
		}
	}
}

// taking is jobs while fewer than reservedAhead batches are reserved, else
// nil (a channel that never delivers).
func (q *BatchQueue) taking(jobs <-chan *job, ahead int) <-chan *job {
	if ahead >= reservedAhead {
		return nil
	}
	return jobs
}

// take returns first, if not nil, and whatever else waits in jobs, up to
// the batch size, without waiting; and jobs, or nil if it was found
// closed.
func (q *BatchQueue) take(first *job, jobs chan *job) ([]*job, chan *job) {
	var js []*job
	if first != nil {
		js = append(js, first)
	}
	for jobs != nil && len(js) < q.batchSize {
		select {
		case j, ok := <-jobs:
			if !ok {
				return js, nil
			}
			js = append(js, j)
		default:
			return js, jobs
		}
	}
	return js, jobs
}

// answer wakes b's callers, their results recorded.
func answer(b *batch) {
	for _, j := range b.jobs {
		close(j.done)
	}
}

// submit queues o and waits for its result. If ctx ends first the caller
// gets ctx's error, but the order still completes: a retry with the same
// request id then returns its certificate.
func (q *BatchQueue) submit(ctx context.Context, o *order) (*store.Certificate, error) {
	j := &job{o: o, done: make(chan struct{})}
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return nil, errorf(api.CodeShuttingDown, "signerd is shutting down")
	}
	select {
	case q.jobs <- j:
	default:
		q.mu.RUnlock()
		return nil, errorf(api.CodeBusy, "signing queue is full (%d waiting); retry later", cap(q.jobs))
	}
	q.mu.RUnlock()
	select {
	case <-j.done:
		return j.cert, j.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Depth is the number of orders waiting.
func (q *BatchQueue) Depth() int { return len(q.jobs) }

// close refuses new orders, lets the worker finish everything already
// queued, and returns when it has.
func (q *BatchQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.jobs)
	}
	q.mu.Unlock()
	<-q.drained
}
