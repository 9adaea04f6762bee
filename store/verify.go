package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Finding is one thing wrong with a store file: where (the bucket, and
// the key, serial or request id there, or the audit event) and what.
type Finding struct {
	Bucket string `json:"bucket"`
	// Key is the record's key as the API shows it: a serial in hex, a
	// request id, an index key in hex.
	Key     string `json:"key,omitempty"`
	Seq     uint64 `json:"seq,omitempty"` // an audit event
	Problem string `json:"problem"`
}

func (f Finding) String() string {
	where := "bucket " + strconv.Quote(f.Bucket)
	switch {
	case f.Seq != 0:
		where += fmt.Sprintf(", event %d", f.Seq)
	case f.Key != "":
		where += ", " + f.Key
	}
	return where + ": " + f.Problem
}

// Report is what Verify found in a store file.
type Report struct {
	Schema       int    `json:"schema"`
	Certificates int    `json:"certificates"`
	Serials      int    `json:"serials"`
	Requests     int    `json:"requests"`
	Revoked      int    `json:"revoked"`
	Events       uint64 `json:"events"`
	// AuditHead and AuditHash are the log's head as the file records it;
	// LastSeal is the last seal event's sequence number (0: none). The
	// events after it are chained but not yet vouched for by a signature.
	AuditHead uint64 `json:"audit_head"`
	AuditHash []byte `json:"audit_hash"`
	LastSeal  uint64 `json:"last_seal"`
	// OCSPResponses counts the certificates with an OCSP record (a
	// response, or only a due time), OCSPDue their due entries.
	OCSPResponses int `json:"ocsp_responses"`
	OCSPDue       int `json:"ocsp_due"`
	// Chains are the named nodes' audit chains (a store shared by several
	// nodes); the fields above are the unnamed chain's.
	Chains []ChainReport `json:"chains,omitempty"`
	// Notes are observations that need nothing done (an index the next
	// open rebuilds).
	Notes    []string  `json:"notes,omitempty"`
	Findings []Finding `json:"findings,omitempty"`
}

// ChainReport is one named node's audit chain, as Report gives the
// unnamed chain's.
type ChainReport struct {
	Node      string `json:"node"`
	Events    uint64 `json:"events"`
	AuditHead uint64 `json:"audit_head"`
	AuditHash []byte `json:"audit_hash"`
	LastSeal  uint64 `json:"last_seal"`
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

// maxFindingsPerCheck bounds what one kind of damage adds to a report, so
// a file damaged throughout still gives a readable one.
const maxFindingsPerCheck = 20

// Verify checks the store file at path without changing it (it is opened
// read-only, and may be a copy that no signerd holds): the schema version,
// every bucket, every record decodes under its key, each derived index
// against the records (revoked, in-flight, the serials of certificates
// and requests, the key index), and the audit chain from the first event
// to the head. An error means the file could not be read as a store at
// all; what is wrong inside it is in the report's findings. A store
// signerd has open cannot be verified (it holds the file's lock): verify
// a copy.
//
// A file may be hostile or damaged anywhere. Its page structure is checked
// first, with plain reads and without recursion (checkPages): a file
// shorter than the pages it records, a page reached twice (a loop in the
// page tree would make bbolt walk it until memory is gone, which no
// recover survives), an inline bucket named twice, a page number,
// element or freelist count that lies outside its page or the file, a
// page span past maxPageSpan, or a page whose inline buckets hold more
// headers and elements than its bytes, is a *DamageError (errors.Is
// ErrPageStructure) naming the page and bucket, and no record is read. A
// page that still cannot be read is reported as an error, not a crash.
func Verify(path string) (*Report, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("verify: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("verify %s: not a regular file", path)
	case fi.Size() == 0:
		return nil, fmt.Errorf("verify %s: empty file, not a store", path)
	}
	// The page structure first, with plain reads: bbolt itself (at open,
	// to load a freelist, and in every walk) trusts it (pagecheck.go).
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	// A shared lock, as bbolt takes read-only: the store signerd holds
	// is refused here, before pages a writer is changing are read.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("verify %s: in use by a process that writes it (verify a copy)", path)
		}
		return nil, fmt.Errorf("verify %s: lock: %w", path, err)
	}
	err = checkPages(f, fi.Size())
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("verify %s: in use by a process that writes it (verify a copy)", path)
		}
		return nil, fmt.Errorf("verify %s: %w", path, err)
	}
	defer db.Close()
	r := &Report{}
	err = db.View(func(tx *bolt.Tx) (err error) {
		// bbolt reads pages straight from its memory map and trusts what
		// they say: a damaged page makes it panic or read outside the
		// map, which this goroutine turns into an error.
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("the file is damaged: reading its pages failed (%v)", p)
			}
		}()
		if need := tx.Size(); fi.Size() < need {
			return fmt.Errorf("the file is truncated: %d bytes, its pages need %d", fi.Size(), need)
		}
		v := &verifier{t: &Tx{r: boltRecords{tx}}, r: r, counts: map[string]int{}}
		if v.buckets(tx) {
			v.run()
		}
		return v.err
	})
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", path, err)
	}
	return r, nil
}

