package main

import (
	"crypto/x509/pkix"
	"fmt"
	"strings"
)

// parseDN reads "CN=...,O=...,C=CN" (RFC 4514 order, no escaped commas).
func parseDN(s string) (pkix.Name, error) {
	var n pkix.Name
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return n, fmt.Errorf("subject %q: %q is not TYPE=value", s, part)
		}
		switch strings.ToUpper(k) {
		case "CN":
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "L":
			n.Locality = append(n.Locality, v)
		default:
			return n, fmt.Errorf("subject %q: attribute type %q not supported (CN, O, OU, C, ST, L)", s, k)
		}
	}
	if n.CommonName == "" {
		return n, fmt.Errorf("subject %q has no CN", s)
	}
	return n, nil
}
