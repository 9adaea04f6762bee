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

// keyCompromisedAtHead holds the audit log's head at which the
// compromised-keys index was last known whole, as the key index's mark
// does (keys.go): the engine rebuilds the index at start only when the
// mark is not at the present head, which an older signerd's writes leave
// behind. A rebuild reads the certificate of every keyCompromise
// revocation, too many reads for every start of a database store.
var keyCompromisedAtHead = []byte("compromised-keys-at-head")

// CompromisedKeysCurrent reports whether the compromised-keys index is
// known whole at the audit log's present head.
func (t *Tx) CompromisedKeysCurrent() (bool, error) { return markCurrent(t, keyCompromisedAtHead) }

// NoteCompromisedKeysWhole records that the compromised-keys index is
// whole at the head this transaction leaves (the engine, having rebuilt
// it). Update keeps the mark at the head from then on.
func (t *Tx) NoteCompromisedKeysWhole() { t.compromisedWhole = true }

// noteCompromisedKeys moves the mark to the present head if the index
// was whole when the transaction began (every write of this code keeps
// it so) or was made whole in it.
func noteCompromisedKeys(t *Tx, wasCurrent bool) error {
	if !wasCurrent && !t.compromisedWhole {
		return nil
	}
	return noteMark(t, keyCompromisedAtHead)
}
