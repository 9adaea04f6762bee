// Package issuance is the one path from "what to sign" to signed, checked
// bytes, for the engine's certificates and CRLs and for the key
// ceremonies' CA certificates and root CRLs, and for OCSP responses.
//
// It works in two steps around the HSM, so the caller can record what
// will be signed before it is signed (SPEC §5.4):
//
//   - Prepare builds the to-be-signed bytes (the encoder runs with a key
//     that keeps the TBS and signs nothing), lints the TBS itself (package
//     lint), and returns a single-use Token: the TBS to record and the
//     digest the HSM must sign.
//   - Issue takes that Token and the HSM's signature, verifies the
//     signature over the TBS under the issuer's key (the one software
//     verification each signature gets), assembles the signed object,
//     checks it carries the linted TBS byte for byte, and lints it again.
//
// A Token is issued once: a second Issue with it is refused, as is a
// signature over any other bytes. The package knows nothing of the store
// or of HTTP; the caller decides what a refusal means to its own caller.
package issuance