type verifier struct {
	t      *Tx
	r      *Report
	counts map[string]int // findings per check
	noKeys bool           // a bbolt file without its key index
	// err is the first failure to read (not a finding: the records
	// could not be read at all).
	err error
}

// get reads a record; a failure to read is kept in v.err.
func (v *verifier) get(table string, key []byte) []byte {
	raw, err := v.t.r.get(table, key)
	v.fail(err)
	return raw
}

// each calls fn for every record of table; a failure to read is kept in
// v.err.
func (v *verifier) each(table string, fn func(k, raw []byte) error) {
	v.fail(v.t.r.scan(table, nil, nil, fn))
}

func (v *verifier) fail(err error) {
	if err != nil && v.err == nil {
		v.err = err
	}
}

func (v *verifier) find(check string, f Finding) {
	v.counts[check]++
	switch n := v.counts[check]; {
	case n < maxFindingsPerCheck:
		v.r.Findings = append(v.r.Findings, f)
	case n == maxFindingsPerCheck:
		f.Problem += " (and more like it, not listed)"
		v.r.Findings = append(v.r.Findings, f)
	}
}

// buckets checks a bbolt file's schema version and buckets, and reports
// whether the records can be read.
func (v *verifier) buckets(tx *bolt.Tx) bool {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		v.find("schema", Finding{Bucket: string(bucketMeta), Problem: "missing: not a signerd store"})
		return false
	}
	schema, err := strconv.Atoi(string(meta.Get(keySchema)))
	if err != nil {
		v.find("schema", Finding{Bucket: string(bucketMeta), Key: "schema", Problem: fmt.Sprintf("unreadable schema version %q", meta.Get(keySchema))})
		return false
	}
	v.r.Schema = schema
	if schema != SchemaVersion {
		v.find("schema", Finding{Bucket: string(bucketMeta), Key: "schema",
			Problem: fmt.Sprintf("schema version %d; this signerd reads version %d only", schema, SchemaVersion)})
		return false
	}
	missing := false
	for _, name := range append(allBuckets, bucketKeys) {
		if tx.Bucket(name) != nil {
			continue
		}
		switch {
		case bytes.Equal(name, bucketCompromisedKeys):
			v.r.Notes = append(v.r.Notes, `bucket "compromised-keys" is missing; signerd makes it at open and fills it at start`)
		case addedBucket(name):
			v.r.Notes = append(v.r.Notes, fmt.Sprintf("bucket %q is missing (written by an older signerd); signerd makes it at open", name))
		case bytes.Equal(name, bucketKeys):
			v.r.Notes = append(v.r.Notes, `bucket "keys" is missing; signerd rebuilds it at open`)
			v.noKeys = true
		default:
			v.find("buckets", Finding{Bucket: string(name), Problem: "missing"})
			missing = true
		}
	}
	return !missing // the checks below read every record bucket
}

