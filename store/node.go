package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// A node name is held by one process at a time, through a claim recorded
// in the store: a generation, raised by every process that takes the
// name, and a renewal count the holder raises every third of its lease.
//
// Safety does not rest on time. Every write transaction first checks,
// under the store's single-writer lock, that the claim's generation is
// still the one this process took; a process that was frozen (SIGSTOP, a
// stalled VM) while another took its name over finds the generation
// raised and writes nothing more as that node (ErrNodeTakenOver). Time
// decides only when a name may be taken: a process that finds the name
// held watches the claim for one lease by its own clock, and takes the
// name only if no renewal came meanwhile, so clocks of different machines
// are never compared. A process that closes its store releases the name,
// and the next one takes it at once.

// ErrNodeTakenOver: another process took this node's name. It is also
// ErrWrite; this process writes nothing more.
var ErrNodeTakenOver = errors.New("another process took over this node's name")

// ErrNodeInUse: the node name is held by a live process (its claim was
// renewed while this one watched).
var ErrNodeInUse = errors.New("the node name is in use")

// DefaultNodeLease is how long a node name's claim lasts unrenewed.
const DefaultNodeLease = 15 * time.Second

var keyNodePrefix = []byte("node@")

func nodeKey(node string) []byte { return append(append([]byte{}, keyNodePrefix...), node...) }

// nodeRecord is a node name's claim as stored.
type nodeRecord struct {
	Generation uint64 `json:"generation"`
	// Holder names the process (host and pid), for messages.
	Holder   string    `json:"holder"`
	Renewals uint64    `json:"renewals"`
	Renewed  time.Time `json:"renewed"` // the holder's clock, for people only
	Released bool      `json:"released,omitempty"`
	// Lease is the holder's lease: it renews every third of it, so a
	// process watching for a renewal watches at least this long, whatever
	// its own lease (zero in claims written before it was recorded).
	Lease time.Duration `json:"lease,omitempty"`
}

// nodeClaim is this process's hold on its node name.
type nodeClaim struct {
	name       string
	generation uint64
	holder     string
	lease      time.Duration
	// stop ends the renewals; done is closed when they have ended.
	stop chan struct{}
	done chan struct{}
	once sync.Once
	// taken is how the name was claimed.
	taken NodeClaim
}

// NodeClaim says how this process came to hold its node name.
type NodeClaim struct {
	Generation uint64
	// TakenFrom is the previous holder when the name was taken over from
	// a process that did not release it ("" otherwise).
	TakenFrom string
}

// Claim is how this process took its node name (zero for the unnamed
// node).
func (s *Store) Claim() NodeClaim {
	if s.node == nil {
		return NodeClaim{}
	}
	return s.node.taken
}

func readNodeRecord(r records, name string) (*nodeRecord, error) {
	raw, err := r.get(tableMeta, nodeKey(name))
	if err != nil || raw == nil {
		return nil, err
	}
	var rec nodeRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("node %s's claim: %w", name, err)
	}
	return &rec, nil
}

func putNodeRecord(r records, name string, rec *nodeRecord) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return r.put(tableMeta, nodeKey(name), raw)
}

