// Package audit is the audit log's export bundle (SPEC §7.3): what signerd
// writes when an auditor exports a stretch of the log, and the offline
// check of it that needs nothing but the bundle and the CA's root
// certificate.
//
// A bundle is text, one JSON value per line:
//
//	line 1     the signed header: the range exported, the chain hash of its
//	           last event, and the certificates of the audit keys whose
//	           seals it holds, signed by the audit key
//	lines 2..  the events, each exactly as stored, so the SM3 chain can
//	           be recomputed byte for byte
//
// The first event is a seal (or the log's first event), so the chain is
// anchored by a signature; the last is the seal signerd makes at export, so
// the whole range is vouched for. docs/audit.md defines every byte.
package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"signerd/store"
)

// Format names the bundle layout. The header signature signs it too, so a
// signature made for anything else never passes for a bundle's.
const Format = "signerd-audit-bundle-v1"

// Header says what a bundle holds.
type Header struct {
	Format     string      `json:"format"`
	ExportedAt time.Time   `json:"exported_at"`
	ExportedBy store.Actor `json:"exported_by"`
	// Since and Until are the window the auditor asked for; the bundle
	// reaches out from it to the seals around it.
	Since *time.Time `json:"since,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// First and Last are the sequence numbers of the first and last event.
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	// Head is the chain hash of event Last as stored.
	Head []byte `json:"head"`
	// Keys certify every audit key whose seals the bundle holds.
	Keys []Key `json:"keys"`
}

// Key is an audit key's certificate and the issuing CA certificate that
// signed it (both DER).
type Key struct {
	KeyID       []byte `json:"key_id"`
	Certificate []byte `json:"certificate"`
	Issuer      []byte `json:"issuer"`
}

// signedHeader is line 1. Header is kept as the exact bytes signed.
type signedHeader struct {
	Header    json.RawMessage `json:"header"`
	KeyID     []byte          `json:"key_id"`
	Signature []byte          `json:"signature"`
}

// HeaderMessage is what the audit key signs for a bundle: the format name
// and the header's bytes.
func HeaderMessage(header []byte) []byte {
	return append([]byte(Format+"\n"), header...)
}

// Writer writes a bundle: the signed header, then each event's stored
// bytes.
type Writer struct {
	w   io.Writer
	err error
}

// NewWriter writes h, signed by sign (the audit key with ID keyID), to w.
func NewWriter(w io.Writer, h Header, keyID []byte, sign func(msg []byte) ([]byte, error)) (*Writer, error) {
	h.Format = Format
	raw, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("bundle header: %w", err)
	}
	sig, err := sign(HeaderMessage(raw))
	if err != nil {
		return nil, fmt.Errorf("sign bundle header: %w", err)
	}
	line, err := json.Marshal(signedHeader{Header: raw, KeyID: keyID, Signature: sig})
	if err != nil {
		return nil, fmt.Errorf("bundle header: %w", err)
	}
	bw := &Writer{w: w}
	bw.line(line)
	return bw, bw.err
}

// Event appends an event's stored bytes.
func (bw *Writer) Event(stored []byte) error {
	bw.line(stored)
	return bw.err
}

func (bw *Writer) line(b []byte) {
	if bw.err != nil {
		return
	}
	if _, err := bw.w.Write(append(b[:len(b):len(b)], '\n')); err != nil {
		bw.err = fmt.Errorf("write bundle: %w", err)
	}
}