// run checks the records, whichever engine holds them.
func (v *verifier) run() {
	if raw, err := v.t.r.get(tableMeta, keyClock); err != nil || raw != nil && new(time.Time).UnmarshalText(raw) != nil {
		problem := "unreadable"
		if err != nil {
			problem += ": " + err.Error()
		}
		v.find("meta", Finding{Bucket: tableMeta, Key: string(keyClock), Problem: problem})
	}
	certs := v.certificates()
	v.revokedIndex(certs)
	v.serials(certs)
	v.requests()
	v.keyIndex(certs)
	v.crl()
	v.ocsp()
	v.statistics()
	v.raReplay()
	v.audit()
}

// certificates decodes every certificate; the map is by serial.
func (v *verifier) certificates() map[string]*Certificate {
	certs := map[string]*Certificate{}
	v.each(tableCerts, func(k, raw []byte) error {
		v.r.Certificates++
		c := new(Certificate)
		where := Finding{Bucket: string(bucketCerts), Key: "serial " + HexSerial(k)}
		switch err := json.Unmarshal(raw, c); {
		case err != nil:
			where.Problem = fmt.Sprintf("does not decode: %v", err)
			v.find("certificates", where)
			return nil
		case !bytes.Equal(c.Serial, k):
			where.Problem = fmt.Sprintf("record names serial %s", HexSerial(c.Serial))
			v.find("certificates", where)
		case len(c.DER) == 0 || c.Issuer == "":
			where.Problem = "no DER or no issuer"
			v.find("certificates", where)
		}
		certs[string(k)] = c
		return nil
	})
	return certs
}

// revokedIndex: an entry for every certificate revoked or on hold, with
// its time, reason and notAfter, and none for any other.
func (v *verifier) revokedIndex(certs map[string]*Certificate) {
	for _, c := range certs {
		key := revokedKey(c.Issuer, c.Serial)
		val := v.get(tableRevoked, key)
		where := Finding{Bucket: string(bucketRevoked), Key: "serial " + HexSerial(c.Serial)}
		switch {
		case c.Listed() && val == nil:
			where.Problem = fmt.Sprintf("certificate is %s but not in the index (it would be missing from its CRL)", c.Status)
			v.find("revoked", where)
		case c.Listed() && len(val) == revokedValueSize && !bytes.Equal(val, revokedValue(c)):
			where.Problem = "index entry's time, reason or notAfter differ from the certificate's"
			v.find("revoked", where)
		case !c.Listed() && val != nil:
			where.Problem = fmt.Sprintf("certificate is %s but the index lists it (its CRL would list it)", c.Status)
			v.find("revoked", where)
		}
	}
	v.each(tableRevoked, func(k, _ []byte) error {
		v.r.Revoked++
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			v.find("revoked", Finding{Bucket: string(bucketRevoked), Key: fmt.Sprintf("key %x", k), Problem: "malformed index key"})
			return nil
		}
		serial := k[i+1:]
		c := certs[string(serial)]
		switch {
		case c == nil:
			v.find("revoked", Finding{Bucket: string(bucketRevoked), Key: "serial " + HexSerial(serial), Problem: "index lists a certificate the store does not hold"})
		case c.Issuer != string(k[:i]):
			v.find("revoked", Finding{Bucket: string(bucketRevoked), Key: "serial " + HexSerial(serial),
				Problem: fmt.Sprintf("index lists it under issuer %q, the certificate's issuer is %q", k[:i], c.Issuer)})
		}
		return nil
	})
}

