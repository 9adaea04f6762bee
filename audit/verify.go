package audit

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm"
	"signerd/store"
)

// KeySubjectPrefix starts the common name of every audit key certificate.
// The common name goes on with the name of the node whose chain the key
// seals, if it is a named node's, and the key ID's first 8 bytes in hex:
// "signerd audit key b 0123456789ABCDEF", or for the unnamed chain's key
// "signerd audit key 0123456789ABCDEF" (as every audit key certificate
// was before nodes). A seal counts only in the chain of the node its
// key's certificate names, so one node's HSM cannot seal another's chain.
const KeySubjectPrefix = "signerd audit key"

// KeySubject is the common name of the certificate of node's audit key
// (node "": the unnamed chain's) with key ID keyID.
func KeySubject(node string, keyID []byte) string {
	id := fmt.Sprintf("%X", keyID[:min(8, len(keyID))])
	if node == "" {
		return KeySubjectPrefix + " " + id
	}
	return KeySubjectPrefix + " " + node + " " + id
}

// KeyNode is the node an audit key certificate's common name names ("":
// none, the unnamed chain's key).
func KeyNode(cert *smx509.Certificate) (string, error) {
	rest, ok := strings.CutPrefix(cert.Subject.CommonName, KeySubjectPrefix+" ")
	words := strings.Split(rest, " ")
	switch {
	case !ok || slices.Contains(words, ""):
		return "", fmt.Errorf("common name %q is not %q, a node's name if any, and a key ID", cert.Subject.CommonName, KeySubjectPrefix)
	case len(words) == 1:
		return "", nil
	case len(words) == 2:
		if err := store.ValidNodeName(words[0]); err != nil {
			return "", fmt.Errorf("common name %q: %w", cert.Subject.CommonName, err)
		}
		return words[0], nil
	}
	return "", fmt.Errorf("common name %q names more than one node and a key ID", cert.Subject.CommonName)
}

// neverSealed starts the reason a chain is omitted from a bundle when no
// seal vouches for any of its events yet: the one reason a chain may be
// absent from a bundle that verifies OK.
const neverSealed = "never sealed: "

// NeverSealed is why a chain of events events, none of them sealed, is
// not in a bundle.
func NeverSealed(events uint64) string {
	return fmt.Sprintf("%snone of its %d events is vouched for by a seal yet", neverSealed, events)
}

// IsNeverSealed reports whether why, a reason a chain is omitted, is
// NeverSealed's.
func IsNeverSealed(why string) bool { return strings.HasPrefix(why, neverSealed) }

// KeyUsage is the exact keyUsage of an audit key certificate. No
// certificate profile yields digitalSignature alone (signing certificates
// add nonRepudiation), so no certificate an RA asked for can pass for an
// audit key's.
const KeyUsage = smx509.KeyUsageDigitalSignature

// Options tune Verify.
type Options struct {
	// Root is the CA's root certificate, which every audit key's issuing
	// CA must chain to, and be valid under, at the time of each seal.
	// Without it the bundle is checked only against the certificates it
	// carries, which anyone can make: the report is then never OK.
	Root *smx509.Certificate
	// Nodes are the nodes whose chains the auditor expects the bundle to
	// hold ("" for the unnamed chain). The bundle lists the chains the
	// exporting node found in the store; a chain whose every record was
	// removed from it would be in no list. Each node named here must
	// have a section or be listed as not included.
	Nodes []string
}

