package engine

import (
	"context"
	"sync"

	"signerd/store"
)

// job is one caller's order waiting for its batch.
type job struct {
	o     *order
	done  chan struct{}
	cert  *store.Certificate
	err   error
	draft *draft // built by the batch
}

func (j *job) fail(err error) { j.err = err }

// BatchQueue is the bounded queue between callers and the signing worker
// (SPEC §5.6). A full queue answers "busy" at once instead of making the
// caller wait; the worker takes whatever is waiting, up to the batch size,
// and never waits for a batch to fill.
type BatchQueue struct {
	jobs      chan *job
	batchSize int
	run       func([]*job)

	mu      sync.RWMutex // guards closed against sends on a closed channel
	closed  bool
	drained chan struct{}
}

func newBatchQueue(size, batchSize int, run func([]*job)) *BatchQueue {
	q := &BatchQueue{jobs: make(chan *job, size), batchSize: batchSize, run: run, drained: make(chan struct{})}
	go q.work()
	return q
}

// submit queues o and waits for its result. If ctx ends first the caller
// gets ctx's error, but the order still completes: a retry with the same
// request id then returns its certificate.
func (q *BatchQueue) submit(ctx context.Context, o *order) (*store.Certificate, error) {
	j := &job{o: o, done: make(chan struct{})}
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return nil, errorf(CodeShuttingDown, "signerd is shutting down")
	}
	select {
	case q.jobs <- j:
	default:
		q.mu.RUnlock()
		return nil, errorf(CodeBusy, "signing queue is full (%d waiting); retry later", cap(q.jobs))
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

func (q *BatchQueue) work() {
	defer close(q.drained)
	for first := range q.jobs {
		batch := []*job{first}
	fill:
		for len(batch) < q.batchSize {
			select {
			case j, ok := <-q.jobs:
				if !ok {
					break fill
				}
				batch = append(batch, j)
			default:
				break fill
			}
		}
		q.run(batch)
		for _, j := range batch {
			close(j.done)
		}
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
