package engine

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"signerd/api"
	"signerd/audit"
	"signerd/issuance"
	"signerd/store"
)

// Subject is the subject DN the RA vetted, as the API carries it: its
// JSON is part of each request's content digest.
type Subject = api.Subject

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

	// key is pub's SubjectPublicKeyInfo and keyDigest, made once: the
	// batch's stages look the key up in each of their transactions.
	key struct {
		once         sync.Once
		spki, digest []byte
		err          error
	}
}

// keySPKI is o.pub's SubjectPublicKeyInfo as signerd encodes it, and its
// keyDigest.
func (o *order) keySPKI() (spki, digest []byte, err error) {
	o.key.once.Do(func() {
		o.key.spki, o.key.err = smx509.MarshalPKIXPublicKey(o.pub)
		if o.key.err != nil {
			o.key.err = fmt.Errorf("encode public key: %w", o.key.err)
			return
		}
		h := sm3.Sum(o.key.spki)
		o.key.digest = h[:]
	})
	return o.key.spki, o.key.digest, o.key.err
}

// maxRequestID bounds what an RA may use as an id.
const maxRequestID = 128

// check validates req against its profile and returns the order. Every
// value the RA sent is checked here, so whatever it controls is refused
// with a 4xx code before it can fail later as a server error; nothing here
// touches the HSM, and the store is only read (for the certificates of the
// request's key).
func (e *Engine) check(kind string, req *Request, replaces []byte) (*order, error) {
	if err := checkRequestID(req.ID); err != nil {
		return nil, err
	}
	p := e.profiles[req.Profile]
	if p == nil || isInternalProfile(req.Profile) {
		return nil, errorf(api.CodeUnknownProfile, "profile %q is not configured", req.Profile)
	}
	o := &order{kind: kind, id: req.ID, profile: p, replaces: replaces, dns: req.DNSNames, emails: req.Emails}
	var err error
	if o.pub, err = e.checkKey(req, p); err != nil {
		return nil, err
	}
	if err := e.checkKeyUse(o.pub); err != nil {
		return nil, err
	}
	if o.subject, err = checkSubject(req.Subject, p); err != nil {
		return nil, err
	}
	if err := e.checkNotReserved(o.subject); err != nil {
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
	// Here, on the caller's goroutine, rather than in a batch stage, which
	// every order passes one at a time.
	if _, _, err := o.keySPKI(); err != nil {
		return nil, errorf(api.CodeMalformedKey, "public key: %v", err)
	}
	return o, nil
}

func checkRequestID(id string) error {
	if id == "" || len(id) > maxRequestID {
		return errorf(api.CodeBadRequest, "request_id must be 1..%d characters", maxRequestID)
	}
	if isInternalRequestID(id) {
		return errorf(api.CodeBadRequest, "request_id may not start with %q: signerd's own requests do", internalRequestPrefix)
	}
	for _, r := range id {
		if r < 0x21 || r > 0x7e {
			return errorf(api.CodeBadRequest, "request_id must be printable ASCII without spaces")
		}
	}
	return nil
}

// checkKey returns the public key to certify: from a CSR whose signature
// verifies (with the CA's SM2 ID for SM2 keys) on signing profiles, from
// the KMC on encryption profiles. An encryption key is made and escrowed
// by the KMC (GM/T 0015 dual certificates), so a key the applicant proves
// it holds has no place there.
func (e *Engine) checkKey(req *Request, p *Profile) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	switch {
	case len(req.CSR) > 0 && len(req.PublicKey) > 0:
		return nil, errorf(api.CodeBadRequest, "send a csr or a public_key, not both")
	case len(req.CSR) > 0:
		if p.Usage == "encryption" {
			return nil, errorf(api.CodeBadRequest, "profile %q certifies keys the KMC made: send the KMC's public_key, not a csr", p.Name)
		}
		csr, err := smx509.ParseCertificateRequest(req.CSR)
		if err != nil {
			return nil, errorf(api.CodeMalformedCSR, "csr: %v", err)
		}
		if err := namedCurveOnly(csr.RawSubjectPublicKeyInfo); err != nil {
			return nil, errorf(api.CodeWrongCurve, "csr: %v", err)
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
			return nil, errorf(api.CodeBadRequest, "profile %q is for signing keys: send a CSR as proof of possession", p.Name)
		}
		var err error
		if pub, err = smx509.ParsePKIXPublicKey(req.PublicKey); err != nil {
			return nil, errorf(api.CodeMalformedKey, "public_key: %v", err)
		}
		if err := namedCurveOnly(req.PublicKey); err != nil {
			return nil, errorf(api.CodeWrongCurve, "public_key: %v", err)
		}
		if err := allowKey(pub, p); err != nil {
			return nil, err
		}
	default:
		if p.Usage == "encryption" {
			return nil, errorf(api.CodeBadRequest, "profile %q needs the KMC's public_key", p.Name)
		}
		return nil, errorf(api.CodeBadRequest, "profile %q needs a csr", p.Name)
	}
	return pub, nil
}

