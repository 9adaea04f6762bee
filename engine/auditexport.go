package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"signerd/api"
	"signerd/audit"
	"signerd/hsm"
	"signerd/store"
)

// Export is what an audit export wrote.
type Export struct {
	// First and Last are the range of the exporting node's own chain.
	First, Last uint64
	// Chains are the store's chains as the bundle lists them, the
	// exporting node's first.
	Chains []ExportedChain
	Bytes  int64
	SM3    []byte // of the bundle as written
}

// ExportedChain is what an export holds of one node's chain.
type ExportedChain struct {
	Node        string
	First, Last uint64
	// Unsealed is how many events followed the chain's last seal.
	Unsealed uint64
	// Omitted says why the chain is not in the bundle ("" if it is).
	Omitted string
}

// ExportAudit writes a bundle (package audit) of the audit log to w: every
// node's chain the store holds, each in a section of its own whose header
// the exporting node's audit key signs. It seals its own chain first, so
// its section ends on a seal that vouches for everything up to the
// export; another node's section ends on that node's last seal, for the
// events after it are vouched for by nothing yet (the header says how
// many). A chain never sealed is listed as not included, and why; so is
// one the store shows a trace of (events, or its node's claim) but no
// head record, which a bundle's verifier then reports. Each
// section covers the events from since to until (zero: no bound),
// reaching back to the seal before since and on to the first seal after
// until, so both ends are signed. The export is itself audited, with the
// bundle's SM3 hash. A store with only the unnamed chain gives a bundle
// of one section, in the format bundles had before nodes.
func (e *Engine) ExportAudit(ctx context.Context, actor store.Actor, since, until time.Time, w io.Writer) (Export, error) {
	var x Export
	if e.sealer.key == nil {
		return x, errorf(api.CodeInternal, "no audit key: the log cannot be sealed for export")
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		err := errorf(api.CodeBadRequest, "until %s is before since %s", until.Format(time.RFC3339), since.Format(time.RFC3339))
		e.auditExport(actor, x, store.OutcomeRefused, err.Error())
		return x, err
	}
	exportSeal, err := e.sealer.seal(ctx, fmt.Sprintf("audit export for uid %d", actor.UID), true)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(api.CodeInternal, "%v", err)
	}
	// No read transaction is held while the bundle is written: a client
	// that reads slowly, or not at all, must not hold back the store's
	// writer (bbolt cannot grow its memory map under an open reader).
	// The events are read in short transactions of their own; each chain
	// is append-only, so the events up to a seal read that way are those
	// one snapshot would hold.
	hdrs, err := e.exportSections(since, until, exportSeal)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(api.CodeInternal, "audit export: %v", err)
	}
	var list []audit.Chain
	for _, c := range hdrs.chains {
		list = append(list, audit.Chain{Node: c.Node, Omitted: c.Omitted})
	}
	x.Chains = hdrs.chains
	x.First, x.Last = hdrs.sections[0].First, hdrs.sections[0].Last
	h := sm3.New()
	n := &countingWriter{w: io.MultiWriter(w, h)}
	var bw *audit.Writer
	at := e.cfg.Now().UTC()
	for i, hdr := range hdrs.sections {
		hdr.ExportedAt, hdr.ExportedBy = at, actor
		if !since.IsZero() {
			hdr.Since = &since
		}
		if !until.IsZero() {
			hdr.Until = &until
		}
		if hdrs.multi {
			hdr.Section, hdr.Chains = i+1, list
		}
		if i == 0 {
			bw, err = audit.NewWriter(n, hdr, hsm.KeyID(e.sealer.pub), func(msg []byte) ([]byte, error) {
				return e.sealer.key.SignDigest(ctx, e.sealer.key.Digest(msg))
			})
		} else {
			err = bw.Section(hdr)
		}
		if err == nil {
			err = e.eachEvent(hdr.Node, hdr.First, hdr.Last, func(_ store.Event, stored []byte) error { return bw.Event(stored) })
		}
		if err != nil {
			break
		}
	}
	x.Bytes, x.SM3 = n.n, h.Sum(nil)
	if err != nil {
		e.auditExport(actor, x, store.OutcomeFailed, err.Error())
		return x, errorf(api.CodeInternal, "audit export: %v", err)
	}
	e.auditExport(actor, x, store.OutcomeOK, "")
	return x, nil
}

// exportPlan is the headers of an export's sections, the exporting
// node's first, and every chain as the bundle lists them.
type exportPlan struct {
	sections []audit.Header
	chains   []ExportedChain
	// multi: the bundle is of format v2 (a named chain in the store).
	multi bool
}

