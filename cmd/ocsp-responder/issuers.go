package main

import (
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/emmansun/gmsm/smx509"

	"signerd/ocsp"
)

// issuers finds the served issuer a CertID names: by its hash algorithm
// and its name and key hashes, each computed at start under every hash a
// request may use (SHA-1, SHA-256, SM3).
type issuers map[string]string // certIDKey → issuer id (hex SKI)

func certIDKey(h ocsp.HashAlg, nameHash, keyHash []byte) string {
	return string(rune(h)) + string(nameHash) + string(keyHash)
}

func loadIssuers(paths []string) (issuers, error) {
	out := issuers{}
	ids := map[string]string{}
	for _, path := range paths {
		cert, err := readCertificate(path)
		if err != nil {
			return nil, err
		}
		if len(cert.SubjectKeyId) == 0 {
			// Responses are published under the issuer's SKI (as signerd names issuers).
			return nil, fmt.Errorf("issuer %s: no subjectKeyIdentifier", path)
		}
		id := hex.EncodeToString(cert.SubjectKeyId)
		if other, ok := ids[id]; ok {
			return nil, fmt.Errorf("issuer %s: the same key as %s", path, other)
		}
		ids[id] = path
		for _, h := range ocsp.HashAlgs {
			cid, err := ocsp.CertIDFor(cert, []byte{1}, h)
			if err != nil {
				return nil, fmt.Errorf("issuer %s: %w", path, err)
			}
			out[certIDKey(h, cid.IssuerNameHash, cid.IssuerKeyHash)] = id
		}
	}
	return out, nil
}

func readCertificate(path string) (*smx509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	block, rest := pem.Decode(raw)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("issuer %s: no PEM CERTIFICATE", path)
	}
	if b, _ := pem.Decode(rest); b != nil {
		return nil, errors.New("issuer " + path + ": more than one PEM block; one issuer certificate per file")
	}
	cert, err := smx509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", path, err)
	}
	return cert, nil
}

// lookup is the issuer id of a CertID; "" for an issuer not served.
func (is issuers) lookup(id ocsp.CertID) string {
	return is[certIDKey(id.HashAlg, id.IssuerNameHash, id.IssuerKeyHash)]
}
