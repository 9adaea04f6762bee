// Package store is signerd's durable state: one bbolt file holding the
// certificates the CA issued, the serial numbers it has ever used, the RA
// requests it has seen, each issuing key's CRL state, monthly statistics,
// the keys revoked for keyCompromise and the hash-chained audit log.
//
// Records are never deleted. Certificates and requests change state (a
// certificate is revoked, a request is finished) but stay; the only keys
// ever removed are those of three indexes, "in flight", "revoked" and
// "keys", which are derived from the records and exist so start-up, CRL
// generation and finding the certificates of a public key do not scan
// every certificate ("keys" is rebuilt whole when it is found behind). A
// fourth derived index, "compromised-keys", only grows; the engine
// rebuilds it from "revoked" at every start, so a store written before it
// existed needs no migration. "ra-replay" holds each RA certificate's
// replay mark.
//
// Every change but the RA replay marks is made inside Update together
// with the audit event that describes it, so the log and the state cannot
// disagree; a replay mark is raised in an Update of its own, with no
// event, as signed requests are accepted.
//
// CopyTo writes a consistent copy of an open store to a new file (a
// backup), and Verify checks a store file, opened read-only: first its
// page structure, read without bbolt (pagecheck.go: a page that loops or
// points outside the file stops the check before any record is read),
// then all of the above: its schema, buckets, records, derived indexes
// and audit chain.
//
// MigrateToPostgres copies a store file, record for record, into a new
// PostgreSQL database and checks the copy against the file before it
// commits it; VerifyPostgres makes Verify's checks of the records in a
// database, and may run while signerd serves from it.
package store