// exportSections plans the sections of an export whose own chain ends on
// the seal exportSeal: its own, then every other node's chain in the
// store's order, each up to that chain's last seal; a chain never sealed
// is listed as omitted, and so is one without a head record, with why.
// The chains are every one the store shows a trace of, not only those
// with a head record: one record deleted must not take a whole chain out
// of the export unsaid.
func (e *Engine) exportSections(since, until time.Time, exportSeal uint64) (exportPlan, error) {
	var p exportPlan
	own := e.store.Node()
	type chainState struct {
		node           string
		head, lastSeal uint64
		// headless says why the chain has no head record to export it
		// from ("" when it has one).
		headless string
	}
	var states []chainState
	err := e.view(func(tx *store.Tx) error {
		traces, err := tx.ChainTraces()
		if err != nil {
			return err
		}
		traces = slices.DeleteFunc(traces, func(c store.ChainTrace) bool { return c.Node == own })
		traces = append([]store.ChainTrace{{Node: own, Head: true}}, traces...)
		for _, tr := range traces {
			node := tr.Node
			switch {
			case tr.Head:
			case tr.Events:
				head := "audit-head"
				if node != "" {
					head += "@" + node
				}
				states = append(states, chainState{node: node, headless: fmt.Sprintf("the store holds events of %s but not its head record "+
					"(%q deleted?): the chain cannot be exported; signerctl store verify reports it", audit.ChainName(node), head)})
				continue
			default:
				// A node that claimed its name and wrote nothing (its
				// start refused): nothing to vouch for.
				states = append(states, chainState{node: node})
				continue
			}
			c := tx.Chain(node)
			head, _, err := c.AuditHead()
			if err != nil {
				return fmt.Errorf("%s: %w", audit.ChainName(node), err)
			}
			last, err := c.LastSeal()
			if err != nil {
				return fmt.Errorf("%s: %w", audit.ChainName(node), err)
			}
			st := chainState{node: node, head: head}
			if last != nil {
				st.lastSeal = last.Seq
			}
			states = append(states, st)
		}
		return nil
	})
	if err != nil {
		return p, err
	}
	p.multi = len(states) > 1 || own != ""
	for i, st := range states {
		through := st.lastSeal
		if i == 0 {
			through = exportSeal
		}
		c := ExportedChain{Node: st.node, Unsealed: st.head - st.lastSeal}
		if st.headless != "" {
			c.Unsealed, c.Omitted = 0, st.headless
			p.chains = append(p.chains, c)
			continue
		}
		if through == 0 {
			c.Omitted = audit.NeverSealed(st.head)
			p.chains = append(p.chains, c)
			continue
		}
		hdr, err := e.exportRange(st.node, since, until, through)
		var noCert *noKeyCertificate
		if i > 0 && errors.As(err, &noCert) {
			// Another node's failing (its audit key never certified, or
			// by an issuer this node is not configured with) must not
			// stop the export of every other chain; the bundle says why
			// the chain is missing.
			c.Omitted = noCert.Error()
			p.chains = append(p.chains, c)
			continue
		}
		if err != nil {
			return p, fmt.Errorf("%s: %w", audit.ChainName(st.node), err)
		}
		hdr.Node = st.node
		if p.multi {
			hdr.Unsealed = c.Unsealed
		}
		c.First, c.Last = hdr.First, hdr.Last
		p.sections = append(p.sections, hdr)
		p.chains = append(p.chains, c)
	}
	return p, nil
}

// Bounds on what one read transaction of eachEvent copies: it holds the
// store's memory map for no longer than copying this much takes, and an
// export a client stopped reading holds no more than this in memory.
const (
	eventChunkEvents = 64
	eventChunkBytes  = 256 << 10
)

