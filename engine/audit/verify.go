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
const KeySubjectPrefix = "signerd audit key"

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
}

// Problem is one thing wrong with a bundle. Seq names the event at fault
// (0 when the fault is the header's); Line is the bundle line.
type Problem struct {
	Seq     uint64 `json:"seq,omitempty"`
	Line    int    `json:"line"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Seq == 0 {
		return fmt.Sprintf("line %d: %s", p.Line, p.Message)
	}
	return fmt.Sprintf("event %d (line %d): %s", p.Seq, p.Line, p.Message)
}

// Record is an event of the bundle and the line it is on.
type Record struct {
	Event store.Event
	Line  int
}

// Report is what Verify found.
type Report struct {
	Header Header
	// Events are the lines that decode as events, in bundle order.
	Events []Record
	Seals  int
	// Keys are the audit key certificates, with their issuers.
	Keys []*smx509.Certificate
	// Anchored: Options.Root was given and every audit key chains to it.
	Anchored bool
	Problems []Problem
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

// FirstBad is the lowest-numbered event a problem names, if any does.
func (r *Report) FirstBad() (uint64, bool) {
	var first uint64
	for _, p := range r.Problems {
		if p.Seq != 0 && (first == 0 || p.Seq < first) {
			first = p.Seq
		}
	}
	return first, first != 0
}

func (r *Report) problem(seq uint64, line int, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Seq: seq, Line: line, Message: fmt.Sprintf(format, args...)})
}

// auditKey is a certified audit key, the CA certificate that issued it
// and, when one was given, the root that CA chains to.
type auditKey struct {
	pub    *ecdsa.PublicKey
	cert   *smx509.Certificate
	issuer *smx509.Certificate
	root   *smx509.Certificate
}

// Verify checks a bundle: the header's signature and the audit key
// certificates; every event's sequence number and link to the one before;
// that the first event is anchored (the log's first, or a seal) and the
// last is a seal; every seal's signature; and that the bundle ends where
// its header says, on the bytes the header was signed over. It reports
// every problem it finds, each naming the event at fault where one is.
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
	keys := r.checkHeader(lines[0], opts)
	r.checkEvents(lines[1:], keys)
	slices.SortStableFunc(r.Problems, func(a, b Problem) int { return a.Line - b.Line })
	return r
}

// checkHeader decodes and checks line 1, returning the audit keys it
// certifies (even if its signature fails, so seals can still be checked).
func (r *Report) checkHeader(line []byte, opts Options) map[string]auditKey {
	var sh signedHeader
	if err := decodeStrict(line, &sh); err != nil {
		r.problem(0, 1, "header: %v", err)
		return nil
	}
	if canon, _ := json.Marshal(sh); !bytes.Equal(canon, line) {
		r.problem(0, 1, "header: not in the form signerd writes (edited?)")
	}
	if err := decodeStrict(sh.Header, &r.Header); err != nil {
		r.problem(0, 1, "header: %v", err)
		return nil
	}
	if r.Header.Format != Format {
		r.problem(0, 1, "header: format %q, want %q", r.Header.Format, Format)
	}
	keys := map[string]auditKey{}
	anchored := opts.Root != nil && len(r.Header.Keys) > 0
	for i, k := range r.Header.Keys {
		key, chained, err := certifiedKey(k, opts.Root)
		if err != nil {
			r.problem(0, 1, "header: audit key %d (%x): %v", i+1, k.KeyID, err)
			anchored = false
			continue
		}
		anchored = anchored && chained
		keys[hex.EncodeToString(k.KeyID)] = key
		r.Keys = append(r.Keys, key.cert)
	}
	r.Anchored = anchored
	signer, ok := keys[hex.EncodeToString(sh.KeyID)]
	switch {
	case !ok:
		r.problem(0, 1, "header: signed by key %x, which the bundle does not certify", sh.KeyID)
	case !sm2.VerifyASN1WithSM2(signer.pub, nil, HeaderMessage(sh.Header), sh.Signature):
		r.problem(0, 1, "header: signature does not verify under audit key %x (header edited?)", sh.KeyID)
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
	if !bytes.Equal(cert.RawIssuer, issuer.RawSubject) {
		return auditKey{}, false, fmt.Errorf("certificate names issuer %q, not %q beside it", cert.Issuer, issuer.Subject)
	}
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		return auditKey{}, false, fmt.Errorf("certificate not signed by %q: %w", issuer.Subject, err)
	}
	key := auditKey{pub: pub, cert: cert, issuer: issuer}
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

func (r *Report) checkEvents(lines [][]byte, keys map[string]auditKey) {
	h := r.Header
	if len(lines) == 0 {
		r.problem(0, 1, "the bundle holds no events")
		return
	}
	links := make([]link, len(lines))
	expect := h.First
	for i, stored := range lines {
		l := &links[i]
		l.line, l.stored = i+2, stored
		var e store.Event
		if err := json.Unmarshal(stored, &e); err != nil {
			if expect == 0 {
				expect = 1
			}
			l.pos = expect
			r.problem(l.pos, l.line, "not an event as signerd stores them: %v", err)
			expect++
			continue
		}
		l.ev = &e
		r.Events = append(r.Events, Record{Event: e, Line: l.line})
		if i == 0 && expect == 0 { // no usable header: start where the bundle does
			expect = e.Seq
		}
		l.pos = expect
		switch {
		case e.Seq == expect:
			l.seqOK = true
		case e.Seq > expect:
			r.problem(expect, l.line, "events %s missing: the line holds event %d", span(expect, e.Seq-1), e.Seq)
		default:
			r.problem(expect, l.line, "holds event %d, which belongs earlier (out of order or repeated)", e.Seq)
		}
		expect = max(expect, e.Seq+1)
		if i == 0 {
			l.linked = r.anchor(l, h)
		} else {
			l.linked = bytes.Equal(e.Prev, store.ChainHash(links[i-1].stored))
		}
		r.checkSeal(l, keys)
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
			r.problem(prev.pos, prev.line, "edited: its bytes are not those event %d chains to", l.ev.Seq)
		default:
			r.problem(l.pos, l.line, "does not chain to the event before it (edited, inserted or moved)")
		}
	}
	if !headOK && last.pos == h.Last && (last.linked || len(links) == 1) {
		r.problem(last.pos, last.line, "edited: its bytes are not those the bundle header was signed over")
	}
	switch {
	case last.pos < h.Last:
		r.problem(last.pos+1, last.line, "the bundle ends at event %d but was exported through event %d: events %s removed from the end",
			last.pos, h.Last, span(last.pos+1, h.Last))
	case last.pos > h.Last && h.Last != 0:
		r.problem(h.Last+1, last.line, "the bundle was exported through event %d but goes on to event %d: events added at the end", h.Last, last.pos)
	}
	r.checkTail(links)
}

// anchor checks the first event: the log's first, chaining to the
// genesis hash, or a seal, whose signature vouches for its Prev.
func (r *Report) anchor(l *link, h Header) bool {
	e := l.ev
	switch {
	case e.Seq == 1:
		if !bytes.Equal(e.Prev, store.Genesis()) {
			r.problem(1, l.line, "the log's first event does not start the chain")
			return false
		}
	case e.Seal == nil:
		r.problem(e.Seq, l.line, "the bundle starts at event %d, which is not a seal: no signature anchors it", e.Seq)
		return false
	}
	return true
}

// checkSeal verifies a seal event's signature under its certified key,
// and that the key certificate, its issuing CA's certificate and (given
// one) the root were all valid when it was made.
func (r *Report) checkSeal(l *link, keys map[string]auditKey) {
	e := l.ev
	if e.Seal == nil {
		if e.Action == "audit.seal" && e.Outcome == store.OutcomeOK {
			r.problem(l.pos, l.line, "a seal without a signature")
		}
		return
	}
	r.Seals++
	k, ok := keys[hex.EncodeToString(e.Seal.KeyID)]
	switch {
	case !ok:
		r.problem(l.pos, l.line, "sealed by key %x, which the bundle does not certify", e.Seal.KeyID)
	case store.VerifySeal(k.pub, *e) != nil:
		r.problem(l.pos, l.line, "seal signature does not verify under audit key %x", e.Seal.KeyID)
	case !validAt(k.cert, e.Time):
		r.problem(l.pos, l.line, "sealed at %s, outside its key certificate's validity", e.Time.Format(time.RFC3339))
	case !validAt(k.issuer, e.Time):
		r.problem(l.pos, l.line, "sealed at %s, outside the validity of issuing CA %q (%s to %s)", e.Time.Format(time.RFC3339),
			k.issuer.Subject, k.issuer.NotBefore.Format(time.RFC3339), k.issuer.NotAfter.Format(time.RFC3339))
	case k.root != nil && !validAt(k.root, e.Time):
		r.problem(l.pos, l.line, "sealed at %s, outside the validity of root %q (%s to %s)", e.Time.Format(time.RFC3339),
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
func (r *Report) checkTail(links []link) {
	i := len(links)
	for i > 0 && (links[i-1].ev == nil || links[i-1].ev.Seal == nil) {
		i--
	}
	if i == len(links) {
		return
	}
	// Not an event at fault: the fault, if any, is what is missing after.
	first, last := links[i].pos, links[len(links)-1].pos
	r.problem(0, links[i].line, "events %s follow the last seal: no signature vouches for them (the bundle's own seal removed?)", span(first, last))
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
