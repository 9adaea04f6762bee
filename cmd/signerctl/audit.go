package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/audit"
	"signerd/store"
)

// Audit commands (SPEC §7.3): an auditor exports the log over the socket;
// anyone holding a bundle and the CA's root certificate verifies it, with
// no secret and no connection to signerd. Without the root there is no
// verdict: a bundle's own certificates prove nothing, since whoever forges
// a bundle makes them too.

// beijing is the zone dates without a time are read in, as the CA's
// statistics are counted.
var beijing = time.FixedZone("CST", 8*3600)

// timeFlag is an RFC 3339 time or a date (midnight, Beijing time).
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

func (f *timeFlag) Set(v string) error {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		f.t = t
		return nil
	}
	t, err := time.ParseInLocation(time.DateOnly, v, beijing)
	if err != nil {
		return fmt.Errorf("%q: want RFC 3339 (2026-11-01T08:00:00+08:00) or a date (2026-11-01, Beijing time)", v)
	}
	f.t = t
	return nil
}

// windowFlags choose events by time.
type windowFlags struct{ since, until timeFlag }

func (w *windowFlags) register(fs *flag.FlagSet) {
	fs.Var(&w.since, "since", "from `time` (RFC 3339, or a date in Beijing time)")
	fs.Var(&w.until, "until", "to `time` (RFC 3339, or a date in Beijing time)")
}

// exportBody is the export request for the window.
func (w *windowFlags) exportBody() api.ExportRequest {
	return api.ExportRequest{Since: w.since.t, Until: w.until.t}
}

func readRoot(path string) (*smx509.Certificate, error) {
	if path == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(raw); b != nil {
		raw = b.Bytes
	}
	root, err := smx509.ParseCertificate(raw)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", path, err)
	}
	return root, nil
}

// auditExport writes a bundle from signerd to a new file and verifies it.
func auditExport(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	var w windowFlags
	w.register(fs)
	out := fs.String("out", "", "write the bundle to `file` (must not exist)")
	rootPath := fs.String("root", "", "verify the bundle against this root certificate `file` (PEM or DER); without it the bundle is only checked for consistency")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"audit export needs --out FILE"}
	}
	root, err := readRoot(*rootPath)
	if err != nil {
		return err
	}
	f, err := createNew(*out, 0o600)
	if err != nil {
		return err
	}
	if err := c.stream(api.RouteExportAudit.Method, api.RouteExportAudit.Path, w.exportBody(), f); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	bundle, err := os.ReadFile(*out)
	if err != nil {
		return err
	}
	return report(stdout, *out, audit.Verify(bundle, audit.Options{Root: root}), false, root != nil)
}

// nodeArg reads a node named on the command line: "-" is the unnamed
// chain's.
func nodeArg(v string) (string, error) {
	if v == "-" {
		return "", nil
	}
	return v, store.ValidNodeName(v)
}

// auditVerify checks a bundle offline.
func auditVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	rootPath := fs.String("root", "", "the CA's root certificate `file` (PEM or DER) the audit key must chain to (required)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	var nodes []string
	fs.Func("nodes", "the `nodes` whose chains the bundle must hold or list as not included, comma-separated (- for the unnamed chain): "+
		"a chain whose every record was removed from the store is in no bundle's list, so only the auditor's own list finds it missing", func(v string) error {
		for _, n := range strings.Split(v, ",") {
			n, err := nodeArg(strings.TrimSpace(n))
			if err != nil {
				return err
			}
			if slices.Contains(nodes, n) {
				return fmt.Errorf("node %q named twice", n)
			}
			nodes = append(nodes, n)
		}
		return nil
	})
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return usageError{"usage: signerctl audit verify --root ROOT [--nodes a,b] [--json] FILE"}
	}
	if *rootPath == "" {
		return usageError{"audit verify needs --root ROOT, the CA's root certificate from the root ceremony: " +
			"without it nothing ties the bundle to the CA, since anyone can write a bundle with certificates of their own"}
	}
	file := files[0]
	root, err := readRoot(*rootPath)
	if err != nil {
		return err
	}
	bundle, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return report(stdout, file, audit.Verify(bundle, audit.Options{Root: root, Nodes: nodes}), *asJSON, true)
}

// errBundleBad: the report was printed; the exit code says the rest.
var errBundleBad = errors.New("the bundle fails verification")

