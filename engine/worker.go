package engine

import (
	"sync"
	"time"
)

// worker is a goroutine of the engine's own (the CRL schedule, the OCSP
// signer): started once, woken by a change (wake), and stopped at Close.
// Its run function loops on wait.
type worker struct {
	poke       chan struct{}
	once       sync.Once
	stop, done chan struct{}
}

func newWorker() worker {
	return worker{poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// start runs run in its goroutine, once; with on false, never (close then
// returns at once).
func (w *worker) start(on bool, run func()) {
	w.once.Do(func() {
		if !on {
			close(w.done)
			return
		}
		go func() {
			defer close(w.done)
			run()
		}()
	})
}

// close stops the goroutine and returns when it has returned; a worker
// never started ends at once.
func (w *worker) close() {
	w.start(false, nil)
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// wake has the goroutine look again now, if it waits.
func (w *worker) wake() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// wait waits d, or less if woken; false once the worker is to stop.
func (w *worker) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.stop:
		return false
	case <-w.poke:
	case <-t.C:
	}
	return true
}
