package ocsp_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	xocsp "golang.org/x/crypto/ocsp"

	"signerd/ocsp"
	"signerd/revocation"
)

// ecCA is an ECDSA issuer, a delegated responder it certified and a leaf,
// each as crypto/x509 (for x/crypto/ocsp, the oracle) and smx509 (for
// package ocsp) parse them.
type ecCA struct {
	key, responderKey     *ecdsa.PrivateKey
	cert, responder, leaf *x509.Certificate
	smCert, smResponder   *smx509.Certificate
}

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

func newECCA(t testing.TB) *ecCA {
	t.Helper()
	ca := &ecCA{key: ecKey(t), responderKey: ecKey(t)}
	now := time.Now().Truncate(time.Second)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "OCSP test CA", Country: []string{"CN"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	ca.cert = x509Cert(t, caTmpl, caTmpl, &ca.key.PublicKey, ca.key)
	ca.responder = x509Cert(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "OCSP responder"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.AddDate(0, 1, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}}}, ca.cert, &ca.responderKey.PublicKey, ca.key)
	ca.leaf = x509Cert(t, &x509.Certificate{SerialNumber: new(big.Int).SetBytes([]byte{0x81, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}),
		Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now, NotAfter: now.AddDate(1, 0, 0)}, ca.cert, &ecKey(t).PublicKey, ca.key)
	ca.smCert, ca.smResponder = smCert(t, ca.cert.Raw), smCert(t, ca.responder.Raw)
	return ca
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func x509Cert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func smCert(t testing.TB, der []byte) *smx509.Certificate {
	t.Helper()
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var cryptoHash = map[ocsp.HashAlg]crypto.Hash{ocsp.SHA1: crypto.SHA1, ocsp.SHA256: crypto.SHA256}

// CertIDFor agrees with the CertID x/crypto/ocsp puts in a request, and
// ParseRequest reads that request back to it.
func TestCertIDForMatchesXCrypto(t *testing.T) {
	ca := newECCA(t)
	for _, h := range []ocsp.HashAlg{ocsp.SHA1, ocsp.SHA256} {
		t.Run(h.String(), func(t *testing.T) {
			req, err := xocsp.CreateRequest(ca.leaf, ca.cert, &xocsp.RequestOptions{Hash: cryptoHash[h]})
			if err != nil {
				t.Fatal(err)
			}
			oracle, err := xocsp.ParseRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ocsp.CertIDFor(ca.smCert, ca.leaf.SerialNumber.Bytes(), h)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want.IssuerNameHash, oracle.IssuerNameHash) || !bytes.Equal(want.IssuerKeyHash, oracle.IssuerKeyHash) {
				t.Fatalf("CertIDFor %x/%x, x/crypto %x/%x", want.IssuerNameHash, want.IssuerKeyHash, oracle.IssuerNameHash, oracle.IssuerKeyHash)
			}
			got, err := ocsp.ParseRequest(req)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !equalID(got[0], want) {
				t.Fatalf("ParseRequest %+v, want %+v", got, want)
			}
		})
	}
	if _, err := ocsp.CertIDFor(ca.smCert, []byte{1}, ocsp.HashAlg(9)); err == nil {
		t.Fatal("CertIDFor with no hash of ours")
	}
}

func equalID(a, b ocsp.CertID) bool {
	return a.HashAlg == b.HashAlg && bytes.Equal(a.IssuerNameHash, b.IssuerNameHash) &&
		bytes.Equal(a.IssuerKeyHash, b.IssuerKeyHash) && bytes.Equal(a.Serial, b.Serial)
}

