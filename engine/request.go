package engine

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"

	"signerd/store"
)

// Subject is the subject DN the RA vetted. It replaces whatever the CSR
// says: the CA certifies what the RA checked, not what the applicant typed.
type Subject struct {
	CommonName         string   `json:"CN,omitempty"`
	Organization       string   `json:"O,omitempty"`
	OrganizationalUnit []string `json:"OU,omitempty"`
	Country            string   `json:"C,omitempty"`
	Province           string   `json:"ST,omitempty"`
	Locality           string   `json:"L,omitempty"`
	SerialNumber       string   `json:"serialNumber,omitempty"`
}

// Request is what an RA asks the CA to issue (SPEC §5.2).
type Request struct {
	// ID is the RA's request id; the same id with the same content always
	// gets the same certificate.
	ID      string  `json:"request_id"`
	Profile string  `json:"profile"`
	Subject Subject `json:"subject"`
	// CSR is a DER PKCS#10 request; its signature proves the applicant
	// holds the key. PublicKey, a DER SubjectPublicKeyInfo, is the
	// alternative for encryption profiles, where the KMC made the key.
	CSR       []byte   `json:"csr,omitempty"`
	PublicKey []byte   `json:"public_key,omitempty"`
	DNSNames  []string `json:"dns_names,omitempty"`
	Emails    []string `json:"emails,omitempty"`
	// Identity holds GM/T 0015 identity numbers by kind (resident-id,
	// passport, social-insurance, credit-code).
	Identity map[string]string `json:"identity,omitempty"`
	// ValidityDays is how long the certificate lasts; 0 means the
	// profile's maximum.
	ValidityDays int `json:"validity_days,omitempty"`
}

// Request kinds, as recorded in the store.
const (
	kindIssue  = "issue"
	kindRenew  = "renew"
	kindExtend = "extend"
)

// order is a checked request ready for the queue: everything the
// certificate will say except serial and validity start.
type order struct {
	kind     string
	id       string
	digest   []byte
	actor    store.Actor
	profile  *Profile
	subject  pkix.Name
	raw      []byte // raw subject DN (extend keeps the old certificate's bytes)
	pub      crypto.PublicKey
	dns      []string
	emails   []string
	identity []pkix.Extension
	days     int
	replaces []byte
}

// maxRequestID bounds what an RA may use as an id.
const maxRequestID = 128

// check validates req against its profile and returns the order; nothing
// here touches the HSM or the store.
func (e *Engine) check(kind string, req *Request, replaces []byte) (*order, error) {
	if err := checkRequestID(req.ID); err != nil {
		return nil, err
	}
	p := e.profiles[req.Profile]
	if p == nil {
		return nil, errorf(CodeUnknownProfile, "profile %q is not configured", req.Profile)
	}
	o := &order{kind: kind, id: req.ID, profile: p, replaces: replaces, dns: req.DNSNames, emails: req.Emails}
	var err error
	if o.pub, err = e.checkKey(req, p); err != nil {
		return nil, err
	}
	if o.subject, err = checkSubject(req.Subject, p); err != nil {
		return nil, err
	}
	if err := checkNames(req, p); err != nil {
		return nil, err
	}
	if o.identity, err = checkIdentity(req.Identity, p); err != nil {
		return nil, err
	}
	if o.days, err = checkValidity(req.ValidityDays, p); err != nil {
		return nil, err
	}
	o.digest = contentDigest(kind, replaces, req)
	return o, nil
}

func checkRequestID(id string) error {
	if id == "" || len(id) > maxRequestID {
		return errorf(CodeBadRequest, "request_id must be 1..%d characters", maxRequestID)
	}
	if isInternalRequestID(id) {
		return errorf(CodeBadRequest, "request_id may not start with %q: signerd's own requests do", internalRequestPrefix)
	}
	for _, r := range id {
		if r < 0x21 || r > 0x7e {
			return errorf(CodeBadRequest, "request_id must be printable ASCII without spaces")
		}
	}
	return nil
}

