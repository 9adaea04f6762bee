package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
)

// Several signerd nodes may share one PostgreSQL store. Each keeps its own
// audit chain, sealed with its own audit key, so that nodes never contend
// for one chain head and a node's HSM anchors the chain that node wrote.
// A chain is named by its node; the unnamed chain is the one a store had
// before nodes existed, and the only one of a bbolt store.
//
// The unnamed chain keeps the layout it always had: events under their
// 8-byte sequence number (which starts with a zero byte: no log reaches
// 2^56 events) and meta records under "audit-head", "audit-last-seal" and
// "last-signing-time". Node n's events are under "@n/" and the sequence
// number, its meta records under the same names followed by "@n". Node
// names never hold '/' or '@', so no chain's keys are a prefix of
// another's.

// nodeName is what a node may be called: short, lower case, printable in
// logs, file names and key prefixes alike.
var nodeName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// ValidNodeName reports why name cannot name a node, or nil.
func ValidNodeName(name string) error {
	if !nodeName.MatchString(name) {
		return fmt.Errorf("node name %q: want 1 to 32 of a-z, 0-9 and '-', starting with a letter", name)
	}
	return nil
}

// chain says where one node's audit chain and per-node meta records are
// kept; node "" is the unnamed chain.
type chain struct{ node string }

// eventPrefix is the start of every key of the chain's events.
func (c chain) eventPrefix() []byte {
	if c.node == "" {
		return []byte{0}
	}
	return []byte("@" + c.node + "/")
}

func (c chain) eventKey(seq uint64) []byte {
	if c.node == "" {
		return seqKey(seq)
	}
	return binary.BigEndian.AppendUint64(c.eventPrefix(), seq)
}

// seqOf is the sequence number an event key of this chain holds.
func (c chain) seqOf(k []byte) (uint64, bool) {
	p := c.eventPrefix()
	if c.node == "" {
		p = nil
	}
	if !bytes.HasPrefix(k, p) || len(k) != len(p)+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[len(p):]), true
}

// metaKey is the chain's own record of what base names.
func (c chain) metaKey(base []byte) []byte {
	if c.node == "" {
		return base
	}
	return append(append(bytes.Clone(base), '@'), c.node...)
}

// String names the chain in messages.
func (c chain) String() string {
	if c.node == "" {
		return "the unnamed audit chain"
	}
	return fmt.Sprintf("node %s's audit chain", c.node)
}

// chainOfEventKey is the chain an audit table key belongs to, if any.
func chainOfEventKey(k []byte) (chain, bool) {
	if len(k) == 8 && k[0] == 0 {
		return chain{}, true
	}
	if len(k) < 2+8 || k[0] != '@' {
		return chain{}, false
	}
	name, _, ok := bytes.Cut(k[1:len(k)-8], []byte("/"))
	if !ok || len(name)+2+8 != len(k) || ValidNodeName(string(name)) != nil {
		return chain{}, false
	}
	return chain{string(name)}, true
}

// AuditChains names the nodes whose audit chains the store holds, the
// unnamed chain ("") first if it has events.
func (t *Tx) AuditChains() ([]string, error) {
	var nodes []string
	if head, err := t.r.get(tableMeta, keyAuditHead); err != nil {
		return nil, err
	} else if head != nil {
		nodes = append(nodes, "")
	}
	prefix := append(bytes.Clone(keyAuditHead), '@')
	err := t.r.scan(tableMeta, prefix, prefix, func(k, _ []byte) error {
		nodes = append(nodes, string(k[len(prefix):]))
		return nil
	})
	return nodes, err
}

// ChainTrace is a chain the store shows some trace of, and which traces.
type ChainTrace struct {
	Node string
	// Head: the chain's head record ("audit-head", "audit-head@<node>").
	Head bool
	// Claim: its node's name claim ("node@<node>"); never for the
	// unnamed chain.
	Claim bool
	// Events: the audit table holds events under the chain's key prefix.
	Events bool
}

// ChainTraces lists every chain of which the store holds a head record, a
// node claim or events, the unnamed chain first and the others by name.
// AuditChains goes by head records alone, so a chain whose head record
// was deleted would vanish from it; a chain with events or a claim but no
// head is listed here all the same, for an export to say it is missing.
// The audit table is read once per chain (up to its first event), not
// event by event.
func (t *Tx) ChainTraces() ([]ChainTrace, error) {
	found := map[string]*ChainTrace{}
	trace := func(node string) *ChainTrace {
		if found[node] == nil {
			found[node] = &ChainTrace{Node: node}
		}
		return found[node]
	}
	heads, err := t.AuditChains()
	if err != nil {
		return nil, err
	}
	for _, node := range heads {
		trace(node).Head = true
	}
	err = t.r.scan(tableMeta, keyNodePrefix, keyNodePrefix, func(k, _ []byte) error {
		if node := string(k[len(keyNodePrefix):]); ValidNodeName(node) == nil {
			trace(node).Claim = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = t.r.scan(tableAudit, nil, chain{}.eventPrefix(), func(_, _ []byte) error {
		trace("").Events = true
		return errStopScan
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	// Skip from each chain's first event to past its prefix: node names
	// hold no '/', so "@<node>0" is the least key after all of "@<node>/".
	at := []byte("@")
	for at != nil {
		from := at
		at = nil
		err := t.r.scan(tableAudit, from, []byte("@"), func(k, _ []byte) error {
			if c, ok := chainOfEventKey(k); ok {
				trace(c.node).Events = true
				at = []byte("@" + c.node + "0")
			} else {
				at = append(bytes.Clone(k), 0) // no chain's: store verify reports it
			}
			return errStopScan
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return nil, err
		}
	}
	traces := make([]ChainTrace, 0, len(found))
	for _, node := range slices.Sorted(maps.Keys(found)) {
		traces = append(traces, *found[node])
	}
	return traces, nil
}

var errStopScan = errors.New("stop scanning")

// Chain is t reading node's audit chain instead of its own: AuditHead,
// LastSeal, Events and VerifyAuditChain then read that chain. It is for
// reading; a write transaction appends to its own node's chain only.
func (t *Tx) Chain(node string) *Tx {
	c := *t
	c.chain = chain{node}
	c.foreign = node != t.chain.node
	return &c
}