// serials: every certificate's serial reserved and issued, every issued
// serial a certificate, every reserved one a request being signed.
func (v *verifier) serials(certs map[string]*Certificate) {
	for k := range certs {
		where := Finding{Bucket: string(bucketSerials), Key: "serial " + HexSerial([]byte(k))}
		raw := v.get(tableSerials, []byte(k))
		var s Serial
		switch {
		case raw == nil:
			where.Problem = "a certificate has this serial but it was never reserved (it could be issued again)"
			v.find("serials", where)
		case json.Unmarshal(raw, &s) != nil:
		case s.State != SerialIssued:
			where.Problem = fmt.Sprintf("a certificate has this serial but it is recorded %s, not issued", s.State)
			v.find("serials", where)
		}
	}
	v.each(tableSerials, func(k, raw []byte) error {
		v.r.Serials++
		where := Finding{Bucket: string(bucketSerials), Key: "serial " + HexSerial(k)}
		var s Serial
		if err := json.Unmarshal(raw, &s); err != nil {
			where.Problem = fmt.Sprintf("does not decode: %v", err)
			v.find("serials", where)
			return nil
		}
		switch s.State {
		case SerialIssued:
			if certs[string(k)] == nil {
				where.Problem = "recorded issued but the store holds no certificate with it"
				v.find("serials", where)
			}
		case SerialReserved:
			var r Request
			if raw := v.get(tableRequests, []byte(s.RequestID)); raw == nil || json.Unmarshal(raw, &r) != nil ||
				r.State != RequestSigning || !bytes.Equal(r.Serial, k) {
				where.Problem = fmt.Sprintf("reserved for request %q, which is not signing with it", s.RequestID)
				v.find("serials", where)
			}
		case SerialBurned:
		default:
			where.Problem = fmt.Sprintf("unknown state %q", s.State)
			v.find("serials", where)
		}
		return nil
	})
}

// requests: every record decodes under its id; the in-flight index holds
// exactly the requests in the signing state; each request's serial is
// reserved.
func (v *verifier) requests() {
	v.each(tableRequests, func(k, raw []byte) error {
		v.r.Requests++
		where := Finding{Bucket: string(bucketRequests), Key: "request " + strconv.Quote(string(k))}
		var r Request
		if err := json.Unmarshal(raw, &r); err != nil {
			where.Problem = fmt.Sprintf("does not decode: %v", err)
			v.find("requests", where)
			return nil
		}
		if r.ID != string(k) {
			where.Problem = fmt.Sprintf("record names request %q", r.ID)
			v.find("requests", where)
		}
		listed := v.get(tableInFlight, k) != nil
		switch {
		case r.State == RequestSigning && !listed:
			v.find("in-flight", Finding{Bucket: string(bucketInFlight), Key: where.Key,
				Problem: "request is signing but not in the index (a crash would leave its serial unburned)"})
		case r.State != RequestSigning && listed:
			v.find("in-flight", Finding{Bucket: string(bucketInFlight), Key: where.Key,
				Problem: fmt.Sprintf("request is %s but the index has it as signing", r.State)})
		}
		if len(r.Serial) > 0 && v.get(tableSerials, r.Serial) == nil {
			where.Problem = fmt.Sprintf("its serial %s was never reserved", HexSerial(r.Serial))
			v.find("requests", where)
		}
		return nil
	})
	v.each(tableInFlight, func(k, _ []byte) error {
		if v.get(tableRequests, k) == nil {
			v.find("in-flight", Finding{Bucket: string(bucketInFlight), Key: "request " + strconv.Quote(string(k)),
				Problem: "index names a request the store does not hold"})
		}
		return nil
	})
}

// keyIndex: an entry for each certificate's key and none other. An index
// whose mark is behind the log's head is rebuilt at the next open, and so
// is only noted.
func (v *verifier) keyIndex(certs map[string]*Certificate) {
	if v.noKeys {
		return
	}
	if current, err := keyIndexCurrent(v.t); err != nil || !current {
		if err != nil {
			v.fail(err)
			return
		}
		v.r.Notes = append(v.r.Notes, `the key index ("keys") is behind the audit log's head (written by an older signerd); signerd rebuilds it at open`)
		return
	}
	want := map[string]bool{}
	for _, c := range certs {
		k, ok := keyIndexEntry(c)
		if !ok {
			continue
		}
		want[string(k)] = true
		if v.get(tableKeys, k) == nil {
			v.find("keys", Finding{Bucket: string(bucketKeys), Key: "serial " + HexSerial(c.Serial),
				Problem: "the certificate's public key is not indexed (a second use of the key would go unseen)"})
		}
	}
	prefix := len(keyIndexPrefix(nil))
	v.each(tableKeys, func(k, _ []byte) error {
		if !want[string(k)] {
			serial := []byte{}
			if len(k) > prefix {
				serial = k[prefix:]
			}
			v.find("keys", Finding{Bucket: string(bucketKeys), Key: "serial " + HexSerial(serial),
				Problem: "index entry matches no certificate with that serial and key"})
		}
		return nil
	})
}

