package store

import "errors"

// A backend keeps the store's records: named tables of byte keys and byte
// values, read in key order (bytewise, shortest first). The records, their
// encodings and every rule about them (a DER never changes, a serial is
// reserved once, the audit chain, the derived indexes) live above it, in
// Tx, so both engines store the same bytes under the same keys and a store
// moves from one to the other record for record.
//
// Two backends exist: boltBackend (bolt.go), one bbolt file, and
// pgBackend (postgres.go), a PostgreSQL database.
type backend interface {
	// update runs fn in one write transaction, committed (durably) only if
	// fn returns nil. Write transactions run one at a time. A failure to
	// commit, or to reach the database, is ErrWrite; fn's own errors are
	// returned as they are.
	update(fn func(records) error) error
	// view runs fn in a read-only transaction that sees one consistent
	// snapshot. A failure to reach the database is ErrUnavailable.
	view(fn func(records) error) error
	// insertNew writes value under key in table unless table holds key
	// already, and reports whether it wrote; durably, in a transaction of
	// its own that does not wait for update's writer lock, so that it
	// costs one round trip and holds up no other node's writes. That is
	// safe only for records no update reads and decides on (the RA nonce
	// claims, rareplay.go): it is not ordered with update's transactions.
	// A failure to reach the database is ErrWrite.
	insertNew(table string, key, value []byte) (bool, error)
	// deleteBefore removes up to limit records of table whose key starts
	// with prefix and whose value sorts before max (bytewise), as
	// insertNew writes, outside the writer lock; it returns how many. A
	// failure to reach the database is ErrWrite.
	deleteBefore(table string, prefix, max []byte, limit int) (int, error)
	close() error
}

// records is one transaction's view of the tables. Its methods must not be
// used after the transaction ends; a value it returns is valid only until
// then (copy it to keep it).
type records interface {
	// get returns the value under key in table, nil if there is none.
	get(table string, key []byte) ([]byte, error)
	// put sets the value under key (an empty value is a value, not none).
	put(table string, key, value []byte) error
	// delete removes key; removing a key that is not there is no error.
	delete(table string, key []byte) error
	// scan calls fn for each record of table whose key is at or after
	// from and starts with prefix (either may be nil), in key order, and
	// stops at fn's first error. fn may read any table and write any table
	// but the one being scanned.
	scan(table string, from, prefix []byte, fn func(key, value []byte) error) error
	// scanRange calls fn for each record of table whose key is at or after
	// lo and before hi (hi nil: to the table's end), in key order, as scan
	// does: a range of one prefix that ends before the prefix does (one
	// CRL shard's entries of the revoked index) is read without the keys
	// past it.
	scanRange(table string, lo, hi []byte, fn func(key, value []byte) error) error
	// scanRangeLimit is scanRange for a caller that expects to stop after
	// about limit records (limit ≤ 0: no estimate): the PostgreSQL backend
	// makes its first page that size rather than a whole page, which a
	// batch of the OCSP due entries, read from the front of a table of
	// millions, would mostly not use.
	scanRangeLimit(table string, lo, hi []byte, limit int, fn func(key, value []byte) error) error
	// clear removes every record of table.
	clear(table string) error
	// prefetch reads ahead the records p names, for the gets and scans of
	// this transaction that follow. It is only a hint: what they return is
	// the same with or without it.
	prefetch(p *Prefetch) error
}

// The tables. Their names are the bbolt file's bucket names; PostgreSQL
// keeps each in a table of the same name with '-' written '_'.
const (
	tableMeta            = "meta"
	tableCerts           = "certificates"
	tableSerials         = "serials"
	tableRequests        = "requests"
	tableInFlight        = "in-flight"
	tableRevoked         = "revoked"
	tableCRL             = "crl"
	tableStats           = "statistics"
	tableAudit           = "audit"
	tableCompromisedKeys = "compromised-keys"
	tableKeys            = "keys"
	tableRAReplay        = "ra-replay"
	// tableCRLObjects keeps each CRL shard's latest signed CRLs apart
	// from its state (crl.go), tableCRLChanges the change log deltas are
	// made from.
	tableCRLObjects = "crl-objects"
	tableCRLChanges = "crl-changes"
	// tableOCSPResponses keeps each certificate's latest OCSP response,
	// tableOCSPDue when each is next to be made (ocsp.go).
	tableOCSPResponses = "ocsp-responses"
	tableOCSPDue       = "ocsp-due"
)

// tables is every table of the schema.
var tables = []string{tableMeta, tableCerts, tableSerials, tableRequests, tableInFlight,
	tableRevoked, tableCRL, tableStats, tableAudit, tableCompromisedKeys, tableKeys, tableRAReplay,
	tableCRLObjects, tableCRLChanges, tableOCSPResponses, tableOCSPDue}

// ErrUnavailable: the store could not be reached (the database is down,
// unreachable, or refuses connections). Nothing was read or written; a
// later transaction may succeed once it is back.
var ErrUnavailable = errors.New("store unavailable")
