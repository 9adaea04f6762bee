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
// Batches go through stages (prepare, sign, record), each on a goroutine
// of its own, so the HSM signs one batch while the next is prepared and
// the one before is recorded. The prepare stage takes whatever is
// waiting, up to the batch size, whenever it is free, and never waits for
// a batch to fill; while the HSM is busy the queue grows and the next batch
// is larger. Besides the queue's own size, one batch may thus be held in
// each stage.
type BatchQueue struct {
	jobs      chan *job
	batchSize int

	mu      sync.RWMutex // guards closed against sends on a closed channel
	closed  bool
	drained chan struct{}
}

// batch is the orders taken together and what each stage made of them.
type batch struct {
	n    uint64
	jobs []*job
	// Set by the prepare stage: the batch's time, its issuer, and the jobs
	// recorded as signing, in the order signed and signErr follow.
	now      time.Time
	iss      *issuance.Issuer
	reserved []*job
	signed   []*smx509.Certificate
	signErr  []error
}

// batchStages are the stages a batch goes through once taken off the
// queue, in this order, each on a goroutine of its own (issueStages, in
// batch.go, are the certificates').
type batchStages interface {
	// prepare checks the batch's orders, answers those that need no
	// signature, and records the rest as signing (record before sign).
	prepare(*batch)
	// sign has the HSM sign what prepare recorded.
	sign(*batch)
	// record records what the HSM signed, or burns its serial, before
	// any caller is answered.
	record(*batch)
}

func newBatchQueue(size, batchSize int, stages batchStages) *BatchQueue {
	q := &BatchQueue{jobs: make(chan *job, size), batchSize: batchSize, drained: make(chan struct{})}
	prepared, signed, recorded := make(chan *batch), make(chan *batch), make(chan *batch)
	go q.collect(stages.prepare, prepared)
	go runStage(stages.sign, prepared, signed)
	go runStage(stages.record, signed, recorded)
	go q.answer(recorded)
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

// answer wakes each batch's callers, their results recorded, and closes
// drained once the last batch is answered.
func (q *BatchQueue) answer(in <-chan *batch) {
	defer close(q.drained)
	for b := range in {
		for _, j := range b.jobs {
			close(j.done)
		}
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

// collect takes a batch off the queue whenever the prepare stage (first)
// is free, runs that stage and hands the batch on. Taking the batch only then
// lets orders gather while the later stages are busy.
func (q *BatchQueue) collect(first func(*batch), out chan<- *batch) {
	defer close(out)
	var n uint64
	for j := range q.jobs {
		n++
		b := &batch{n: n, jobs: []*job{j}}
	fill:
		for len(b.jobs) < q.batchSize {
			select {
			case j, ok := <-q.jobs:
				if !ok {
					break fill
				}
				b.jobs = append(b.jobs, j)
			default:
				break fill
			}
		}
		first(b)
		out <- b
	}
}

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
