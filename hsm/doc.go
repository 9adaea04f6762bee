// Package hsm is signerd's only door to the cryptographic module. It loads a
// PKCS#11 module, logs in to one token, keeps a pool of sessions, generates
// and finds CA keys, and signs with them (SM2 through the module's vendor
// mechanism, ECDSA through CKM_ECDSA). It also keeps small values in
// private data objects (DataObject), out of reach of anyone without the
// user PIN.
//
// Every signature the module returns is verified in software against the
// key's public key before it leaves this package, so a faulty module or a
// wrong-key bug shows up as an error, never as a bad certificate. The one
// exception, SM2Signer.SignDigestUnverified, hands the check to a caller
// that verifies the signature over the very bytes it publishes.
//
// Private keys never leave the module: nothing here reads CKA_VALUE, and keys
// are generated sensitive and (unless made for split-control backup)
// non-extractable.
package hsm