// crl: every CRL state and layout decodes under a key of its kind; every
// CRL object is one DER SEQUENCE; every change of the log decodes, and
// its sequence is one the store's counter gave.
func (v *verifier) crl() {
	v.each(tableCRL, func(k, raw []byte) error {
		issuer, shard, kind := parseCRLKey(k)
		f := Finding{Bucket: tableCRL, Key: "issuer " + strconv.Quote(issuer)}
		var err error
		switch kind {
		case crlKeyMalformed:
			f.Key, f.Problem = fmt.Sprintf("key %x", k), "malformed key: not an issuer id, its shard or its layout"
		case crlKeyLayout:
			f.Key += " layout"
			var l CRLLayout
			if err = json.Unmarshal(raw, &l); err == nil && (l.Shards < 1 || l.Shards > MaxCRLShards) {
				f.Problem = fmt.Sprintf("layout of %d shards", l.Shards)
			}
		case crlKeyState:
			if shard != 0 {
				f.Key += fmt.Sprintf(" shard %d", shard)
			}
			err = json.Unmarshal(raw, new(CRLState))
		}
		if err != nil {
			f.Problem = fmt.Sprintf("does not decode: %v", err)
		}
		if f.Problem != "" {
			v.find("crl", f)
		}
		return nil
	})
	v.each(tableCRLObjects, func(k, raw []byte) error {
		issuer, shard, delta, ok := parseCRLObjectKey(k)
		if !ok {
			v.find("crl-objects", Finding{Bucket: tableCRLObjects, Key: fmt.Sprintf("key %x", k),
				Problem: "malformed key: want an issuer id, a zero byte, a 2-byte shard, a zero byte and a kind (0 or 1)"})
			return nil
		}
		if !oneDERSequence(raw) {
			kind := "complete"
			if delta {
				kind = "delta"
			}
			v.find("crl-objects", Finding{Bucket: tableCRLObjects, Key: fmt.Sprintf("issuer %q shard %d %s", issuer, shard, kind),
				Problem: fmt.Sprintf("%d bytes that are not one DER SEQUENCE (not a CRL)", len(raw))})
		}
		return nil
	})
	last, err := v.t.CRLChangeSeq()
	if err != nil {
		v.find("crl-changes", Finding{Bucket: tableMeta, Key: string(keyCRLChangeSeq), Problem: err.Error()})
		last = math.MaxUint64 // no bound to check the changes against
	}
	v.each(tableCRLChanges, func(k, raw []byte) error {
		issuer, c, err := parseCRLChange(k, raw)
		switch {
		case err != nil:
			v.find("crl-changes", Finding{Bucket: tableCRLChanges, Key: fmt.Sprintf("key %x", k), Problem: err.Error()})
		case c.Seq > last:
			v.find("crl-changes", Finding{Bucket: tableCRLChanges, Key: fmt.Sprintf("issuer %q change %d", issuer, c.Seq),
				Problem: fmt.Sprintf("past the last sequence given (%d): a later change would take its number", last)})
		}
		return nil
	})
}

