package store

import (
	"bytes"
	"fmt"

	"github.com/emmansun/gmsm/sm3"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The key index finds the certificates that certify a public key, so the
// engine can refuse to certify one key for two uses (a holder's signing key
// as its encryption key). Its keys are SM3(subjectPublicKey) ‖ serial, with
// no value; subjectPublicKey is the BIT STRING of the SubjectPublicKeyInfo
// (for EC keys the encoded point), so two encodings of the algorithm
// identifier find the same key.
//
// A store written before the index existed has none, and an older signerd
// writing to the store leaves it behind. Each write transaction of this
// code therefore notes the audit log's head beside the index (every
// certificate is recorded with an audit event, so an older writer moves
// the head without moving the note), and Open rebuilds the index whenever
// the two differ.
//
// (The file's bucket or the database's table is named "keys": tableKeys.)
var keyKeyIndexAtHead = []byte("key-index-at-head")

// CertificatesWithKey calls fn for every certificate whose subject public
// key is the one in spki (a DER SubjectPublicKeyInfo).
func (t *Tx) CertificatesWithKey(spki []byte, fn func(*Certificate) error) error {
	s := cryptobyte.String(spki)
	var inner cryptobyte.String
	if !s.ReadASN1(&inner, casn1.SEQUENCE) || !s.Empty() {
		return fmt.Errorf("key index: not a SubjectPublicKeyInfo")
	}
	key, ok := readPublicKey(inner)
	if !ok {
		return fmt.Errorf("key index: not a SubjectPublicKeyInfo")
	}
	return t.certificatesWithKeyBits(key, fn)
}

// certificatesWithKeyBits calls fn for every certificate whose
// subjectPublicKey BIT STRING is key.
func (t *Tx) certificatesWithKeyBits(key []byte, fn func(*Certificate) error) error {
	prefix := keyIndexPrefix(key)
	// The serials first: fn may write certificates, and a scan's table
	// must not change under it.
	var serials [][]byte
	if err := t.r.scan(tableKeys, nil, prefix, func(k, _ []byte) error {
		serials = append(serials, bytes.Clone(k[len(prefix):]))
		return nil
	}); err != nil {
		return fmt.Errorf("key index: %w", err)
	}
	for _, serial := range serials {
		c, err := t.Certificate(serial)
		if err != nil {
			return fmt.Errorf("key index: %w", err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// indexKey adds c to the key index. A DER that is not a certificate
// (the engine stores none) has no key to index.
func (t *Tx) indexKey(c *Certificate) error {
	k, ok := keyIndexEntry(c)
	if !ok {
		return nil
	}
	return t.r.put(tableKeys, k, []byte{})
}

// keyIndexEntry is c's key in the key index: SM3 of its public key, then
// its serial. A DER that is not a certificate has none.
func keyIndexEntry(c *Certificate) ([]byte, bool) {
	key, ok := certificatePublicKey(c.DER)
	if !ok {
		return nil, false
	}
	return append(keyIndexPrefix(key), c.Serial...), true
}

func keyIndexPrefix(key []byte) []byte {
	h := sm3.Sum(key)
	return h[:]
}

// certificatePublicKey returns the subjectPublicKey bits of a DER
// certificate.
func certificatePublicKey(der []byte) ([]byte, bool) {
	s := cryptobyte.String(der)
	var cert, tbs, spki cryptobyte.String
	if !s.ReadASN1(&cert, casn1.SEQUENCE) || !cert.ReadASN1(&tbs, casn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.SkipASN1(casn1.INTEGER) || // serialNumber
		!tbs.SkipASN1(casn1.SEQUENCE) || // signature
		!tbs.SkipASN1(casn1.SEQUENCE) || // issuer
		!tbs.SkipASN1(casn1.SEQUENCE) || // validity
		!tbs.SkipASN1(casn1.SEQUENCE) || // subject
		!tbs.ReadASN1(&spki, casn1.SEQUENCE) {
		return nil, false
	}
	return readPublicKey(spki)
}

// readPublicKey reads the subjectPublicKey BIT STRING from the contents of
// a SubjectPublicKeyInfo.
func readPublicKey(spki cryptobyte.String) ([]byte, bool) {
	var key cryptobyte.String
	if !spki.SkipASN1(casn1.SEQUENCE) || !spki.ReadASN1(&key, casn1.BIT_STRING) || !spki.Empty() || len(key) < 2 {
		return nil, false
	}
	return key, true
}

// noteKeyIndex records that the key index is current at the audit log's
// present head (see tableKeys).
func noteKeyIndex(t *Tx) error { return noteMark(t, keyKeyIndexAtHead) }

// keyIndexCurrent reports whether the key index was noted at the log's
// present head.
func keyIndexCurrent(t *Tx) (bool, error) { return markCurrent(t, keyKeyIndexAtHead) }

// An index mark (the key index's, the compromised-keys index's) is an
// audit chain's head as stored when the index was last known current:
// the unnamed chain's after the byte 'h' (which keeps an empty log's mark
// from reading as no mark at all), node n's after 'n', n and a zero byte.
// Every write that changes what an index derives from appends to its
// node's chain and moves the mark there, so a mark is current while the
// chain it names has not moved since: a writer that kept the index would
// have moved the mark.
func headMark(t *Tx, c chain) ([]byte, error) {
	head, err := t.r.get(tableMeta, c.metaKey(keyAuditHead))
	if c.node == "" {
		return append([]byte{'h'}, head...), err
	}
	mark := append([]byte{'n'}, c.node...)
	return append(append(mark, 0), head...), err
}

// markChain is the chain a mark names.
func markChain(mark []byte) chain {
	if len(mark) > 0 && mark[0] == 'n' {
		if name, _, ok := bytes.Cut(mark[1:], []byte{0}); ok {
			return chain{string(name)}
		}
	}
	return chain{}
}

// markCurrent reports whether the mark under key in meta is current: at
// the head of the chain it names. A mark naming another node's chain is
// current as it stands: named chains exist only in a database of schema
// version 2 or later, which no signerd older than the indexes opens, so
// every writer to such a store keeps the indexes and moves the mark; and
// reading the other chain's head would cost a write transaction a round
// trip to the database whenever nodes take turns.
func markCurrent(t *Tx, key []byte) (bool, error) {
	noted, err := t.r.get(tableMeta, key)
	if err != nil || noted == nil {
		return false, err
	}
	c := markChain(noted)
	if c.node != "" && c != t.chain {
		return true, nil
	}
	at, err := headMark(t, c)
	return bytes.Equal(noted, at), err
}

// noteMark moves the mark under key in meta to the head of t's chain,
// unless it is current already.
func noteMark(t *Tx, key []byte) error {
	if current, err := markCurrent(t, key); err != nil || current {
		return err
	}
	at, err := headMark(t, t.chain)
	if err != nil {
		return err
	}
	return t.r.put(tableMeta, key, at)
}

// ensureKeyIndex builds the key index from the certificates unless it is
// current.
func ensureKeyIndex(t *Tx) error {
	if current, err := keyIndexCurrent(t); err != nil || current {
		return err
	}
	if err := t.r.clear(tableKeys); err != nil {
		return fmt.Errorf("rebuild key index: %w", err)
	}
	if err := t.Certificates(t.indexKey); err != nil {
		return fmt.Errorf("rebuild key index: %w", err)
	}
	return noteKeyIndex(t)
}

// CertificatesOfKey calls fn for every certificate that certifies the same
// public key as the certificate der (itself included).
func (t *Tx) CertificatesOfKey(der []byte, fn func(*Certificate) error) error {
	key, ok := certificatePublicKey(der)
	if !ok {
		return fmt.Errorf("key index: certificate does not parse")
	}
	return t.certificatesWithKeyBits(key, fn)
}