// report prints what Verify found, and fails if anything is wrong. Only a
// bundle verified against a root (rooted) is reported OK; without one, a
// bundle with no problem is reported self-consistent, and not failed.
// Each chain of the bundle gets a line of its own, with the first bad
// event of that chain.
func report(w io.Writer, name string, r *audit.Report, asJSON, rooted bool) error {
	badNode, first, bad := r.FirstBadEvent()
	if asJSON {
		chains := []map[string]any{}
		for _, s := range r.Sections {
			c := map[string]any{"node": s.Node, "first": s.Header.First, "last": s.Header.Last, "events": s.Events,
				"seals": s.Seals, "unsealed": s.Header.Unsealed, "ok": len(r.ProblemsIn(s)) == 0 && r.Anchored}
			if seq, ok := r.FirstBadIn(s); ok {
				c["first_bad_event"] = seq
			}
			chains = append(chains, c)
		}
		for _, o := range r.Omitted {
			chains = append(chains, map[string]any{"node": o.Node, "omitted": o.Omitted, "checked": false})
		}
		v := map[string]any{"ok": r.OK(), "first": r.Header.First, "last": r.Header.Last, "events": len(r.Events),
			"seals": r.Seals, "anchored": r.Anchored, "problems": r.Problems, "chains": chains}
		if r.Problems == nil {
			v["problems"] = []audit.Problem{}
		}
		if bad {
			v["first_bad_event"] = first
			v["first_bad_node"] = badNode
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else {
		h := r.Header
		what := fmt.Sprintf("events %d–%d", h.First, h.Last)
		if len(r.Sections) > 0 && r.Sections[0].Index != 0 {
			what = fmt.Sprintf("chains of %d nodes, %d more not included", len(r.Sections), len(r.Omitted))
		}
		fmt.Fprintf(w, "bundle:   %s: %s, exported %s by uid %d (%s)\n", name, what,
			h.ExportedAt.Format(time.RFC3339), h.ExportedBy.UID, h.ExportedBy.Role)
		fmt.Fprintf(w, "events:   %d, of which %d seals\n", len(r.Events), r.Seals)
		for _, s := range r.Sections {
			fmt.Fprintf(w, "chain:    %s\n", chainLine(r, s))
		}
		var unchecked []string
		for _, o := range r.Omitted {
			fmt.Fprintf(w, "chain:    %s: NOT INCLUDED, NOT CHECKED: %s\n", audit.ChainName(o.Node), o.Omitted)
			unchecked = append(unchecked, audit.ChainName(o.Node))
		}
		for _, k := range r.Keys {
			fmt.Fprintf(w, "key:      %q, serial %X, issued by %q\n", k.Subject.CommonName, k.SerialNumber, k.Issuer)
		}
		if r.Anchored {
			fmt.Fprintln(w, "anchor:   the audit keys chain to the root given")
		} else if len(r.Header.Keys) > 0 {
			fmt.Fprintln(w, "anchor:   NOT CHECKED: give --root with the CA's root certificate to tie the audit keys to it")
			for _, k := range r.Header.Keys {
				sum := sha256.Sum256(k.Issuer)
				fmt.Fprintf(w, "          issuing CA certificate SHA-256 %s\n", hex.EncodeToString(sum[:]))
			}
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "PROBLEM:  %s\n", p)
		}
		switch {
		case bad && len(r.Sections) == 1 && r.Sections[0].Index == 0:
			fmt.Fprintf(w, "FAILED:   first bad event %d\n", first)
		case bad:
			fmt.Fprintf(w, "FAILED:   first bad event %d of %s\n", first, audit.ChainName(badNode))
		case !r.Consistent():
			fmt.Fprintln(w, "FAILED")
		case r.OK() && len(unchecked) > 0:
			fmt.Fprintf(w, "OK:       every hash link and seal verifies, under audit keys certified by the root; NOT CHECKED (not in the bundle): %s\n",
				strings.Join(unchecked, ", "))
		case r.OK():
			fmt.Fprintln(w, "OK:       every hash link and seal verifies, under audit keys certified by the root")
		default:
			fmt.Fprintln(w, "UNVERIFIED: self-consistent only; run signerctl audit verify --root ROOT on it")
		}
	}
	if !r.Consistent() || (rooted && !r.OK()) {
		return errBundleBad
	}
	return nil
}

// chainLine says what was found of one chain: its range, its seals, and
// OK or its first bad event.
func chainLine(r *audit.Report, s audit.Section) string {
	line := fmt.Sprintf("%s: events %d–%d, %d seals", audit.ChainName(s.Node), s.Header.First, s.Header.Last, s.Seals)
	if s.Header.Unsealed > 0 {
		line += fmt.Sprintf(", %d events after its last seal not yet sealed (not in the bundle)", s.Header.Unsealed)
	}
	seq, bad := r.FirstBadIn(s)
	switch {
	case bad:
		return line + fmt.Sprintf(": FAILED at event %d of %s", seq, audit.ChainName(s.Node))
	case len(r.ProblemsIn(s)) > 0:
		return line + ": FAILED"
	case r.Anchored && r.Consistent():
		return line + ": OK"
	case r.Anchored:
		return line + ": no problem of its own"
	}
	return line + ": self-consistent, not checked against a root"
}

// auditShow prints events from a bundle (or, without one, from a fresh
// export) that match the filters, after verifying them.
func auditShow(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("audit show", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	var w windowFlags
	w.register(fs)
	rootPath := fs.String("root", "", "the CA's root certificate `file` the audit key must chain to")
	actor := fs.String("actor", "", "only events by this actor: a `uid`, a role (ra, operator, auditor, system) or a ceremony operator's name")
	action := fs.String("action", "", "only this `action` (certificate.revoke), or a family ending in '*' (certificate.*)")
	serial := fs.String("serial", "", "only events about the certificate with this `serial` (hex)")
	asJSON := fs.Bool("json", false, "print each event as it is stored (JSON, one per line)")
	var node *string
	fs.Func("node", "only events of this `node`'s audit chain (- for the unnamed chain)", func(v string) error {
		n, err := nodeArg(v)
		node = &n
		return err
	})
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if len(files) > 1 {
		return usageError{"usage: signerctl audit show [filters] [FILE] (without FILE, a fresh export from signerd)"}
	}
	root, err := readRoot(*rootPath)
	if err != nil {
		return err
	}
	var bundle []byte
	if len(files) == 1 {
		if bundle, err = os.ReadFile(files[0]); err != nil {
			return err
		}
	} else {
		var buf bytes.Buffer
		if err := c.stream(api.RouteExportAudit.Method, api.RouteExportAudit.Path, w.exportBody(), &buf); err != nil {
			return err
		}
		bundle = buf.Bytes()
	}
	r := audit.Verify(bundle, audit.Options{Root: root})
	match := eventFilter(w, *actor, *action, *serial)
	// Nodes are shown only for a bundle of several chains: a bundle of
	// the unnamed chain alone is listed as it always was.
	named := len(r.Sections) > 1 || len(r.Omitted) > 0 || slices.ContainsFunc(r.Sections, func(s audit.Section) bool { return s.Node != "" })
	for _, rec := range r.Events {
		if !match(rec.Event) || (node != nil && rec.Node != *node) {
			continue
		}
		if *asJSON {
			raw, _ := json.Marshal(rec.Event)
			fmt.Fprintf(stdout, "%s\n", raw)
			continue
		}
		e := rec.Event
		if named {
			n := rec.Node
			if n == "" {
				n = "-"
			}
			fmt.Fprintf(stdout, "%-8s ", n)
		}
		fmt.Fprintf(stdout, "%6d  %s  %-24s %-26s %-34s %-8s %s\n", e.Seq, e.Time.Format(time.RFC3339), actorName(e.Actor),
			e.Action, e.Object, e.Outcome, e.Reason)
	}
	if !r.Consistent() {
		where := "no event named"
		if node, first, bad := r.FirstBadEvent(); bad {
			where = fmt.Sprintf("first bad event %d", first)
			if named {
				where += " of " + audit.ChainName(node)
			}
		}
		fmt.Fprintf(os.Stderr, "WARNING: the bundle fails verification (%d problems, %s); run signerctl audit verify\n",
			len(r.Problems), where)
		return errBundleBad
	}
	if !r.Anchored {
		fmt.Fprintln(os.Stderr, "NOTE: not checked against the CA's root (--root ROOT): these events are only as trustworthy as where the bundle came from")
	}
	return nil
}

func actorName(a store.Actor) string {
	switch {
	case a.Operator != "":
		return "operator " + a.Operator
	case a.UID < 0:
		return a.Role
	}
	return fmt.Sprintf("uid %d (%s)", a.UID, a.Role)
}

func eventFilter(w windowFlags, actor, action, serial string) func(store.Event) bool {
	serial = strings.ToLower(strings.TrimPrefix(serial, "0x"))
	return func(e store.Event) bool {
		switch {
		case !w.since.t.IsZero() && e.Time.Before(w.since.t),
			!w.until.t.IsZero() && e.Time.After(w.until.t),
			serial != "" && strings.ToLower(e.Object) != serial,
			action != "" && !matchAction(action, e.Action),
			actor != "" && !matchActor(actor, e.Actor):
			return false
		}
		return true
	}
}

func matchAction(pattern, action string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(action, prefix)
	}
	return action == pattern
}

func matchActor(want string, a store.Actor) bool {
	if uid, err := strconv.Atoi(want); err == nil {
		return a.UID == uid
	}
	return a.Operator == want || a.Role == want || strings.Contains("+"+a.Role+"+", "+"+want+"+")
}