// ocsp: every OCSP record decodes under a key of a certificate, its
// response one DER SEQUENCE; every due entry is the one its record names,
// so that no certificate has two, and every record due names one that is
// there. The due times named are kept in memory while the due entries are
// read (as the certificates are): one read of each table, not a lookup a
// record, which on PostgreSQL would be a round trip each.
func (v *verifier) ocsp() {
	named := map[string]bool{} // due keys the records name
	v.each(tableOCSPResponses, func(k, raw []byte) error {
		v.r.OCSPResponses++
		issuer, serial, ok := parseOCSPResponseKey(k)
		if !ok {
			v.find("ocsp-responses", Finding{Bucket: tableOCSPResponses, Key: fmt.Sprintf("key %x", k),
				Problem: "malformed key: want an issuer id, a zero byte and a serial"})
			return nil
		}
		where := Finding{Bucket: tableOCSPResponses, Key: fmt.Sprintf("issuer %q serial %s", issuer, HexSerial(serial))}
		rec, err := decodeOCSPRecord(raw)
		switch {
		case err != nil:
			where.Problem = fmt.Sprintf("does not decode: %v", err)
		case rec.der != nil && !oneDERSequence(rec.der):
			where.Problem = fmt.Sprintf("a response of %d bytes that are not one DER SEQUENCE (not an OCSP response)", len(rec.der))
		}
		if where.Problem != "" {
			v.find("ocsp-responses", where)
			return nil
		}
		if !rec.dueAt.IsZero() {
			named[string(ocspDueKey(rec.dueAt, k))] = true
		}
		return nil
	})
	v.each(tableOCSPDue, func(k, raw []byte) error {
		v.r.OCSPDue++
		dueAt, rk, ok := parseOCSPDueKey(k)
		if !ok {
			v.find("ocsp-due", Finding{Bucket: tableOCSPDue, Key: fmt.Sprintf("key %x", k),
				Problem: "malformed key: want a due time (8 bytes, after 1970), a zero byte, an issuer id, a zero byte and a serial"})
			return nil
		}
		issuer, serial, _ := parseOCSPResponseKey(rk)
		where := Finding{Bucket: tableOCSPDue, Key: fmt.Sprintf("issuer %q serial %s due %s", issuer, HexSerial(serial),
			dueAt.Format(time.RFC3339Nano))}
		switch {
		case named[string(k)]:
			delete(named, string(k))
			if len(raw) != 0 {
				where.Problem = fmt.Sprintf("a value of %d bytes: due entries hold none", len(raw))
				v.find("ocsp-due", where)
			}
		case v.get(tableOCSPResponses, rk) == nil:
			where.Problem = "no OCSP record of the certificate names this entry (it has none)"
			v.find("ocsp-due", where)
		default:
			where.Problem = "the certificate's OCSP record names another due time: a certificate has one due entry, and this one would never be removed"
			v.find("ocsp-due", where)
		}
		return nil
	})
	for _, k := range slices.Sorted(maps.Keys(named)) {
		dueAt, rk, _ := parseOCSPDueKey([]byte(k))
		issuer, serial, _ := parseOCSPResponseKey(rk)
		v.find("ocsp-responses", Finding{Bucket: tableOCSPResponses, Key: fmt.Sprintf("issuer %q serial %s", issuer, HexSerial(serial)),
			Problem: fmt.Sprintf("due at %s, but the due entry is missing: no response would be made for it", dueAt.Format(time.RFC3339Nano))})
	}
}

// oneDERSequence reports whether b is one DER SEQUENCE and nothing more.
func oneDERSequence(b []byte) bool {
	s := cryptobyte.String(b)
	var seq cryptobyte.String
	return s.ReadASN1(&seq, casn1.SEQUENCE) && s.Empty()
}

func (v *verifier) statistics() {
	v.each(tableStats, func(k, raw []byte) error {
		if len(raw) != 8 || bytes.Count(k, []byte("/")) != 2 {
			v.find("statistics", Finding{Bucket: string(bucketStats), Key: strconv.Quote(string(k)), Problem: "malformed counter"})
		}
		return nil
	})
}