// A response of ResponseTBS and Assemble is, byte for byte, the one
// x/crypto/ocsp creates for the same status, but for the ResponderID:
// x/crypto writes byName, signerd byKey. Assemble, given x/crypto's
// ResponseData and signature, makes x/crypto's response exactly.
func TestResponseMatchesXCrypto(t *testing.T) {
	ca := newECCA(t)
	now := time.Now().Truncate(time.Second).UTC()
	serial := ca.leaf.SerialNumber.Bytes()
	for _, tc := range []struct {
		name      string
		s         ocsp.Single
		delegated bool
		h         ocsp.HashAlg
	}{
		{"good, SHA-1, delegated", ocsp.Single{Status: ocsp.Good}, true, ocsp.SHA1},
		{"good, SHA-256, issuer signs", ocsp.Single{Status: ocsp.Good}, false, ocsp.SHA256},
		{"revoked with a reason", ocsp.Single{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour), Reason: revocation.KeyCompromise}, true, ocsp.SHA1},
		{"revoked, aACompromise", ocsp.Single{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour), Reason: revocation.AACompromise}, false, ocsp.SHA1},
		{"revoked, unspecified", ocsp.Single{Status: ocsp.Revoked, RevokedAt: now.Add(-time.Hour)}, true, ocsp.SHA256},
		{"unknown", ocsp.Single{Status: ocsp.Unknown}, true, ocsp.SHA1},
		{"after 2050", ocsp.Single{Status: ocsp.Revoked, RevokedAt: now.AddDate(30, 0, 0)}, true, ocsp.SHA1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.Serial, s.ThisUpdate, s.NextUpdate = serial, now, now.Add(96*time.Hour)
			if s.RevokedAt.After(now) {
				s.ThisUpdate, s.NextUpdate = s.RevokedAt, s.RevokedAt.Add(time.Hour)
			}
			signer, responderCert, responderKey := ca.key, (*x509.Certificate)(nil), crypto.PublicKey(&ca.key.PublicKey)
			if tc.delegated {
				signer, responderCert, responderKey = ca.responderKey, ca.responder, &ca.responderKey.PublicKey
			}
			status := map[ocsp.Status]int{ocsp.Good: xocsp.Good, ocsp.Revoked: xocsp.Revoked, ocsp.Unknown: xocsp.Unknown}[s.Status]
			theirs, err := xocsp.CreateResponse(ca.cert, ca.cert, xocsp.Response{Status: status, SerialNumber: ca.leaf.SerialNumber,
				ThisUpdate: s.ThisUpdate, NextUpdate: s.NextUpdate, RevokedAt: s.RevokedAt, RevocationReason: int(s.Reason),
				IssuerHash: cryptoHash[tc.h], Certificate: responderCert}, signer)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := xocsp.ParseResponse(theirs, nil)
			if err != nil {
				t.Fatal(err)
			}
			tbs, err := ocsp.ResponseTBS(responderKey, ca.smCert, s, parsed.ProducedAt, tc.h)
			if err != nil {
				t.Fatal(err)
			}
			keyHash, err := ocsp.KeyHash(responderKey)
			if err != nil {
				t.Fatal(err)
			}
			if want := withResponderID(t, parsed.TBSResponseData, byKey(keyHash)); !bytes.Equal(tbs, want) {
				t.Fatalf("ResponseData\n %x\nwant (x/crypto's, byKey)\n %x", tbs, want)
			}
			alg, err := ocsp.AlgorithmIdentifier(smx509.ECDSAWithSHA256)
			if err != nil {
				t.Fatal(err)
			}
			var certs [][]byte
			if tc.delegated {
				certs = [][]byte{ca.responder.Raw}
			}
			ours, err := ocsp.Assemble(parsed.TBSResponseData, alg, parsed.Signature, certs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours, theirs) {
				t.Fatalf("Assemble\n %x\nwant (x/crypto's)\n %x", ours, theirs)
			}
		})
	}
}

func byKey(hash []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(hash) })
	return b.BytesOrPanic()
}