// claimNode takes the node name for this process, waiting up to one lease
// to learn whether a claim left behind is still renewed.
func (s *Store) claimNode(name string, lease time.Duration) (*nodeClaim, error) {
	if lease <= 0 {
		lease = DefaultNodeLease
	}
	host, _ := os.Hostname()
	c := &nodeClaim{name: name, lease: lease, holder: fmt.Sprintf("%s pid %d", host, os.Getpid()),
		stop: make(chan struct{}), done: make(chan struct{})}
	seen, err := s.nodeRecord(name)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	if seen != nil && !seen.Released {
		// A holder alive renews every third of its lease; one lease
		// without a renewal is a holder that is gone or frozen. The
		// holder's lease, not this process's: with a shorter one of its
		// own, this process would take the name of a live holder between
		// two of its renewals (and fence it).
		watch := max(lease, seen.Lease)
		for deadline := time.Now().Add(watch); time.Now().Before(deadline); {
			time.Sleep(min(watch/10, time.Until(deadline)))
			now, err := s.nodeRecord(name)
			if err != nil {
				return nil, fmt.Errorf("node %s: %w", name, err)
			}
			if !seen.stillFree(now) {
				return nil, fmt.Errorf("node %s: %w by %s (its claim was renewed while this process watched): "+
					"two processes cannot share a node name", name, ErrNodeInUse, now.holderName())
			}
			if now.Released {
				break
			}
		}
	}
	err = s.b.update(func(r records) error {
		now, err := readNodeRecord(r, name)
		if err != nil {
			return err
		}
		if !seen.stillFree(now) {
			return fmt.Errorf("%w by %s (taken while this process watched)", ErrNodeInUse, now.holderName())
		}
		rec := &nodeRecord{Generation: 1, Holder: c.holder, Renewed: time.Now().UTC(), Lease: lease}
		if now != nil {
			rec.Generation = now.Generation + 1
			if !now.Released {
				c.taken.TakenFrom = now.Holder
			}
		}
		c.generation, c.taken.Generation = rec.Generation, rec.Generation
		return putNodeRecord(r, name, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("claim node %s: %w", name, err)
	}
	go s.renewNode(c)
	return c, nil
}

// stillFree reports whether now, the claim as read later, shows no holder
// alive since seen was read: the same claim, not renewed, or released.
func (seen *nodeRecord) stillFree(now *nodeRecord) bool {
	switch {
	case seen == nil || now == nil:
		return seen == nil && now == nil
	case now.Generation != seen.Generation:
		return false
	default:
		return now.Released || now.Renewals == seen.Renewals
	}
}

func (rec *nodeRecord) holderName() string {
	if rec == nil {
		return "another process"
	}
	return rec.Holder
}

func (s *Store) nodeRecord(name string) (rec *nodeRecord, err error) {
	err = s.b.view(func(r records) error {
		rec, err = readNodeRecord(r, name)
		return err
	})
	return rec, err
}

// check fails a write transaction of a process whose node name was taken
// over. A nil claim (the unnamed node) always passes.
func (c *nodeClaim) check(t *Tx) error {
	if c == nil {
		return nil
	}
	_, err := c.held(t.r)
	return err
}

// held returns the claim as stored if this process still holds it.
func (c *nodeClaim) held(r records) (*nodeRecord, error) {
	rec, err := readNodeRecord(r, c.name)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Generation != c.generation || rec.Holder != c.holder {
		return nil, fmt.Errorf("%w: %w: node %s was taken by %s (generation %d; this process holds %d). Nothing more is written as node %s by this process",
			ErrWrite, ErrNodeTakenOver, c.name, rec.holderName(), rec.generationOf(), c.generation, c.name)
	}
	return rec, nil
}

// changeClaim rewrites the claim this process holds with edit, in a write
// transaction of its own.
func (s *Store) changeClaim(c *nodeClaim, edit func(*nodeRecord)) error {
	return s.b.update(func(r records) error {
		rec, err := c.held(r)
		if err != nil {
			return err
		}
		edit(rec)
		return putNodeRecord(r, c.name, rec)
	})
}

func (rec *nodeRecord) generationOf() uint64 {
	if rec == nil {
		return 0
	}
	return rec.Generation
}

// renewNode raises the claim's renewal count every third of the lease
// until the store closes or the name is found taken over. A renewal that
// fails to reach the database is tried again at the next tick: if the
// name is taken meanwhile, the next write finds out.
func (s *Store) renewNode(c *nodeClaim) {
	defer close(c.done)
	tick := time.NewTicker(c.lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		err := s.changeClaim(c, func(rec *nodeRecord) {
			rec.Renewals++
			rec.Renewed = time.Now().UTC()
		})
		if errors.Is(err, ErrNodeTakenOver) {
			s.noteWritten(auditHead{}, err)
			return
		}
	}
}

// releaseNode ends the renewals and marks the name free, so that the next
// process to claim it need not wait a lease.
func (s *Store) releaseNode() {
	c := s.node
	if c == nil {
		return
	}
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		if _, halted := s.lastWritten(); halted != nil {
			return
		}
		s.changeClaim(c, func(rec *nodeRecord) { rec.Released = true })
	})
}