var (
	oidECPublicKey  = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSM2PublicKey = asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 301}
)

// namedCurveOnly refuses an EC SubjectPublicKeyInfo whose curve is given by
// explicit parameters instead of a named curve's OID. RFC 5480 §2.1.1 has
// PKIX use named curves only, and a parser that maps explicit parameters to
// a named curve by some of them (gmsm compares p and n alone) would let
// another curve's point pass as an SM2 key; refusing them all is simpler
// than comparing p, a, b, G, n and h and just as complete.
func namedCurveOnly(spki []byte) error {
	s := cryptobyte.String(spki)
	var info, alg cryptobyte.String
	var algOID asn1.ObjectIdentifier
	if !s.ReadASN1(&info, casn1.SEQUENCE) || !info.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&algOID) {
		return errors.New("SubjectPublicKeyInfo does not parse")
	}
	if !algOID.Equal(oidECPublicKey) && !algOID.Equal(oidSM2PublicKey) {
		return nil // not an EC key: allowKey names what is wrong with it
	}
	var curve asn1.ObjectIdentifier
	if !alg.ReadASN1ObjectIdentifier(&curve) || !alg.Empty() {
		return errors.New("the curve must be named by its OID (RFC 5480), not given by explicit parameters")
	}
	return nil
}

func (e *Engine) checkCSRSignature(csr *smx509.CertificateRequest) error {
	pub := csr.PublicKey.(*ecdsa.PublicKey) // allowKey admits EC keys only
	if pub.Curve == sm2.P256() {
		if csr.SignatureAlgorithm != smx509.SM2WithSM3 {
			return errorf(api.CodeBadCSRSignature, "csr: SM2 key signed with %v, want SM2-SM3", csr.SignatureAlgorithm)
		}
		if !sm2.VerifyASN1WithSM2(pub, e.sm2ID, csr.RawTBSCertificateRequest, csr.Signature) {
			return errorf(api.CodeBadCSRSignature, "csr: signature does not verify with signer ID %q", e.sm2ID)
		}
		return nil
	}
	if err := csr.CheckSignature(); err != nil {
		return errorf(api.CodeBadCSRSignature, "csr: %v", err)
	}
	return nil
}

// keyType names pub's algorithm the way profiles do, "" for non-EC keys.
func keyType(pub crypto.PublicKey) (string, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return "", errorf(api.CodeKeyTypeNotAllowed, "%T keys are not accepted: SM2 (or ECDSA where the profile allows)", pub)
	}
	switch k.Curve {
	case sm2.P256():
		return KeySM2, nil
	case elliptic.P256():
		return KeyECDSAP256, nil
	case elliptic.P384():
		return KeyECDSAP384, nil
	}
	return "", errorf(api.CodeWrongCurve, "curve %s is not accepted", k.Curve.Params().Name)
}

func allowKey(pub crypto.PublicKey, p *Profile) error {
	kt, err := keyType(pub)
	if err != nil {
		return err
	}
	if !slices.Contains(p.KeyTypes, kt) {
		return errorf(api.CodeWrongCurve, "profile %q takes %v keys, not %s", p.Name, p.KeyTypes, kt)
	}
	return nil
}

// subject attribute bounds from RFC 5280 appendix A (ub-common-name and
// so on), in characters.
var subjectBounds = map[string]int{"CN": 64, "O": 64, "OU": 64, "C": 2, "ST": 128, "L": 128, "serialNumber": 64}

// maxOUs bounds how many OU values a subject may carry.
const maxOUs = 16