// checkKey returns the public key to certify: from a CSR whose signature
// verifies (with the CA's SM2 ID for SM2 keys), or from the KMC for
// encryption profiles.
func (e *Engine) checkKey(req *Request, p *Profile) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	switch {
	case len(req.CSR) > 0 && len(req.PublicKey) > 0:
		return nil, errorf(CodeBadRequest, "send a csr or a public_key, not both")
	case len(req.CSR) > 0:
		csr, err := smx509.ParseCertificateRequest(req.CSR)
		if err != nil {
			return nil, errorf(CodeMalformedCSR, "csr: %v", err)
		}
		pub = csr.PublicKey
		if err := allowKey(pub, p); err != nil {
			return nil, err
		}
		if err := e.checkCSRSignature(csr); err != nil {
			return nil, err
		}
	case len(req.PublicKey) > 0:
		if p.Usage != "encryption" {
			return nil, errorf(CodeBadRequest, "profile %q is for signing keys: send a CSR as proof of possession", p.Name)
		}
		var err error
		if pub, err = smx509.ParsePKIXPublicKey(req.PublicKey); err != nil {
			return nil, errorf(CodeMalformedKey, "public_key: %v", err)
		}
		if err := allowKey(pub, p); err != nil {
			return nil, err
		}
	default:
		return nil, errorf(CodeBadRequest, "a csr (or, for encryption profiles, a public_key) is required")
	}
	return pub, nil
}

func (e *Engine) checkCSRSignature(csr *smx509.CertificateRequest) error {
	pub := csr.PublicKey.(*ecdsa.PublicKey) // allowKey admits EC keys only
	if pub.Curve == sm2.P256() {
		if csr.SignatureAlgorithm != smx509.SM2WithSM3 {
			return errorf(CodeBadCSRSignature, "csr: SM2 key signed with %v, want SM2-SM3", csr.SignatureAlgorithm)
		}
		if !sm2.VerifyASN1WithSM2(pub, e.sm2ID, csr.RawTBSCertificateRequest, csr.Signature) {
			return errorf(CodeBadCSRSignature, "csr: signature does not verify with signer ID %q", e.sm2ID)
		}
		return nil
	}
	if err := csr.CheckSignature(); err != nil {
		return errorf(CodeBadCSRSignature, "csr: %v", err)
	}
	return nil
}

// keyType names pub's algorithm the way profiles do, "" for non-EC keys.
func keyType(pub crypto.PublicKey) (string, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return "", errorf(CodeKeyTypeNotAllowed, "%T keys are not accepted: SM2 (or ECDSA where the profile allows)", pub)
	}
	switch k.Curve {
	case sm2.P256():
		return KeySM2, nil
	case elliptic.P256():
		return KeyECDSAP256, nil
	case elliptic.P384():
		return KeyECDSAP384, nil
	}
	return "", errorf(CodeWrongCurve, "curve %s is not accepted", k.Curve.Params().Name)
}

func allowKey(pub crypto.PublicKey, p *Profile) error {
	kt, err := keyType(pub)
	if err != nil {
		return err
	}
	if !slices.Contains(p.KeyTypes, kt) {
		return errorf(CodeWrongCurve, "profile %q takes %v keys, not %s", p.Name, p.KeyTypes, kt)
	}
	return nil
}

// subject attribute bounds from RFC 5280 appendix A.
var subjectBounds = map[string]int{"CN": 64, "O": 64, "OU": 64, "C": 2, "ST": 128, "L": 128, "serialNumber": 64}