// raReplay: every record is an RA replay mark (a time, under a serial)
// or a request's claim (its date and token, under its serial and nonce;
// rareplay.go).
func (v *verifier) raReplay() {
	v.each(tableRAReplay, func(k, raw []byte) error {
		if len(k) == 0 || k[0] != raNonceClaimPrefix {
			if len(k) == 0 || new(time.Time).UnmarshalText(raw) != nil {
				v.find("ra-replay", Finding{Bucket: tableRAReplay, Key: "serial " + HexSerial(k), Problem: "the replay mark is not a time"})
			}
			return nil
		}
		serial, nonce, ok := parseRANonceClaimKey(k)
		switch {
		case !ok:
			v.find("ra-replay", Finding{Bucket: tableRAReplay, Key: fmt.Sprintf("key %x", k), Problem: "malformed request claim key"})
		case len(raw) != 8+raNonceTokenSize:
			v.find("ra-replay", Finding{Bucket: tableRAReplay, Key: fmt.Sprintf("serial %s nonce %q", HexSerial(serial), nonce),
				Problem: fmt.Sprintf("the request claim holds %d bytes, not a date and a token", len(raw))})
		}
		return nil
	})
}

// audit: every node's chain from its first event to its head, and its
// last-seal pointer; every event is some chain's.
func (v *verifier) audit() {
	nodes, err := v.t.AuditChains()
	if err != nil {
		v.find("audit", Finding{Bucket: string(bucketMeta), Key: string(keyAuditHead), Problem: err.Error()})
		return
	}
	events := map[string]uint64{}
	v.each(tableAudit, func(k, _ []byte) error {
		c, ok := chainOfEventKey(k)
		if !ok {
			v.find("audit", Finding{Bucket: string(bucketAudit), Key: fmt.Sprintf("%x", k), Problem: "the key is no audit chain's"})
			return nil
		}
		events[c.node]++
		return nil
	})
	for c := range events {
		if !slices.Contains(nodes, c) {
			v.find("audit", Finding{Bucket: string(bucketMeta), Key: string(chain{c}.metaKey(keyAuditHead)),
				Problem: fmt.Sprintf("%s has events but no head", chain{c})})
		}
	}
	for _, node := range nodes {
		r := v.chain(v.t.Chain(node))
		r.Events = events[node]
		if node == "" {
			v.r.Events, v.r.AuditHead, v.r.AuditHash, v.r.LastSeal = r.Events, r.AuditHead, r.AuditHash, r.LastSeal
			continue
		}
		v.r.Chains = append(v.r.Chains, r)
	}
}

// chain checks one chain.
func (v *verifier) chain(t *Tx) ChainReport {
	r := ChainReport{Node: t.chain.node}
	where := func(f Finding) Finding {
		if r.Node != "" {
			f.Problem = t.chain.String() + ": " + f.Problem
		}
		return f
	}
	head, err := t.auditHead()
	if err != nil {
		v.find("audit", where(Finding{Bucket: string(bucketMeta), Key: string(t.chain.metaKey(keyAuditHead)), Problem: err.Error()}))
		return r
	}
	r.AuditHead, r.AuditHash = head.Seq, head.Hash
	if err := t.VerifyAuditChain(); err != nil {
		f := Finding{Bucket: string(bucketAudit), Problem: err.Error()}
		var at *chainError
		if errors.As(err, &at) {
			f.Seq = at.seq
		}
		v.find("audit", where(f))
	}
	lastKey := t.chain.metaKey(keyAuditLastSeal)
	last, err := t.LastSeal()
	switch {
	case err != nil:
		v.find("audit", where(Finding{Bucket: string(bucketMeta), Key: string(lastKey), Problem: err.Error()}))
	case last != nil:
		r.LastSeal = last.Seq
		if k := v.get(tableMeta, lastKey); len(k) == 8 && binary.BigEndian.Uint64(k) != last.Seq {
			v.find("audit", where(Finding{Bucket: string(bucketMeta), Key: string(lastKey),
				Problem: fmt.Sprintf("points at event %d, which says it is event %d", binary.BigEndian.Uint64(k), last.Seq)}))
		}
	}
	return r
}
