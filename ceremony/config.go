package ceremony

import (
	"bytes"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"go.yaml.in/yaml/v3"

	"signerd/hsm"
)

// Header opens every ceremony file.
type Header struct {
	Type      string   `yaml:"type"`
	Operator  string   `yaml:"operator"`
	Witnesses []string `yaml:"witnesses"`
	// AuditLog is the signerd store that receives the ceremony's record:
	// signerd's own (while signerd is stopped) or the offline root's.
	AuditLog string `yaml:"audit_log"`
}

func (h *Header) check() error {
	switch {
	case strings.TrimSpace(h.Operator) == "":
		return errors.New("operator is required: the person who runs the ceremony")
	case h.AuditLog == "":
		return errors.New("audit_log is required: every ceremony is recorded")
	}
	return nil
}

// NewKey is a key a ceremony generates.
type NewKey struct {
	Label     string `yaml:"label"`
	Algorithm string `yaml:"algorithm"` // sm2 (default), ecdsa-p256, ecdsa-p384
	// Backup makes the key wrappable under a trusted KEK, so a backup
	// ceremony can put it under split control (SPEC §3.5).
	Backup bool `yaml:"backup"`
}

func (k *NewKey) spec() (hsm.KeySpec, error) {
	if k.Label == "" {
		return hsm.KeySpec{}, errors.New("label is required")
	}
	alg := hsm.SM2
	if k.Algorithm != "" {
		var err error
		if alg, err = hsm.ParseAlgorithm(k.Algorithm); err != nil {
			return hsm.KeySpec{}, err
		}
	}
	return hsm.KeySpec{Label: k.Label, Algorithm: alg, Backup: k.Backup}, nil
}

// Name is a distinguished name. Go's encoder orders it C, ST, L, O, OU, CN.
type Name struct {
	Country            string `yaml:"country"`
	Province           string `yaml:"province"`
	Locality           string `yaml:"locality"`
	Organization       string `yaml:"organization"`
	OrganizationalUnit string `yaml:"organizational_unit"`
	CommonName         string `yaml:"common_name"`
}

func (n Name) pkix() (pkix.Name, error) {
	if n.CommonName == "" || n.Organization == "" || n.Country == "" {
		return pkix.Name{}, errors.New("subject: common_name, organization and country are required")
	}
	if len(n.Country) != 2 || strings.ToUpper(n.Country) != n.Country {
		return pkix.Name{}, fmt.Errorf("subject: country %q is not an ISO 3166 two-letter code", n.Country)
	}
	out := pkix.Name{CommonName: n.CommonName, Organization: []string{n.Organization}, Country: []string{n.Country}}
	for _, f := range []struct {
		v   string
		dst *[]string
	}{{n.Province, &out.Province}, {n.Locality, &out.Locality}, {n.OrganizationalUnit, &out.OrganizationalUnit}} {
		if f.v != "" {
			*f.dst = []string{f.v}
		}
	}
	return out, nil
}

// CAProfile is the content of a CA certificate a ceremony signs.
type CAProfile struct {
	Subject    Name     `yaml:"subject"`
	NotBefore  string   `yaml:"not_before"` // RFC 3339
	NotAfter   string   `yaml:"not_after"`
	PathLength *int     `yaml:"path_length"`
	Policies   []string `yaml:"policies"` // OIDs
	CRLURLs    []string `yaml:"crl_urls"`
	OCSPURLs   []string `yaml:"ocsp_urls"`
	IssuerURLs []string `yaml:"issuer_urls"`
}

// template is the certificate the profile describes, without serial (the
// ceremony draws it from the HSM) and key identifiers.
func (p *CAProfile) template() (*smx509.Certificate, error) {
	subject, err := p.Subject.pkix()
	if err != nil {
		return nil, err
	}
	t, err := p.body()
	if err != nil {
		return nil, err
	}
	t.Subject = subject
	return t, nil
}

// body is template without the subject.
func (p *CAProfile) body() (*smx509.Certificate, error) {
	notBefore, err := parseTime("not_before", p.NotBefore)
	if err != nil {
		return nil, err
	}
	notAfter, err := parseTime("not_after", p.NotAfter)
	if err != nil {
		return nil, err
	}
	if !notBefore.Before(notAfter) {
		return nil, fmt.Errorf("not_before %s is not before not_after %s", p.NotBefore, p.NotAfter)
	}
	if p.PathLength == nil || *p.PathLength < 0 || *p.PathLength > 8 {
		return nil, errors.New("path_length is required (0..8): how many CA levels may follow")
	}
	t := &smx509.Certificate{
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: *p.PathLength, MaxPathLenZero: *p.PathLength == 0,
		KeyUsage:              smx509.KeyUsageCertSign | smx509.KeyUsageCRLSign,
		CRLDistributionPoints: p.CRLURLs, OCSPServer: p.OCSPURLs, IssuingCertificateURL: p.IssuerURLs,
	}
	for _, s := range p.Policies {
		oid, err := smx509.ParseOID(s)
		if err != nil {
			return nil, fmt.Errorf("policies: %q: %w", s, err)
		}
		t.Policies = append(t.Policies, oid)
	}
	for _, list := range [][]string{p.CRLURLs, p.OCSPURLs, p.IssuerURLs} {
		for _, s := range list {
			if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "ldap") || u.Host == "" {
				return nil, fmt.Errorf("URL %q: want an absolute http:// or ldap:// URL", s)
			}
		}
	}
	return t, nil
}

func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339, e.g. 2026-12-01T00:00:00Z", field, s)
	}
	if t.Nanosecond() != 0 {
		return time.Time{}, fmt.Errorf("%s %q: whole seconds only", field, s)
	}
	return t.UTC(), nil
}

// Custodian receives one share of a split secret.
type Custodian struct {
	Name  string `yaml:"name"`
	Share string `yaml:"share"` // output file
	// Passphrase "prompt" seals the share with a passphrase the custodian
	// types; PassphraseFile reads it from a file instead (for drills).
	Passphrase     string `yaml:"passphrase"`
	PassphraseFile string `yaml:"passphrase_file"`
}

// SplitSpec is an m-of-n split of a secret among custodians.
type SplitSpec struct {
	Threshold  int         `yaml:"threshold"`
	Custodians []Custodian `yaml:"custodians"`
}

func (s *SplitSpec) check() error {
	if s.Threshold < 2 || len(s.Custodians) < s.Threshold {
		return fmt.Errorf("threshold %d of %d custodians: want 2 ≤ threshold ≤ custodians", s.Threshold, len(s.Custodians))
	}
	for _, c := range s.Custodians {
		switch {
		case c.Name == "" || c.Share == "":
			return errors.New("every custodian needs a name and a share file")
		case c.Passphrase != "" && c.Passphrase != "prompt":
			return fmt.Errorf("custodian %s: passphrase is \"prompt\" or absent", c.Name)
		case c.Passphrase != "" && c.PassphraseFile != "":
			return fmt.Errorf("custodian %s: passphrase and passphrase_file both set", c.Name)
		}
	}
	return nil
}

// decodeStrict decodes one YAML document into v: unknown keys, a second
// document and trailing content are errors.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("file is empty")
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("trailing content after the ceremony (one document per file)")
		}
		return fmt.Errorf("trailing content: %w", err)
	}
	return nil
}

// resolvePaths makes relative paths relative to the ceremony file's folder,
// so a ceremony folder can be carried whole into the room.
func resolvePaths(dir string, paths ...*string) {
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}