// Problem is one thing wrong with a bundle. Seq names the event at fault
// (0 when the fault is a header's, or the bundle's as a whole); Line is
// the bundle line. In a bundle of several chains (format v2), Section is
// the section at fault, from 1, and Node its chain's node; both are zero
// for a bundle of one chain in format v1, and for a fault of the whole
// bundle.
type Problem struct {
	Section int    `json:"section,omitempty"`
	Node    string `json:"node,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	var where string
	if p.Section != 0 {
		where = ChainName(p.Node) + ": "
	}
	if p.Seq == 0 {
		return fmt.Sprintf("%sline %d: %s", where, p.Line, p.Message)
	}
	return fmt.Sprintf("%sevent %d (line %d): %s", where, p.Seq, p.Line, p.Message)
}

// ChainName names a node's chain in messages: "node b", or "unnamed
// chain" for the chain of node "".
func ChainName(node string) string {
	if node == "" {
		return "unnamed chain"
	}
	return "node " + node
}

// chainOf names a node's chain as the subject of a sentence.
func chainOf(node string) string {
	if node == "" {
		return "the unnamed chain"
	}
	return "node " + node + "'s chain"
}

// Record is an event of the bundle, the line it is on and the node whose
// chain it belongs to.
type Record struct {
	Event store.Event
	Line  int
	Node  string
}

// Section is what Verify found of one section of a bundle: one chain.
type Section struct {
	// Index is the section's place, from 1, in a bundle of several
	// chains; 0 for a bundle of format v1, whose one section is all of
	// it. Problems name it.
	Index  int
	Node   string
	Header Header
	Line   int // of its header
	Events int
	Seals  int
}

// Report is what Verify found.
type Report struct {
	// Header is the first section's header: the whole bundle's, in
	// format v1.
	Header Header
	// Events are the lines that decode as events, in bundle order.
	Events []Record
	Seals  int
	// Keys are the audit key certificates, with their issuers.
	Keys []*smx509.Certificate
	// Anchored: Options.Root was given and every audit key chains to it.
	Anchored bool
	Problems []Problem
	// Sections are the bundle's sections, in bundle order.
	Sections []Section
	// Omitted are the chains the bundle names but holds no section of,
	// each with why: nothing in the bundle vouches for their events. A
	// chain never sealed is no problem of the bundle; a chain omitted for
	// any other reason is (the export is incomplete).
	Omitted []Chain
}

// OK reports whether the bundle passed every check and is anchored: its
// audit keys chain to the root given. A bundle checked without a root is
// never OK, however consistent, since whoever forges a bundle can make
// its certificates too.
func (r *Report) OK() bool { return r.Consistent() && r.Anchored }

// Consistent reports whether no check failed: the bundle agrees with
// itself and, if a root was given, with the root. Without a root that
// says nothing of who wrote it.
func (r *Report) Consistent() bool { return len(r.Problems) == 0 }

// FirstBad is the lowest-numbered event a problem names, if any does, in
// the first section where one does.
func (r *Report) FirstBad() (uint64, bool) {
	_, seq, ok := r.FirstBadEvent()
	return seq, ok
}

// FirstBadEvent is FirstBad with the node whose chain holds the event.
func (r *Report) FirstBadEvent() (node string, seq uint64, ok bool) {
	for _, s := range r.Sections {
		if seq, ok := r.FirstBadIn(s); ok {
			return s.Node, seq, true
		}
	}
	return "", 0, false
}

// FirstBadIn is the lowest-numbered event of section s a problem names.
func (r *Report) FirstBadIn(s Section) (uint64, bool) {
	var first uint64
	for _, p := range r.Problems {
		if p.Section == s.Index && p.Seq != 0 && (first == 0 || p.Seq < first) {
			first = p.Seq
		}
	}
	return first, first != 0
}

// ProblemsIn are the problems of section s, and those of no section.
func (r *Report) ProblemsIn(s Section) []Problem {
	var ps []Problem
	for _, p := range r.Problems {
		if p.Section == s.Index {
			ps = append(ps, p)
		}
	}
	return ps
}

func (r *Report) problem(seq uint64, line int, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Seq: seq, Line: line, Message: fmt.Sprintf(format, args...)})
}

// auditKey is a certified audit key, the node its certificate names, the
// CA certificate that issued it and, when one was given, the root that CA
// chains to.
type auditKey struct {
	pub    *ecdsa.PublicKey
	node   string
	cert   *smx509.Certificate
	issuer *smx509.Certificate
	root   *smx509.Certificate
}

// keySet is a header's certified audit keys by key ID (hex). One key may
// have several certificates, each naming another node: a signerd without
// a node name that became a named node on the same HSM seals the unnamed
// chain and its node's with one key.
type keySet map[string][]auditKey

// of is the certificate of key ID id that names node, if there is one.
func (ks keySet) of(id []byte, node string) (auditKey, bool) {
	for _, k := range ks[hex.EncodeToString(id)] {
		if k.node == node {
			return k, true
		}
	}
	return auditKey{}, false
}

func nodesOf(ks []auditKey) string {
	var names []string
	for _, k := range ks {
		names = append(names, ChainName(k.node))
	}
	return strings.Join(names, " and ")
}

// Verify checks a bundle: for each section, the header's signature and
// the audit key certificates; every event's sequence number and link to
// the one before; that the first event is anchored (the chain's first, or
// a seal) and the last is a seal; every seal's signature; and that the
// section ends where its header says, on the bytes the header was signed
// over. In a bundle of several chains, it also checks that the sections
// are those every header lists, in that order, all of one export. It
// reports every problem it finds, each naming the event at fault where
// one is, and the node whose chain holds it.
func Verify(bundle []byte, opts Options) *Report {
	r := &Report{}
	lines := bytes.Split(bundle, []byte("\n"))
	if last := len(lines) - 1; len(lines[last]) == 0 {
		lines = lines[:last]
	} else {
		r.problem(0, len(lines), "the bundle does not end with a newline (cut short?)")
	}
	if len(lines) == 0 {
		r.problem(0, 1, "empty bundle")
		return r
	}
	if isChains(lines) {
		r.checkChains(lines, opts)
	} else {
		s := &sectionCheck{r: r, line: 1}
		s.check(lines[0], lines[1:], Format, opts)
		r.Header, r.Anchored = s.h, s.anchored
		r.Sections = []Section{s.report()}
	}
	r.checkExpected(opts.Nodes)
	slices.SortStableFunc(r.Problems, func(a, b Problem) int { return a.Line - b.Line })
	return r
}

// checkExpected reports each node of nodes whose chain the bundle neither
// holds nor lists as not included, at line 1: the list it is missing from.
func (r *Report) checkExpected(nodes []string) {
	for _, node := range nodes {
		held := slices.ContainsFunc(r.Sections, func(s Section) bool { return s.Node == node }) ||
			slices.ContainsFunc(r.Omitted, func(c Chain) bool { return c.Node == node })
		if !held {
			r.Problems = append(r.Problems, Problem{Node: node, Line: 1,
				Message: fmt.Sprintf("%s, expected, is neither in the bundle nor listed as not included (its records removed from the store?)", chainOf(node))})
		}
	}
}

// formatOf is the format a header line names, if it names one.
func formatOf(line []byte) string {
	var sh struct {
		Header struct {
			Format string `json:"format"`
		} `json:"header"`
	}
	if json.Unmarshal(line, &sh) != nil {
		return ""
	}
	return sh.Header.Format
}

// isChains reports whether a bundle is of format v2: its first line says
// so or, if it names no known format (edited), a later line is a header.
func isChains(lines [][]byte) bool {
	switch formatOf(lines[0]) {
	case FormatChains:
		return true
	case Format:
		return false
	}
	return slices.ContainsFunc(lines[1:], func(l []byte) bool { return bytes.HasPrefix(l, headerPrefix) })
}

// listOf is the list of chains in the first header line that names one,
// decoded leniently: what the sections should be, as far as the bundle
// says, to name the chain of a section whose own header is unreadable.
func listOf(headers [][]byte) []Chain {
	for _, line := range headers {
		var sh struct {
			Header struct {
				Chains []Chain `json:"chains"`
			} `json:"header"`
		}
		if json.Unmarshal(line, &sh) == nil && len(sh.Header.Chains) > 0 {
			return sh.Header.Chains
		}
	}
	return nil
}

// headerPrefix starts every header line signerd writes, and no event.
var headerPrefix = []byte(`{"header":`)

// checkChains checks a bundle of format v2: each section as a bundle of
// one chain is checked, and the sections against the list of chains of
// the first header, which every other must repeat.
func (r *Report) checkChains(lines [][]byte, opts Options) {
	var starts []int
	for i, l := range lines {
		if i == 0 || bytes.HasPrefix(l, headerPrefix) {
			starts = append(starts, i)
		}
	}
	var guess []Chain // the chains with a section, until the first header is checked
	var headers [][]byte
	for _, start := range starts {
		headers = append(headers, lines[start])
	}
	for _, c := range listOf(headers) {
		if c.Omitted == "" {
			guess = append(guess, c)
		}
	}
	var listed []Chain // the chains with a section, as the first header lists them
	var checks []*sectionCheck
	r.Anchored = true
	for i, start := range starts {
		end := len(lines)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		s := &sectionCheck{r: r, index: i + 1, line: start + 1}
		if i < len(guess) {
			s.node = guess[i].Node
		}
		s.check(lines[start], lines[start+1:end], FormatChains, opts)
		if i == 0 {
			r.Header = s.h
			listed = r.listChains(s)
			if !s.decoded {
				listed = guess
			}
		}
		r.Anchored = r.Anchored && s.anchored
		r.Sections = append(r.Sections, s.report())
		checks = append(checks, s)
	}
	first := checks[0]
	for i, s := range checks {
		switch {
		case !s.decoded:
			continue // its header's problem is reported
		case i >= len(listed):
			s.problem(0, s.line, "a section of %s's chain beyond the %d the bundle lists (added?)", ChainName(s.h.Node), len(listed))
		case s.h.Node != listed[i].Node:
			s.problem(0, s.line, "the section holds %s's chain where the bundle lists %s's (sections moved or swapped?)",
				ChainName(s.h.Node), ChainName(listed[i].Node))
		}
		if s.h.Section != i+1 {
			s.problem(0, s.line, "header: section %d, but it is section %d of the bundle (sections moved?)", s.h.Section, i+1)
		}
		if i > 0 && first.decoded {
			if !bytes.Equal(exportOf(s.h), exportOf(first.h)) {
				s.problem(0, s.line, "header: the export it names (when, by whom, window, chains) is not the first section's (taken from another bundle?)")
			}
			if !bytes.Equal(s.signer, first.signer) {
				s.problem(0, s.line, "header: signed by audit key %x, the first section's by %x: one export's headers are signed by one key", s.signer, first.signer)
			}
		}
	}
	for i := len(checks); i < len(listed); i++ {
		r.Problems = append(r.Problems, Problem{Section: i + 1, Node: listed[i].Node, Line: len(lines),
			Message: fmt.Sprintf("the bundle lists %s's chain as section %d but holds no such section (removed?)", ChainName(listed[i].Node), i+1)})
	}
	if len(r.Keys) == 0 {
		r.Anchored = false
	}
}

// listChains checks the first header's list of chains, records the ones
// omitted, and returns those with a section.
func (r *Report) listChains(s *sectionCheck) []Chain {
	if !s.decoded {
		return nil
	}
	var listed []Chain
	seen := map[string]bool{}
	for _, c := range s.h.Chains {
		if seen[c.Node] {
			s.problem(0, s.line, "header: %s's chain listed twice", ChainName(c.Node))
		}
		seen[c.Node] = true
		if c.Omitted != "" {
			r.Omitted = append(r.Omitted, c)
			if !IsNeverSealed(c.Omitted) {
				// The exporting node found the chain and could not put it
				// in: the export is incomplete, whatever the reason.
				s.r.Problems = append(s.r.Problems, Problem{Node: c.Node, Line: s.line,
					Message: fmt.Sprintf("%s is not in the bundle, and not because it was never sealed: %s", chainOf(c.Node), c.Omitted)})
			}
			continue
		}
		listed = append(listed, c)
	}
	if len(listed) == 0 {
		s.problem(0, s.line, "header: the bundle lists no chain it holds")
	}
	return listed
}

// exportOf is what every header of one export says alike.
func exportOf(h Header) []byte {
	b, _ := json.Marshal(Header{ExportedAt: h.ExportedAt, ExportedBy: h.ExportedBy, Since: h.Since, Until: h.Until, Chains: h.Chains})
	return b
}

// sectionCheck checks one section of a bundle: a header and the events of
// one chain.
type sectionCheck struct {
	r        *Report
	index    int    // from 1 in format v2; 0 in v1
	node     string // the chain's node, as far as known
	line     int    // of the header
	h        Header
	decoded  bool   // the header decoded
	signer   []byte // the key ID the header names as its signer
	anchored bool
	events   int
	seals    int
}

func (s *sectionCheck) problem(seq uint64, line int, format string, args ...any) {
	s.r.Problems = append(s.r.Problems, Problem{Section: s.index, Node: s.node, Seq: seq, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (s *sectionCheck) report() Section {
	return Section{Index: s.index, Node: s.node, Header: s.h, Line: s.line, Events: s.events, Seals: s.seals}
}

// check checks the section's header line and its event lines.
func (s *sectionCheck) check(header []byte, events [][]byte, format string, opts Options) {
	keys := s.checkHeader(header, format, opts)
	s.checkEvents(events, keys)
}

// checkHeader decodes and checks the header line, returning the audit
// keys it certifies (even if its signature fails, so seals can still be
// checked).
func (s *sectionCheck) checkHeader(line []byte, format string, opts Options) keySet {
	var sh signedHeader
	if err := decodeStrict(line, &sh); err != nil {
		s.problem(0, s.line, "header: %v", err)
		return nil
	}
	if canon, _ := json.Marshal(sh); !bytes.Equal(canon, line) {
		s.problem(0, s.line, "header: not in the form signerd writes (edited?)")
	}
	if err := decodeStrict(sh.Header, &s.h); err != nil {
		s.problem(0, s.line, "header: %v", err)
		return nil
	}
	s.decoded, s.signer = true, sh.KeyID
	if format == FormatChains {
		s.node = s.h.Node
	}
	switch {
	case s.h.Format != format:
		s.problem(0, s.line, "header: format %q, want %q", s.h.Format, format)
	case format == Format && (s.h.Node != "" || s.h.Section != 0 || s.h.Unsealed != 0 || s.h.Chains != nil):
		s.problem(0, s.line, "header: format %q holds the fields of %q", Format, FormatChains)
	case format == FormatChains && s.index == 1 && len(s.h.Chains) == 0:
		s.problem(0, s.line, "header: format %q without its list of chains", FormatChains)
	}
	keys := keySet{}
	anchored := opts.Root != nil && len(s.h.Keys) > 0
	for i, k := range s.h.Keys {
		key, chained, err := certifiedKey(k, opts.Root)
		if err != nil {
			s.problem(0, s.line, "header: audit key %d (%x): %v", i+1, k.KeyID, err)
			anchored = false
			continue
		}
		anchored = anchored && chained
		id := hex.EncodeToString(k.KeyID)
		keys[id] = append(keys[id], key)
		if !slices.ContainsFunc(s.r.Keys, func(c *smx509.Certificate) bool { return bytes.Equal(c.Raw, key.cert.Raw) }) {
			s.r.Keys = append(s.r.Keys, key.cert)
		}
	}
	s.anchored = anchored
	signers := keys[hex.EncodeToString(sh.KeyID)]
	_, ownChain := keys.of(sh.KeyID, s.h.Node)
	switch {
	case len(signers) == 0:
		s.problem(0, s.line, "header: signed by key %x, which the bundle does not certify", sh.KeyID)
	case !sm2.VerifyASN1WithSM2(signers[0].pub, nil, headerMessage(s.h.Format, sh.Header), sh.Signature):
		s.problem(0, s.line, "header: signature does not verify under audit key %x (header edited?)", sh.KeyID)
	case s.index <= 1 && !ownChain:
		// The exporting node's own chain comes first (later headers are
		// checked to be signed by the same key).
		s.problem(0, s.line, "header: signed by audit key %x, certified for %s, but the bundle starts with %s's chain: an export starts with the exporting node's own",
			sh.KeyID, nodesOf(signers), ChainName(s.h.Node))
	}
	return keys
}

// certifiedKey checks an audit key's certificate: issued by the CA
// certificate beside it, for the key it names, as an audit key; and, with
// root, that the issuing CA chains to root.
func certifiedKey(k Key, root *smx509.Certificate) (auditKey, bool, error) {
	cert, err := smx509.ParseCertificate(k.Certificate)
	if err != nil {
		return auditKey{}, false, fmt.Errorf("certificate: %w", err)
	}
	issuer, err := smx509.ParseCertificate(k.Issuer)
	if err != nil {
		return auditKey{}, false, fmt.Errorf("issuer certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	switch {
	case !ok || !sm2.IsSM2PublicKey(pub):
		return auditKey{}, false, fmt.Errorf("certificate key is %T, not SM2", cert.PublicKey)
	case !bytes.Equal(hsm.KeyID(pub), k.KeyID):
		return auditKey{}, false, fmt.Errorf("certificate is for key %x", hsm.KeyID(pub))
	case cert.KeyUsage != KeyUsage || !strings.HasPrefix(cert.Subject.CommonName, KeySubjectPrefix):
		return auditKey{}, false, fmt.Errorf("certificate %q is not an audit key certificate", cert.Subject)
	}
	node, err := KeyNode(cert)
	if err != nil {
		return auditKey{}, false, fmt.Errorf("certificate: %w", err)
	}
	if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) {
		return auditKey{}, false, fmt.Errorf("certificate names issuer %q, not %q beside it", cert.Issuer, issuer.Subject)
	}
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		return auditKey{}, false, fmt.Errorf("certificate not signed by %q: %w", issuer.Subject, err)
	}
	key := auditKey{pub: pub, node: node, cert: cert, issuer: issuer}
	if root == nil {
		return key, false, nil
	}
	if !bytes.Equal(issuer.Raw, root.Raw) {
		if !bytes.Equal(issuer.RawIssuer, root.RawSubject) {
			return auditKey{}, false, fmt.Errorf("issuing CA %q does not chain to root %q: it names issuer %q", issuer.Subject, root.Subject, issuer.Issuer)
		}
		if err := issuer.CheckSignatureFrom(root); err != nil {
			return auditKey{}, false, fmt.Errorf("issuing CA %q does not chain to root %q: %w", issuer.Subject, root.Subject, err)
		}
		key.root = root
	}
	return key, true, nil
}

// link is what is known of one event line.
type link struct {
	line   int // bundle line number
	stored []byte
	ev     *store.Event // nil if the line is not an event
	pos    uint64       // the sequence number this line should hold
	seqOK  bool
	linked bool // Prev is the chain hash of the line before (or the anchor holds)
}

func (s *sectionCheck) checkEvents(lines [][]byte, keys keySet) {
	h := s.h
	if len(lines) == 0 {
		s.problem(0, s.line, "the section holds no events")
		return
	}
	links := make([]link, len(lines))
	expect := h.First
	for i, stored := range lines {
		l := &links[i]
		l.line, l.stored = s.line+1+i, stored
		var e store.Event
		if err := json.Unmarshal(stored, &e); err != nil {
			if expect == 0 {
				expect = 1
			}
			l.pos = expect
			s.problem(l.pos, l.line, "not an event as signerd stores them: %v", err)
			expect++
			continue
		}
		l.ev = &e
		s.r.Events = append(s.r.Events, Record{Event: e, Line: l.line, Node: s.node})
		s.events++
		if i == 0 && expect == 0 { // no usable header: start where the bundle does
			expect = e.Seq
		}
		l.pos = expect
		switch {
		case e.Seq == expect:
			l.seqOK = true
		case e.Seq > expect:
			s.problem(expect, l.line, "events %s missing: the line holds event %d", span(expect, e.Seq-1), e.Seq)
		default:
			s.problem(expect, l.line, "holds event %d, which belongs earlier (out of order or repeated)", e.Seq)
		}
		expect = max(expect, e.Seq+1)
		if i == 0 {
			l.linked = s.anchor(l, h)
		} else {
			l.linked = bytes.Equal(e.Prev, store.ChainHash(links[i-1].stored))
		}
		s.checkSeal(l, keys)
	}
	// A broken link is blamed on the event whose bytes changed: the one
	// before it if this event's own bytes still chain to the next (so its
	// Prev is as written), else this one.
	last := &links[len(links)-1]
	headOK := bytes.Equal(h.Head, store.ChainHash(last.stored))
	linkedOut := func(i int) bool {
		if i+1 < len(links) {
			return links[i+1].linked
		}
		return headOK
	}
	for i := 1; i < len(links); i++ {
		l, prev := &links[i], &links[i-1]
		switch {
		case l.linked, l.ev == nil, prev.ev == nil, l.ev.Seq > l.pos:
			continue // linked, or explained by a problem already reported
		case linkedOut(i):
			s.problem(prev.pos, prev.line, "edited: its bytes are not those event %d chains to", l.ev.Seq)
		default:
			s.problem(l.pos, l.line, "does not chain to the event before it (edited, inserted or moved)")
		}
	}
	if !headOK && last.pos == h.Last && (last.linked || len(links) == 1) {
		s.problem(last.pos, last.line, "edited: its bytes are not those the bundle header was signed over")
	}
	switch {
	case last.pos < h.Last:
		s.problem(last.pos+1, last.line, "the bundle ends at event %d but was exported through event %d: events %s removed from the end",
			last.pos, h.Last, span(last.pos+1, h.Last))
	case last.pos > h.Last && h.Last != 0:
		s.problem(h.Last+1, last.line, "the bundle was exported through event %d but goes on to event %d: events added at the end", h.Last, last.pos)
	}
	s.checkTail(links)
}

// anchor checks the first event: the log's first, chaining to the
// genesis hash, or a seal, whose signature vouches for its Prev.
func (s *sectionCheck) anchor(l *link, h Header) bool {
	e := l.ev
	switch {
	case e.Seq == 1:
		if !bytes.Equal(e.Prev, store.Genesis()) {
			s.problem(1, l.line, "the log's first event does not start the chain")
			return false
		}
	case e.Seal == nil:
		s.problem(e.Seq, l.line, "the bundle starts at event %d, which is not a seal: no signature anchors it", e.Seq)
		return false
	}
	return true
}

// checkSeal verifies a seal event's signature under its certified key,
// and that the key certificate, its issuing CA's certificate and (given
// one) the root were all valid when it was made.
func (s *sectionCheck) checkSeal(l *link, keys keySet) {
	e := l.ev
	if e.Seal == nil {
		if e.Action == "audit.seal" && e.Outcome == store.OutcomeOK {
			s.problem(l.pos, l.line, "a seal without a signature")
		}
		return
	}
	s.r.Seals++
	s.seals++
	k, ok := keys.of(e.Seal.KeyID, s.node)
	certified := keys[hex.EncodeToString(e.Seal.KeyID)]
	switch {
	case !ok && len(certified) == 0:
		s.problem(l.pos, l.line, "sealed by key %x, which the bundle does not certify", e.Seal.KeyID)
	case !ok:
		s.problem(l.pos, l.line, "sealed by audit key %x, certified for %s, not for %s: one node's key cannot vouch for another's chain",
			e.Seal.KeyID, nodesOf(certified), ChainName(s.node))
	case store.VerifySeal(k.pub, *e) != nil:
		s.problem(l.pos, l.line, "seal signature does not verify under audit key %x", e.Seal.KeyID)
	case !validAt(k.cert, e.Time):
		s.problem(l.pos, l.line, "sealed at %s, outside its key certificate's validity", e.Time.Format(time.RFC3339))
	case !validAt(k.issuer, e.Time):
		s.problem(l.pos, l.line, "sealed at %s, outside the validity of issuing CA %q (%s to %s)", e.Time.Format(time.RFC3339),
			k.issuer.Subject, k.issuer.NotBefore.Format(time.RFC3339), k.issuer.NotAfter.Format(time.RFC3339))
	case k.root != nil && !validAt(k.root, e.Time):
		s.problem(l.pos, l.line, "sealed at %s, outside the validity of root %q (%s to %s)", e.Time.Format(time.RFC3339),
			k.root.Subject, k.root.NotBefore.Format(time.RFC3339), k.root.NotAfter.Format(time.RFC3339))
	}
}

// validAt reports whether c was within its validity at t (both ends
// included, as RFC 5280 says).
func validAt(c *smx509.Certificate, t time.Time) bool {
	return !t.Before(c.NotBefore) && !t.After(c.NotAfter)
}

// checkTail reports events after the last seal: nothing signed vouches
// for them.
func (s *sectionCheck) checkTail(links []link) {
	i := len(links)
	for i > 0 && (links[i-1].ev == nil || links[i-1].ev.Seal == nil) {
		i--
	}
	if i == len(links) {
		return
	}
	// Not an event at fault: the fault, if any, is what is missing after.
	first, last := links[i].pos, links[len(links)-1].pos
	s.problem(0, links[i].line, "events %s follow the last seal: no signature vouches for them (the bundle's own seal removed?)", span(first, last))
}

func span(a, b uint64) string {
	if a >= b {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d–%d", a, b)
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
