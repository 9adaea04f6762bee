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
//
// Where things are:
//   - engine.go: Config, the Engine and its start (New) and Close.
//   - issue.go, status.go, lifecycle.go, crl.go: what the daemon asks for
//     (issue, renew, extend; status, statistics; revoke, hold, restore;
//     CRLs).
//   - request.go, profile.go, keys.go: checking a request against its
//     profile, and a key's compromise and use; build.go: its certificate's
//     TBS, for the HSM to sign.
//   - queue.go: BatchQueue, the pipeline from callers to the HSM; batch.go:
//     its stages for certificates (issueStages: prepare, commit, sign),
//     and burning the serials of attempts that fail.
//   - clock.go: the signing-time guard and its alarms.
//   - hsmhealth.go, storehealth.go: every HSM signature and store write
//     goes through these, which follow their outcome for health.
//   - seal.go, anchor.go: the sealer (audit key, seal cadence, anchor);
//     auditkey.go: certifying the audit key; auditexport.go: audit export.
//   - refusal.go: auditing refused requests; errors.go: errors and codes;
//     rasignatures.go: what RA request signatures are checked against;
//     backup.go: store backups.
package engine
