// Package engine is signerd's issuance policy: certificate profiles, checks
// on what an RA asks for, building and linting certificates and CRLs, the
// lifecycle of issued certificates, and the batched queue that has the HSM
// sign them.
//
// Its one promise is that nothing signed goes unrecorded: a request and its
// serial are committed to the store before the HSM signs, and the
// certificate is committed before the caller hears of it. A crash in
// between burns the serial; the RA retries and gets a fresh one. So does a
// revocation or hold of the certificate a renewal or extension replaces,
// acknowledged while the replacement was being signed: the replacement is
// burned, never answered.
package engine