// withResponderID is the ResponseData tbs with its responderID replaced.
func withResponderID(t *testing.T, tbs, id []byte) []byte {
	t.Helper()
	in := cryptobyte.String(tbs)
	var body cryptobyte.String
	if !in.ReadASN1(&body, casn1.SEQUENCE) || body.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		t.Fatal("x/crypto's ResponseData: not a v1 SEQUENCE")
	}
	var id0 cryptobyte.String
	var tag casn1.Tag
	if !body.ReadAnyASN1Element(&id0, &tag) {
		t.Fatal("x/crypto's ResponseData: no responderID")
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(id); b.AddBytes(body) })
	return b.BytesOrPanic()
}

// ResponseTBS refuses a response it cannot or must not say.
func TestResponseTBSRefuses(t *testing.T) {
	ca := newECCA(t)
	now := time.Now()
	good := ocsp.Single{Serial: []byte{1}, Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	for _, tc := range []struct {
		name string
		edit func(s *ocsp.Single)
		h    ocsp.HashAlg
	}{
		{"empty serial", func(s *ocsp.Single) { s.Serial = nil }, ocsp.SHA1},
		{"serial with a leading zero", func(s *ocsp.Single) { s.Serial = []byte{0, 0x81} }, ocsp.SHA1},
		{"serial of 21 octets", func(s *ocsp.Single) { s.Serial = bytes.Repeat([]byte{1}, 21) }, ocsp.SHA1},
		{"good with a reason", func(s *ocsp.Single) { s.Reason = revocation.KeyCompromise }, ocsp.SHA1},
		{"unknown with a revocation time", func(s *ocsp.Single) { s.Status, s.RevokedAt = ocsp.Unknown, now }, ocsp.SHA1},
		{"revoked without a time", func(s *ocsp.Single) { s.Status = ocsp.Revoked }, ocsp.SHA1},
		{"revoked, removeFromCRL", func(s *ocsp.Single) { s.Status, s.RevokedAt, s.Reason = ocsp.Revoked, now, revocation.RemoveFromCRL }, ocsp.SHA1},
		{"revoked, reason 7", func(s *ocsp.Single) { s.Status, s.RevokedAt, s.Reason = ocsp.Revoked, now, 7 }, ocsp.SHA1},
		{"no status", func(s *ocsp.Single) { s.Status = 3 }, ocsp.SHA1},
		{"nextUpdate not after thisUpdate", func(s *ocsp.Single) { s.NextUpdate = s.ThisUpdate }, ocsp.SHA1},
		{"no nextUpdate", func(s *ocsp.Single) { s.NextUpdate = time.Time{} }, ocsp.SHA1},
		{"year 10000", func(s *ocsp.Single) { s.NextUpdate = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, ocsp.SHA1},
		{"no hash of ours", func(*ocsp.Single) {}, ocsp.HashAlg(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			if tbs, err := ocsp.ResponseTBS(&ca.key.PublicKey, ca.smCert, s, now, tc.h); err == nil {
				t.Fatalf("built %x", tbs)
			}
		})
	}
	if _, err := ocsp.ResponseTBS(&ca.key.PublicKey, ca.smCert, good, now, ocsp.SHA1); err != nil {
		t.Fatalf("the unedited response: %v", err)
	}
}

// The error responses are what x/crypto/ocsp reads as those statuses.
func TestErrorResponse(t *testing.T) {
	for _, s := range []ocsp.ResponseStatus{ocsp.MalformedRequest, ocsp.InternalError, ocsp.TryLater, ocsp.Unauthorized} {
		_, err := xocsp.ParseResponse(ocsp.ErrorResponse(s), nil)
		var re xocsp.ResponseError
		if !errors.As(err, &re) || int(re.Status) != int(s) {
			t.Errorf("status %d: x/crypto reads %v", s, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("ErrorResponse(successful) did not panic")
		}
	}()
	ocsp.ErrorResponse(0)
}

// ParseRequest reads past what it ignores and refuses what is not a
// request it can answer.
func TestParseRequest(t *testing.T) {
	ca := newECCA(t)
	plain, err := xocsp.CreateRequest(ca.leaf, ca.cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ocsp.CertIDFor(ca.smCert, ca.leaf.SerialNumber.Bytes(), ocsp.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	certID := func(h ocsp.HashAlg, params []byte, serial []byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(c *cryptobyte.Builder) {
			c.AddASN1(casn1.SEQUENCE, func(a *cryptobyte.Builder) {
				if oid := h.OID(); oid != nil {
					a.AddASN1ObjectIdentifier(oid)
				} else {
					a.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}) // SHA-512
				}
				a.AddBytes(params)
			})
			size := 20
			if h != ocsp.SHA1 {
				size = 32
			}
			c.AddASN1OctetString(make([]byte, size))
			c.AddASN1OctetString(make([]byte, size))
			c.AddASN1(casn1.INTEGER, func(n *cryptobyte.Builder) { n.AddBytes(serial) })
		})
		return b.BytesOrPanic()
	}
	// request wraps TBSRequest contents and an optional signature.
	request := func(tbs []byte, sig []byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) {
			r.AddASN1(casn1.SEQUENCE, func(t *cryptobyte.Builder) { t.AddBytes(tbs) })
			r.AddBytes(sig)
		})
		return b.BytesOrPanic()
	}
	list := func(ids ...[]byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(l *cryptobyte.Builder) {
			for _, id := range ids {
				l.AddASN1(casn1.SEQUENCE, func(r *cryptobyte.Builder) { r.AddBytes(id) })
			}
		})
		return b.BytesOrPanic()
	}
	null := []byte{0x05, 0x00}
	good := certID(ocsp.SHA256, null, []byte{0x00, 0x80})
	concat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	version := []byte{0xa0, 0x03, 0x02, 0x01, 0x00}
	requestor := []byte{0xa1, 0x06, 0x82, 0x04, 'a', '.', 'c', 'n'}
	nonceExt := []byte{0xa2, 0x0f, 0x30, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02}
	signature := []byte{0xa0, 0x02, 0x30, 0x00}
	var many [][]byte
	for range ocsp.MaxRequests + 1 {
		many = append(many, good)
	}
	for _, tc := range []struct {
		name   string
		der    []byte
		serial []byte // the first CertID's; nil: refused
		n      int
		err    error
	}{
		{"x/crypto's", plain, want.Serial, 1, nil},
		{"SHA-256, serial with a sign octet, version, requestor, nonce, signature",
			request(concat(version, requestor, list(good), nonceExt), signature), []byte{0x80}, 1, nil},
		{"absent hash parameters", request(list(certID(ocsp.SM3, nil, []byte{1})), nil), []byte{1}, 1, nil},
		{"two CertIDs", request(list(good, certID(ocsp.SHA1, null, []byte{2})), nil), []byte{0x80}, 2, nil},
		{"no CertID", request(list(), nil), nil, 0, nil},
		{"SHA-512", request(list(certID(0, null, []byte{1})), nil), nil, 0, ocsp.ErrHashAlgorithm},
		{"hash parameters not NULL", request(list(certID(ocsp.SHA1, []byte{0x04, 0x00}, []byte{1})), nil), nil, 0, nil},
		{"negative serial", request(list(certID(ocsp.SHA1, null, []byte{0xff})), nil), nil, 0, nil},
		{"zero serial", request(list(certID(ocsp.SHA1, null, []byte{0})), nil), nil, 0, nil},
		{"serial not minimal", request(list(certID(ocsp.SHA1, null, []byte{0, 1})), nil), nil, 0, nil},
		{"too many CertIDs", request(list(many...), nil), nil, 0, nil},
		{"trailing octets", append(bytes.Clone(plain), 0), nil, 0, nil},
		{"truncated", plain[:len(plain)-1], nil, 0, nil},
		{"a response", ocsp.ErrorResponse(ocsp.Unauthorized), nil, 0, nil},
		{"empty", nil, nil, 0, nil},
		{"oversize", request(concat(list(good), []byte{0xa2, 0x82, 0x20, 0x00}, make([]byte, 0x2000)), nil), nil, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ids, err := ocsp.ParseRequest(tc.der)
			switch {
			case tc.serial == nil && err == nil:
				t.Fatalf("parsed %+v", ids)
			case tc.serial == nil && tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("error %v, want %v", err, tc.err)
			case tc.serial != nil && err != nil:
				t.Fatal(err)
			case tc.serial != nil && (len(ids) != tc.n || !bytes.Equal(ids[0].Serial, tc.serial)):
				t.Fatalf("parsed %+v, want %d with serial %x first", ids, tc.n, tc.serial)
			}
		})
	}
}