// eachEvent calls fn with each audit event of node's chain stored from
// seq from through seq through, with a copy of its stored bytes. The events are read in
// chunks, each in a short read transaction of its own, and fn runs
// outside any transaction, so fn may take as long as it likes (write to
// a client) without holding back the store's writer. The log being
// append-only, the events read are those of one snapshot taken when
// through was the head or later. Events are taken by the sequence number
// they are stored under, whatever an edited one says, so that an edited
// log is exported as it is, for its verification to find the edit.
func (e *Engine) eachEvent(node string, from, through uint64, fn func(ev store.Event, stored []byte) error) error {
	type storedEvent struct {
		ev     store.Event
		stored []byte
	}
	for next := from; next <= through; {
		var chunk []storedEvent
		size := 0
		err := e.view(func(tx *store.Tx) error {
			return tx.Chain(node).EventsAt(next, func(at uint64, ev store.Event, stored []byte) error {
				if at > through || len(chunk) == eventChunkEvents || (len(chunk) > 0 && size+len(stored) > eventChunkBytes) {
					return errStop
				}
				chunk = append(chunk, storedEvent{ev, bytes.Clone(stored)})
				size += len(stored)
				next = at + 1
				return nil
			})
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if len(chunk) == 0 {
			return fmt.Errorf("audit log: %s has no event %d (it ends before event %d)", audit.ChainName(node), next, through)
		}
		for _, c := range chunk {
			if err := fn(c.ev, c.stored); err != nil {
				return err
			}
		}
	}
	return nil
}

var errStop = errors.New("stop")

// exportRange finds the ends of node's section and the audit keys whose
// seals lie between them: from the last seal before the first event at or
// after since (or the chain's first event) to the first seal after until
// (or the seal the section ends on at the latest, endSeal: the export's
// own, or another node's last). The keys include the exporting node's,
// which signs the section's header. Each key's certificate is the one
// naming the node whose chain it seals (the exporting node's, for its
// own key): a bundle's verifier takes a seal in no other chain.
func (e *Engine) exportRange(node string, since, until time.Time, endSeal uint64) (audit.Header, error) {
	var h audit.Header
	first, last, lastSeal := uint64(0), uint64(0), uint64(1)
	keyIDs := map[string][]byte{}
	err := e.eachEvent(node, 1, endSeal, func(ev store.Event, stored []byte) error {
		if first == 0 {
			if !since.IsZero() && ev.Time.Before(since) && ev.Seq < endSeal {
				if ev.Seal != nil {
					lastSeal = ev.Seq
					clear(keyIDs)
					keyIDs[hex.EncodeToString(ev.Seal.KeyID)] = ev.Seal.KeyID
				}
				return nil
			}
			first = lastSeal
		}
		if ev.Seal != nil {
			keyIDs[hex.EncodeToString(ev.Seal.KeyID)] = ev.Seal.KeyID
			if ev.Seq == endSeal || (!until.IsZero() && ev.Time.After(until)) {
				last, h.Head = ev.Seq, store.ChainHash(stored)
				return errStop
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return h, err
	}
	if last == 0 {
		return h, fmt.Errorf("the seal the section ends on, event %d, was not found", endSeal)
	}
	h.First, h.Last = first, last
	type nodeKey struct {
		node  string
		keyID []byte
	}
	certs := map[string]nodeKey{}
	for name, id := range keyIDs {
		certs[name+"@"+node] = nodeKey{node, id}
	}
	own := hsm.KeyID(e.sealer.pub)
	certs[hex.EncodeToString(own)+"@"+e.store.Node()] = nodeKey{e.store.Node(), own}
	err = e.view(func(tx *store.Tx) error {
		for _, name := range slices.Sorted(maps.Keys(certs)) {
			k, err := e.auditKeyCertificate(tx, certs[name].node, certs[name].keyID)
			if err != nil && !storeFailed(err) {
				return &noKeyCertificate{err}
			}
			if err != nil {
				return err
			}
			h.Keys = append(h.Keys, k)
		}
		return nil
	})
	return h, err
}

// noKeyCertificate: an audit key whose seals a section holds has no
// certificate this node can put in the bundle.
type noKeyCertificate struct{ err error }

func (e *noKeyCertificate) Error() string { return e.err.Error() }
func (e *noKeyCertificate) Unwrap() error { return e.err }

// auditExport records an export and how it went.
func (e *Engine) auditExport(actor store.Actor, x Export, outcome, reason string) {
	ev := store.Event{Actor: actor, Action: "audit.export", Outcome: outcome, Reason: reason}
	if x.Last != 0 {
		ev.Object = fmt.Sprintf("events %d-%d", x.First, x.Last)
		ev.Detail = fmt.Sprintf("bundle of %d bytes, SM3 %x", x.Bytes, x.SM3)
		if len(x.Chains) > 1 || x.Chains[0].Node != "" {
			var cs []string
			for _, c := range x.Chains {
				if c.Omitted != "" {
					cs = append(cs, fmt.Sprintf("%s not included (%s)", audit.ChainName(c.Node), c.Omitted))
					continue
				}
				cs = append(cs, fmt.Sprintf("%s events %d-%d (%d unsealed after)", audit.ChainName(c.Node), c.First, c.Last, c.Unsealed))
			}
			ev.Detail += "; " + strings.Join(cs, "; ")
		}
	}
	if err := e.Audit(ev); err != nil {
		e.log.Error("audit an audit export", "err", err)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