func checkSubject(s Subject, p *Profile) (pkix.Name, error) {
	values := map[string][]string{"CN": {s.CommonName}, "O": {s.Organization}, "OU": s.OrganizationalUnit,
		"C": {s.Country}, "ST": {s.Province}, "L": {s.Locality}, "serialNumber": {s.SerialNumber}}
	if len(s.OrganizationalUnit) > maxOUs {
		return pkix.Name{}, errorf(api.CodeBadRequest, "subject OU: at most %d values", maxOUs)
	}
	// Single-valued attributes are "" when absent; every OU given is a value.
	for _, attr := range subjectAttributes {
		for _, v := range values[attr] {
			if v == "" && attr != "OU" {
				continue
			}
			if err := checkSubjectValue(attr, v); err != nil {
				return pkix.Name{}, err
			}
		}
	}
	present := func(attr string) bool {
		return slices.ContainsFunc(values[attr], func(v string) bool { return v != "" })
	}
	for _, attr := range p.RequiredSubject {
		if !present(attr) {
			return pkix.Name{}, errorf(api.CodeSubjectIncomplete, "profile %q requires subject %s", p.Name, attr)
		}
	}
	if !slices.ContainsFunc(subjectAttributes, present) {
		return pkix.Name{}, errorf(api.CodeSubjectIncomplete, "subject is empty")
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

// checkSubjectValue refuses a value a relying party could misread or that
// does not fit its attribute: broken UTF-8, control characters, invisible
// format characters (the bidirectional controls U+200E/F, U+202A–E,
// U+2066–9 and U+061C that reorder what is shown; zero-width spaces, BOM,
// tags), line and paragraph separators, noncharacters and U+FFFD (the mark
// of text already garbled), empty or blank values and leading or trailing
// space, and values beyond RFC 5280's upper bound. C is two capital
// letters (ISO 3166); serialNumber is a PrintableString (RFC 5280).
func checkSubjectValue(attr, v string) error {
	switch {
	case !utf8.ValidString(v):
		return errorf(api.CodeBadRequest, "subject %s: not valid UTF-8", attr)
	case strings.TrimSpace(v) == "":
		return errorf(api.CodeBadRequest, "subject %s: empty or blank value", attr)
	case strings.TrimSpace(v) != v:
		return errorf(api.CodeBadRequest, "subject %s: leading or trailing space", attr)
	case utf8.RuneCountInString(v) > subjectBounds[attr]:
		return errorf(api.CodeBadRequest, "subject %s: at most %d characters (RFC 5280)", attr, subjectBounds[attr])
	}
	if i := strings.IndexFunc(v, forbiddenInName); i >= 0 {
		r, _ := utf8.DecodeRuneInString(v[i:])
		return errorf(api.CodeBadRequest, "subject %s: character U+%04X (a control, format or bidirectional character) is not allowed", attr, r)
	}
	switch attr {
	case "C":
		if len(v) != 2 || strings.IndexFunc(v, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
			return errorf(api.CodeBadRequest, "subject C %q: two capital letters (ISO 3166)", v)
		}
	case "serialNumber":
		if strings.IndexFunc(v, func(r rune) bool { return !isPrintableStringChar(r) }) >= 0 {
			return errorf(api.CodeBadRequest, "subject serialNumber %q: letters, digits, space and '()+,-./:=? only (PrintableString)", v)
		}
	}
	return nil
}

// forbiddenInName reports runes no subject value may hold. Zero-width
// (non-)joiners stay allowed: scripts such as Persian and Uyghur need them.
func forbiddenInName(r rune) bool {
	switch {
	case unicode.IsControl(r), r == 0x2028, r == 0x2029, r == utf8.RuneError,
		unicode.Is(unicode.Noncharacter_Code_Point, r):
		return true
	case r == 0x200C, r == 0x200D:
		return false
	}
	return unicode.Is(unicode.Cf, r)
}

func isPrintableStringChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" '()+,-./:=?", r)
}

// checkNotReserved refuses a subject that is one of the CA's own names:
// an issuing CA's (a certificate whose subject equals its issuer's reads as
// self-issued, and Go then leaves out its authority key identifier) or the
// root's above it (e.caNames), compared as RFC 5280 name matching
// does (case and runs of space aside), and any audit key's common name.
func (e *Engine) checkNotReserved(subject pkix.Name) error {
	if strings.HasPrefix(foldName(subject.CommonName), auditKeyNamePrefix) {
		return errorf(api.CodeSubjectReserved, "subject CN %q: names starting %q are signerd's audit keys'", subject.CommonName, audit.KeySubjectPrefix)
	}
	if e.caNames[nameKey(subject.ToRDNSequence())] {
		return errorf(api.CodeSubjectReserved, "subject %q is the name of a CA of this hierarchy", subject.String())
	}
	return nil
}

// auditKeyNamePrefix is audit.KeySubjectPrefix folded (foldName).
var auditKeyNamePrefix = foldName(audit.KeySubjectPrefix)

// caNames returns the nameKey of each issuer's subject and issuer, the
// names checkNotReserved refuses; computed once, at New.
func caNames(issuers []*issuance.Issuer) map[string]bool {
	names := map[string]bool{}
	for _, iss := range issuers {
		for _, raw := range [][]byte{iss.Cert.RawSubject, iss.Cert.RawIssuer} {
			var rdns pkix.RDNSequence
			if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
				continue
			}
			names[nameKey(rdns)] = true
		}
	}
	return names
}