// DecodeGET takes a request from a GET path as RFC 5019 §A.1 makes it,
// and as clients that skip a step of it do.
func TestDecodeGET(t *testing.T) {
	ca := newECCA(t)
	var req []byte
	// A request whose base64 has '+', '/' and padding, so escaping matters.
	for i := 0; ; i++ {
		leaf := x509Cert(t, &x509.Certificate{SerialNumber: big.NewInt(int64(1000 + i)), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, ca.cert, &ecKey(t).PublicKey, ca.key)
		r, err := xocsp.CreateRequest(leaf, ca.cert, nil)
		if err != nil {
			t.Fatal(err)
		}
		if s := base64.StdEncoding.EncodeToString(r); strings.ContainsAny(s, "+") && strings.Contains(s, "/") && strings.HasSuffix(s, "=") {
			req = r
			break
		}
	}
	std := base64.StdEncoding.EncodeToString(req)
	for _, tc := range []struct {
		name, path string
		ok         bool
	}{
		{"RFC 5019: base64, then URL-encoded", url.QueryEscape(std), true},
		{"with the leading slash", "/" + url.QueryEscape(std), true},
		{"not escaped", std, true},
		{"'/' kept, '+' and '=' escaped", strings.NewReplacer("+", "%2B", "=", "%3D").Replace(std), true},
		{"URL-safe alphabet, unpadded", base64.RawURLEncoding.EncodeToString(req), true},
		{"bad escape", "%zz" + std, false},
		{"not base64", "!!!!", false},
		{"oversize", strings.Repeat("A", 200_000), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := ocsp.DecodeGET(tc.path)
			if tc.ok != (err == nil) || tc.ok && !bytes.Equal(der, req) {
				t.Fatalf("decoded %x, %v; want ok %v", der, err, tc.ok)
			}
			if tc.ok {
				if _, err := ocsp.ParseRequest(der); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// FuzzParseRequest: no input panics ParseRequest, and what it accepts is
// within its limits, with CertIDs of our hashes and positive serials.
func FuzzParseRequest(f *testing.F) {
	ca := newECCA(f)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384} {
		req, err := xocsp.CreateRequest(ca.leaf, ca.cert, &xocsp.RequestOptions{Hash: h})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req)
	}
	f.Add([]byte{0x30, 0x80})
	f.Add(ocsp.ErrorResponse(ocsp.MalformedRequest))
	f.Fuzz(func(t *testing.T, der []byte) {
		ids, err := ocsp.ParseRequest(der)
		if err != nil {
			return
		}
		if len(der) > ocsp.MaxRequestSize || len(ids) == 0 || len(ids) > ocsp.MaxRequests {
			t.Fatalf("accepted %d octets, %d CertIDs", len(der), len(ids))
		}
		for _, id := range ids {
			if id.HashAlg.New() == nil || len(id.Serial) == 0 || id.Serial[0] == 0 || len(id.IssuerKeyHash) != id.HashAlg.New().Size() {
				t.Fatalf("accepted CertID %+v", id)
			}
		}
	})
}
