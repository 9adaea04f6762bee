// Package audit is the audit log's export bundle (SPEC §7.3): what signerd
// writes when an auditor exports a stretch of the log, and the offline
// check of it that needs nothing but the bundle and the CA's root
// certificate.
//
// A bundle is text, one JSON value per line, in one section per audit
// chain (a store shared by several nodes keeps one chain per node):
//
//	header     the signed header: the chain's node, the range exported,
//	           the chain hash of its last event, and the certificates of
//	           the audit keys whose seals it holds, signed by the
//	           exporting node's audit key
//	events     the chain's events, each exactly as stored, so the SM3
//	           chain can be recomputed byte for byte
//
// Each section's first event is a seal (or the chain's first event), so
// the chain is anchored by a signature; its last is a seal, so the whole
// range is vouched for: the seal the exporting node makes at export for
// its own chain, and another node's last seal for that node's.
//
// A bundle of the unnamed chain alone (a single signerd's, and every
// bbolt store's) is one section in format signerd-audit-bundle-v1, as
// bundles were before nodes; one with named chains is in format
// signerd-audit-bundle-v2, whose every header also lists the bundle's
// chains, so that no section can be dropped or taken from another bundle
// unnoticed. docs/audit.md defines every byte.
package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"signerd/store"
)

// Format names the bundle layout of a single chain, the unnamed one. The
// header signature signs it too, so a signature made for anything else
// never passes for a bundle's.
const Format = "signerd-audit-bundle-v1"

// FormatChains names the layout of a bundle of several chains, or of a
// named node's: one section per chain, each header naming its node and
// listing every chain of the bundle.
const FormatChains = "signerd-audit-bundle-v2"

// Header says what a section of a bundle holds (all of it, in format
// v1).
type Header struct {
	Format     string      `json:"format"`
	ExportedAt time.Time   `json:"exported_at"`
	ExportedBy store.Actor `json:"exported_by"`
	// Since and Until are the window the auditor asked for; the bundle
	// reaches out from it to the seals around it.
	Since *time.Time `json:"since,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// Node names the chain the section holds ("": the unnamed chain).
	Node string `json:"node,omitempty"`
	// Section is the section's place in the bundle, from 1 (v2 only).
	Section int `json:"section,omitempty"`
	// First and Last are the sequence numbers of the first and last event.
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	// Head is the chain hash of event Last as stored.
	Head []byte `json:"head"`
	// Unsealed is how many events followed the chain's last seal when it
	// was exported: no seal vouched for them yet, so the bundle does not
	// hold them (v2 only).
	Unsealed uint64 `json:"unsealed,omitempty"`
	// Keys certify every audit key whose seals the section holds, and
	// the one that signed its header.
	Keys []Key `json:"keys"`
	// Chains lists every chain of the store when it was exported, the
	// bundle's sections in their order, and the same in every header
	// (v2 only).
	Chains []Chain `json:"chains,omitempty"`
}

// Chain is an entry of a bundle's list of chains.
type Chain struct {
	Node string `json:"node"`
	// Omitted says why the chain has no section ("" when it has one).
	Omitted string `json:"omitted,omitempty"`
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

// headerMessage is what the audit key signs for a header of format.
func headerMessage(format string, header []byte) []byte {
	return append([]byte(format+"\n"), header...)
}

// Writer writes a bundle: for each section, the signed header, then each
// event's stored bytes.
type Writer struct {
	w     io.Writer
	keyID []byte
	sign  func(msg []byte) ([]byte, error)
	err   error
}

// NewWriter writes h, signed by sign (the audit key with ID keyID), to w.
// h's format is v1 unless it names a node or lists chains.
func NewWriter(w io.Writer, h Header, keyID []byte, sign func(msg []byte) ([]byte, error)) (*Writer, error) {
	bw := &Writer{w: w, keyID: keyID, sign: sign}
	return bw, bw.Section(h)
}

// Section starts the next section, with header h signed as the first.
func (bw *Writer) Section(h Header) error {
	if bw.err != nil {
		return bw.err
	}
	h.Format = Format
	if h.Node != "" || h.Chains != nil {
		h.Format = FormatChains
	}
	raw, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("bundle header: %w", err)
	}
	sig, err := bw.sign(headerMessage(h.Format, raw))
	if err != nil {
		return fmt.Errorf("sign bundle header: %w", err)
	}
	line, err := json.Marshal(signedHeader{Header: raw, KeyID: bw.keyID, Signature: sig})
	if err != nil {
		return fmt.Errorf("bundle header: %w", err)
	}
	bw.line(line)
	return bw.err
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