func checkSubject(s Subject, p *Profile) (pkix.Name, error) {
	values := map[string][]string{"CN": {s.CommonName}, "O": {s.Organization}, "OU": s.OrganizationalUnit,
		"C": {s.Country}, "ST": {s.Province}, "L": {s.Locality}, "serialNumber": {s.SerialNumber}}
	present := func(attr string) bool {
		return slices.ContainsFunc(values[attr], func(v string) bool { return v != "" })
	}
	for _, attr := range p.RequiredSubject {
		if !present(attr) {
			return pkix.Name{}, errorf(CodeSubjectIncomplete, "profile %q requires subject %s", p.Name, attr)
		}
	}
	any := false
	for attr, vs := range values {
		for _, v := range vs {
			if n := utf8.RuneCountInString(v); n > subjectBounds[attr] || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return pkix.Name{}, errorf(CodeBadRequest, "subject %s: at most %d characters of valid UTF-8", attr, subjectBounds[attr])
			}
			any = any || v != ""
		}
	}
	if !any {
		return pkix.Name{}, errorf(CodeSubjectIncomplete, "subject is empty")
	}
	if s.Country != "" && (len(s.Country) != 2 || strings.ToUpper(s.Country) != s.Country) {
		return pkix.Name{}, errorf(CodeBadRequest, "subject C %q: two capital letters (ISO 3166)", s.Country)
	}
	name := pkix.Name{CommonName: s.CommonName, SerialNumber: s.SerialNumber, OrganizationalUnit: s.OrganizationalUnit}
	for _, f := range []struct {
		v   string
		dst *[]string
	}{{s.Organization, &name.Organization}, {s.Country, &name.Country}, {s.Province, &name.Province}, {s.Locality, &name.Locality}} {
		if f.v != "" {
			*f.dst = []string{f.v}
		}
	}
	return name, nil
}

func checkNames(req *Request, p *Profile) error {
	if len(req.DNSNames) > 0 && !p.DNSNames {
		return errorf(CodeBadRequest, "profile %q does not allow dns_names", p.Name)
	}
	if len(req.Emails) > 0 && !p.Emails {
		return errorf(CodeBadRequest, "profile %q does not allow emails", p.Name)
	}
	for _, d := range req.DNSNames {
		if !validDNSName(d) {
			return errorf(CodeBadRequest, "dns name %q: lower-case LDH labels, no wildcard", d)
		}
	}
	for _, m := range req.Emails {
		local, domain, ok := strings.Cut(m, "@")
		if !ok || local == "" || len(m) > 254 || !validDNSName(domain) || strings.ContainsAny(local, " @<>\x00") {
			return errorf(CodeBadRequest, "email %q is not an address", m)
		}
	}
	return nil
}

func validDNSName(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func checkIdentity(ids map[string]string, p *Profile) ([]pkix.Extension, error) {
	for _, kind := range p.RequiredIdentity {
		if ids[kind] == "" {
			return nil, errorf(CodeSubjectIncomplete, "profile %q requires identity %s", p.Name, kind)
		}
	}
	kinds := make([]string, 0, len(ids))
	for kind := range ids {
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	var exts []pkix.Extension
	for _, kind := range kinds {
		v := ids[kind]
		if !slices.Contains(p.Identity, kind) {
			return nil, errorf(CodeBadRequest, "profile %q does not carry identity %s", p.Name, kind)
		}
		if v == "" || len(v) > 64 || strings.IndexFunc(v, func(r rune) bool {
			return !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z')
		}) >= 0 {
			return nil, errorf(CodeBadRequest, "identity %s: 1..64 letters and digits", kind)
		}
		value, err := asn1.MarshalWithParams(v, "printable")
		if err != nil {
			return nil, errorf(CodeBadRequest, "identity %s: %v", kind, err)
		}
		exts = append(exts, pkix.Extension{Id: identityOIDs[kind], Value: value})
	}
	return exts, nil
}

func checkValidity(days int, p *Profile) (int, error) {
	switch {
	case days < 0:
		return 0, errorf(CodeBadRequest, "validity_days %d is negative", days)
	case days == 0:
		return p.MaxValidityDays, nil
	case days > p.MaxValidityDays:
		return 0, errorf(CodeValidityTooLong, "validity_days %d exceeds profile %q's %d", days, p.Name, p.MaxValidityDays)
	}
	return days, nil
}

// contentDigest binds a request id to what it asked for: SM3 over the
// canonical JSON of the request (map keys sorted, field order fixed).
func contentDigest(kind string, replaces []byte, req any) []byte {
	raw, err := json.Marshal(struct {
		Kind     string `json:"kind"`
		Replaces []byte `json:"replaces"`
		Request  any    `json:"request"`
	}{kind, replaces, req})
	if err != nil {
		panic(fmt.Sprintf("request digest: %v", err)) // plain data always marshals
	}
	h := sm3.Sum(raw)
	return h[:]
}
