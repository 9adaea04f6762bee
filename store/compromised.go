package store

import "bytes"

// MarkKeyCompromised records that the key with digest keyID was revoked
// for keyCompromise, with the certificate serial (the first one recorded
// stays). The "compromised-keys" index is derived from the revocation
// index: the engine rebuilds it at every start, so an index a store lacks
// or let fall behind is made whole before anything is issued.
func (t *Tx) MarkKeyCompromised(keyID, serial []byte) error {
	old, err := t.r.get(tableCompromisedKeys, keyID)
	if err != nil || old != nil {
		return err
	}
	return t.r.put(tableCompromisedKeys, keyID, bytes.Clone(serial))
}

// KeyCompromised returns the serial of the certificate whose keyCompromise
// revocation marked the key with digest keyID, nil if none did.
func (t *Tx) KeyCompromised(keyID []byte) ([]byte, error) {
	serial, err := t.r.get(tableCompromisedKeys, keyID)
	return bytes.Clone(serial), err
}
