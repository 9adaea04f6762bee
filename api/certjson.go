package api

import (
	"encoding/json"
	"strconv"
	"time"
)

// AppendIndentedJSON appends c as a json.Encoder with SetIndent("", "  ")
// writes it, byte for byte, final newline included: the answer to every
// certificate request, written without reflection (encoding/json's
// reflection, then its indenting pass over the output, cost more than
// the rest of the answer). A string the fast path does not cover, or a
// time encoding/json would refuse, goes through encoding/json itself.
func (c *Certificate) AppendIndentedJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	b = appendStringField(b, "serial", c.Serial, true)
	b = appendStringField(b, "status", c.Status, false)
	b = appendStringField(b, "profile", c.Profile, false)
	b = appendStringField(b, "subject", c.Subject, false)
	b = appendStringField(b, "issuer", c.Issuer, false)
	var err error
	if b, err = appendTimeField(b, "not_before", c.NotBefore); err != nil {
		return nil, err
	}
	if b, err = appendTimeField(b, "not_after", c.NotAfter); err != nil {
		return nil, err
	}
	if c.RevokedAt != nil {
		if b, err = appendTimeField(b, "revoked_at", *c.RevokedAt); err != nil {
			return nil, err
		}
	}
	if c.Reason != 0 {
		b = append(b, ",\n  \"reason\": "...)
		b = strconv.AppendInt(b, int64(c.Reason), 10)
	}
	b = appendStringField(b, "request_id", c.RequestID, false)
	if c.Replaces != "" {
		b = appendStringField(b, "replaces", c.Replaces, false)
	}
	if c.SupersededBy != "" {
		b = appendStringField(b, "superseded_by", c.SupersededBy, false)
	}
	b = appendStringField(b, "certificate", c.Certificate, false)
	return append(b, "\n}\n"...), nil
}

// appendStringField appends the member name: s of an indented object.
func appendStringField(b []byte, name, s string, first bool) []byte {
	b = appendMemberName(b, name, first)
	return appendJSONString(b, s)
}

func appendTimeField(b []byte, name string, t time.Time) ([]byte, error) {
	v, err := t.MarshalJSON() // what encoding/json calls
	if err != nil {
		return nil, err
	}
	return append(appendMemberName(b, name, false), v...), nil
}

// appendMemberName appends a member's separator, indent and name: names
// are Go constants here, plain ASCII that needs no escaping.
func appendMemberName(b []byte, name string, first bool) []byte {
	if !first {
		b = append(b, ',')
	}
	b = append(b, "\n  \""...)
	b = append(b, name...)
	return append(b, "\": "...)
}

// appendJSONString appends s as a JSON string as encoding/json writes it
// with HTML escaping on. Printable ASCII but the characters it escapes
// (" \ < > &), and newlines (a PEM block's), are written here; a string
// with anything else is left to encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\n' || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] != '\n' {
			j++
		}
		b = append(b, s[i:j]...)
		if j < len(s) {
			b = append(b, '\\', 'n')
			j++
		}
		i = j
	}
	return append(b, '"')
}
