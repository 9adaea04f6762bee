// Package store is signerd's durable state: one bbolt file holding the
// certificates the CA issued, the serial numbers it has ever used, the RA
// requests it has seen, each issuing key's CRL state, monthly statistics and
// the hash-chained audit log.
//
// Records are never deleted. Certificates and requests change state (a
// certificate is revoked, a request is finished) but stay; the only keys
// ever removed are those of two indexes, "in flight" and "revoked", which
// are derived from the records and exist so start-up and CRL generation do
// not scan every certificate. A third index, "keys", finds the certificates
// of a public key (built on open for a store that lacks it or that an
// older signerd wrote to since),
// and "ra-replay" holds each RA certificate's replay mark.
//
// Every change is made inside Update together with the audit event that
// describes it, so the log and the state cannot disagree.
package store
