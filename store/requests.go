package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// RequestState is where an RA request is.
type RequestState string

const (
	// RequestSigning: serial and to-be-signed certificate recorded, the HSM
	// may be signing. A request found in this state at start-up was cut
	// short by a crash: its serial is burned and it becomes failed.
	RequestSigning RequestState = "signing"
	RequestIssued  RequestState = "issued"
	// RequestFailed: the last attempt ended without a certificate. The RA
	// may retry with the same content; the retry gets a new serial.
	RequestFailed RequestState = "failed"
)

// Request is an RA request id's record. The id is bound for ever to the
// SM3 digest of the request content it first came with.
type Request struct {
	ID      string       `json:"id"`
	Digest  []byte       `json:"digest"`
	Kind    string       `json:"kind"` // issue, renew, extend
	Profile string       `json:"profile"`
	State   RequestState `json:"state"`
	// Serial is the current or final attempt's serial; TBS the exact bytes
	// that attempt was to sign (after linting).
	Serial  []byte    `json:"serial"`
	TBS     []byte    `json:"tbs,omitempty"`
	Burned  [][]byte  `json:"burned,omitempty"`
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Replaces is the serial a renewal or extension replaces.
	Replaces []byte `json:"replaces,omitempty"`
}

// Request returns the record of RA request id.
func (t *Tx) Request(id string) (*Request, error) {
	return get[Request](t, tableRequests, []byte(id), fmt.Sprintf("request %q", id))
}

// PutRequest records r and keeps the in-flight index in step with its state.
func (t *Tx) PutRequest(r *Request) error {
	if r.ID == "" {
		return fmt.Errorf("request without id")
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := t.r.put(tableRequests, []byte(r.ID), raw); err != nil {
		return err
	}
	if r.State == RequestSigning {
		// Under the node signing it: each node finishes (or burns) its
		// own requests at start-up, never another live node's.
		return t.r.put(tableInFlight, []byte(r.ID), []byte(t.chain.node))
	}
	return t.r.delete(tableInFlight, []byte(r.ID))
}

// SigningNode names the node whose attempt at request id is being signed
// ("" for the unnamed node); signing is false if none is.
func (t *Tx) SigningNode(id string) (node string, signing bool, err error) {
	v, err := t.r.get(tableInFlight, []byte(id))
	if err != nil || v == nil {
		return "", false, err
	}
	return string(v), true, nil
}

// InFlight returns the requests this node left in RequestSigning.
func (t *Tx) InFlight() ([]*Request, error) { return t.inFlight(false) }

// InFlightOfEveryNode returns the requests in RequestSigning at any node:
// what every node's HSM may be signing now.
func (t *Tx) InFlightOfEveryNode() ([]*Request, error) { return t.inFlight(true) }

func (t *Tx) inFlight(everyNode bool) ([]*Request, error) {
	// The ids first, then their records read ahead together: on a
	// database, one round trip rather than one per request.
	var ids []string
	if err := t.r.scan(tableInFlight, nil, nil, func(k, v []byte) error {
		if everyNode || string(v) == t.chain.node {
			ids = append(ids, string(k))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := t.Prefetch(Prefetch{Requests: ids}); err != nil {
		return nil, err
	}
	var out []*Request
	for _, id := range ids {
		r, err := t.Request(id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