// nameKey is a name's attributes, each type with its folded value,
// sorted: two names with the same key match whatever their order and
// string types.
func nameKey(rdns pkix.RDNSequence) string {
	var parts []string
	for _, rdn := range rdns {
		for _, atv := range rdn {
			v, _ := atv.Value.(string)
			parts = append(parts, atv.Type.String()+"="+foldName(v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x00")
}

// foldName is a value as RFC 5280 §7.1 (RFC 4518) compares it, near
// enough: NFKC, case folded, NFKC again (folding can denormalise), runs
// of space one space, no leading or trailing space. So full-width
// letters, the long s and other compatibility forms of the CA's name are
// the CA's name.
func foldName(v string) string {
	if isASCII(v) {
		// NFKC leaves ASCII as it is and case folding maps A-Z to a-z
		// alone: the same value, without two passes through the Unicode
		// tables for every request's common name.
		return strings.Join(strings.Fields(strings.ToLower(v)), " ")
	}
	return foldUnicode(v)
}

func foldUnicode(v string) string {
	v = norm.NFKC.String(cases.Fold().String(norm.NFKC.String(v)))
	return strings.Join(strings.Fields(v), " ")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// checkKeyUse refuses, before the request is queued, to certify one of
// the CA's own keys: an issuing CA's key or signerd's audit key. A key
// certified for another use than the request's (the holder's signing key
// as its encryption key, a KMC key for signing) is refused in the batch,
// by reserve, in the transaction that records the request
// (keyUsedOtherwise), where the answer counts and the stage's reads are
// fetched together: asking the store here too would cost every request a
// read transaction of its own.
func (e *Engine) checkKeyUse(pub crypto.PublicKey) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	k, ok := pub.(equaler)
	if !ok {
		return nil
	}
	for _, iss := range e.issuers {
		if k.Equal(iss.Cert.PublicKey) {
			return errorf(api.CodeKeyReused, "the key is issuing CA %q's", iss.Cert.Subject.String())
		}
	}
	if e.sealer.pub != nil && k.Equal(e.sealer.pub) {
		return errorf(api.CodeKeyReused, "the key is signerd's audit key")
	}
	return nil
}

// maxNames bounds the dns_names, and the emails, of one request (as public
// CAs do): a certificate is not a directory.
const maxNames = 100

func checkNames(req *Request, p *Profile) error {
	if len(req.DNSNames) > maxNames || len(req.Emails) > maxNames {
		return errorf(api.CodeBadRequest, "at most %d dns_names and %d emails", maxNames, maxNames)
	}
	if len(req.DNSNames) > 0 && !p.DNSNames {
		return errorf(api.CodeBadRequest, "profile %q does not allow dns_names", p.Name)
	}
	if len(req.Emails) > 0 && !p.Emails {
		return errorf(api.CodeBadRequest, "profile %q does not allow emails", p.Name)
	}
	for _, d := range req.DNSNames {
		if !validDNSName(d) {
			return errorf(api.CodeBadRequest, "dns name %q: lower-case LDH labels, no wildcard", d)
		}
	}
	for _, m := range req.Emails {
		local, domain, ok := strings.Cut(m, "@")
		if !ok || len(m) > 254 || !validLocalPart(local) || !validDNSName(domain) {
			return errorf(api.CodeBadRequest, "email %q: want local@domain, the local part a dot-atom of ASCII (RFC 5322) of at most 64 characters, the domain lower-case LDH labels", m)
		}
	}
	return nil
}

// validLocalPart reports whether s is an RFC 5322 dot-atom of at most 64
// octets (RFC 5321). rfc822Name is an IA5String, so an internationalised
// local part (RFC 8398 SmtpUTF8Mailbox) cannot be carried; quoted local
// parts are not accepted either.
func validLocalPart(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for _, c := range []byte(atom) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0) {
				return false
			}
		}
	}
	return true
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
			return nil, errorf(api.CodeSubjectIncomplete, "profile %q requires identity %s", p.Name, kind)
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
			return nil, errorf(api.CodeBadRequest, "profile %q does not carry identity %s", p.Name, kind)
		}
		if v == "" || len(v) > 64 || strings.IndexFunc(v, func(r rune) bool {
			return !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z')
		}) >= 0 {
			return nil, errorf(api.CodeBadRequest, "identity %s: 1..64 letters and digits", kind)
		}
		value, err := asn1.MarshalWithParams(v, "printable")
		if err != nil {
			return nil, errorf(api.CodeBadRequest, "identity %s: %v", kind, err)
		}
		exts = append(exts, pkix.Extension{Id: identityOIDs[kind], Value: value})
	}
	return exts, nil
}

func checkValidity(days int, p *Profile) (int, error) {
	switch {
	case days < 0:
		return 0, errorf(api.CodeBadRequest, "validity_days %d is negative", days)
	case days == 0:
		return p.MaxValidityDays, nil
	case days > p.MaxValidityDays:
		return 0, errorf(api.CodeValidityTooLong, "validity_days %d exceeds profile %q's %d", days, p.Name, p.MaxValidityDays)
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
