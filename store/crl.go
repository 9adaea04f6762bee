package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// CRLState is an issuing key's CRL sequence: the least number the next CRL
// may take and the last one signed.
type CRLState struct {
	// Next is one more than the last CRL number taken. The engine numbers
	// a CRL by its signing time and takes Next only when that is not
	// larger, so Next alone does not say how many CRLs were signed.
	Next       uint64    `json:"next"`
	ThisUpdate time.Time `json:"this_update,omitzero"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	// DER is the last CRL whose signature was recorded. A number is taken
	// (Next raised) before signing, so a crash leaves a gap, never a reuse.
	DER []byte `json:"der,omitempty"`
	// Number is DER's CRL number (zero in states recorded before it was
	// kept, by a single signerd, whose CRLs were recorded in order).
	Number uint64 `json:"number,omitempty"`
}

// CRLState returns issuer's CRL state; a new issuer's starts at number 1.
func (t *Tx) CRLState(issuer string) (CRLState, error) {
	raw, err := t.r.get(tableCRL, []byte(issuer))
	if err != nil {
		return CRLState{}, fmt.Errorf("CRL state of %s: %w", issuer, err)
	}
	if raw == nil {
		return CRLState{Next: 1}, nil
	}
	var s CRLState
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("CRL state of %s: decode: %w", issuer, err)
	}
	return s, nil
}

// PutCRLState records issuer's CRL state.
func (t *Tx) PutCRLState(issuer string, s CRLState) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return t.r.put(tableCRL, []byte(issuer), raw)
}
