package engine_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// countingSigner observes how often the HSM is asked to sign.
type countingSigner struct {
	issuance.Signer
	n int
}

func (c *countingSigner) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	c.n++
	return c.Signer.SignDigest(ctx, e)
}

func csrWith(t *testing.T, key any) []byte {
	t.Helper()
	csr, err := smx509.CreateCertificateRequest(rand.Reader, &smx509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// csrSignedWithID re-signs a CSR's body with another SM2 signer ID, which
// a CA checking the default ID must refuse.
func csrSignedWithID(t *testing.T, key *sm2.PrivateKey, id []byte) []byte {
	t.Helper()
	csr, err := smx509.ParseCertificateRequest(csrWith(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return signCSR(t, key, id, csr.RawTBSCertificateRequest)
}

// signCSR makes a CSR of the body tbs, signed by key with the SM2 signer
// ID id (SM3withSM2).
func signCSR(t *testing.T, key *sm2.PrivateKey, id, tbs []byte) []byte {
	t.Helper()
	sig, err := key.SignWithSM2(rand.Reader, id, tbs)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}{asn1.RawValue{FullBytes: tbs},
		pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 501}},
		asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestRejections(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	counter := &countingSigner{Signer: ca.Signer}
	iss, err := issuance.NewIssuer(ca.Cert, counter)
	if err != nil {
		t.Fatal(err)
	}
	e := ca.Engine(t, st, engine.Config{Issuers: []*issuance.Issuer{iss}})

	sm2Key, goodCSR := enginetest.NewCSR(t)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	tampered := append([]byte(nil), goodCSR...)
	tampered[len(tampered)-5] ^= 1
	kmcKey, _ := smx509.MarshalPKIXPublicKey(&sm2Key.PublicKey)
	person := engine.Subject{CommonName: "李四"}

	tests := []struct {
		name string
		req  engine.Request
		want api.Code
	}{
		{"no request id", engine.Request{Profile: "person-sign", Subject: person, CSR: goodCSR}, api.CodeBadRequest},
		{"request id with space", engine.Request{ID: "a b", Profile: "person-sign", Subject: person, CSR: goodCSR}, api.CodeBadRequest},
		{"unknown profile", engine.Request{ID: "r", Profile: "robot", Subject: person, CSR: goodCSR}, api.CodeUnknownProfile},
		{"no key", engine.Request{ID: "r", Profile: "person-sign", Subject: person}, api.CodeBadRequest},
		{"garbage CSR", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: []byte("not DER")}, api.CodeMalformedCSR},
		{"tampered CSR", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: tampered}, api.CodeBadCSRSignature},
		{"CSR signed with another SM2 ID", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: csrSignedWithID(t, sm2Key, []byte("someone-else"))}, api.CodeBadCSRSignature},
		{"P-256 key for SM2 profile", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: csrWith(t, p256)}, api.CodeWrongCurve},
		{"P-224 key", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: csrWith(t, p224)}, api.CodeWrongCurve},
		{"RSA key", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: csrWith(t, rsaKey)}, api.CodeKeyTypeNotAllowed},
		{"KMC key for signing profile", engine.Request{ID: "r", Profile: "person-sign", Subject: person, PublicKey: kmcKey}, api.CodeBadRequest},
		{"garbage KMC key", engine.Request{ID: "r", Profile: "person-enc", Subject: person, PublicKey: []byte{0x30, 0}}, api.CodeMalformedKey},
		{"CSR and KMC key", engine.Request{ID: "r", Profile: "person-enc", Subject: person, CSR: goodCSR, PublicKey: kmcKey}, api.CodeBadRequest},
		{"empty subject", engine.Request{ID: "r", Profile: "device-sign", CSR: goodCSR}, api.CodeSubjectIncomplete},
		{"organization without O", engine.Request{ID: "r", Profile: "organization-sign", Subject: person, CSR: goodCSR}, api.CodeSubjectIncomplete},
		{"CN too long", engine.Request{ID: "r", Profile: "person-sign", Subject: engine.Subject{CommonName: string(make([]rune, 65))}, CSR: goodCSR}, api.CodeBadRequest},
		{"bad country", engine.Request{ID: "r", Profile: "person-sign", Subject: engine.Subject{CommonName: "x", Country: "China"}, CSR: goodCSR}, api.CodeBadRequest},
		{"validity beyond profile", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: goodCSR, ValidityDays: 366}, api.CodeValidityTooLong},
		{"negative validity", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: goodCSR, ValidityDays: -1}, api.CodeBadRequest},
		{"DNS name on person", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: goodCSR, DNSNames: []string{"a.cn"}}, api.CodeBadRequest},
		{"wildcard DNS name", engine.Request{ID: "r", Profile: "device-sign", Subject: person, CSR: goodCSR, DNSNames: []string{"*.a.cn"}}, api.CodeBadRequest},
		{"identity the profile lacks", engine.Request{ID: "r", Profile: "device-sign", Subject: person, CSR: goodCSR, Identity: map[string]string{"passport": "E1234"}}, api.CodeBadRequest},
		{"identity with punctuation", engine.Request{ID: "r", Profile: "person-sign", Subject: person, CSR: goodCSR, Identity: map[string]string{"passport": "E-1234"}}, api.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Issue(context.Background(), ra, tt.req)
			var ee *engine.Error
			if !errors.As(err, &ee) || ee.Code != tt.want {
				t.Fatalf("Issue = %v, want code %s", err, tt.want)
			}
			if ee.Message == "" {
				t.Error("error without a message")
			}
		})
	}
	if counter.n != 0 {
		t.Errorf("rejected requests reached the HSM %d times", counter.n)
	}
	st.View(func(tx *store.Tx) error {
		n := 0
		tx.Serials(func([]byte, store.Serial) error { n++; return nil })
		if n != 0 {
			t.Errorf("rejected requests reserved %d serials", n)
		}
		return nil
	})
	// The engine still serves.
	issue(t, e, engine.Request{ID: "after", Profile: "person-sign", Subject: person, CSR: goodCSR})
	if counter.n != 1 {
		t.Errorf("one issuance signed %d times", counter.n)
	}
}

func TestIdempotentRetry(t *testing.T) { onEachStore(t, testIdempotentRetry) }

func testIdempotentRetry(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	e := ca.Engine(t, st, engine.Config{})
	_, csr := enginetest.NewCSR(t)
	req := engine.Request{ID: "ra-7", Profile: "person-sign", Subject: engine.Subject{CommonName: "王五"}, CSR: csr}
	first := issue(t, e, req)
	again := issue(t, e, req)
	if string(first.DER) != string(again.DER) {
		t.Fatal("retry issued a different certificate")
	}
	_, other := enginetest.NewCSR(t)
	changed := req
	changed.CSR = other
	if _, err := e.Issue(context.Background(), ra, changed); engine.CodeOf(err) != api.CodeRequestConflict {
		t.Fatalf("same id, other CSR: %v, want %s", err, api.CodeRequestConflict)
	}
	changed = req
	changed.ValidityDays = 30
	if _, err := e.Issue(context.Background(), ra, changed); engine.CodeOf(err) != api.CodeRequestConflict {
		t.Fatalf("same id, other validity: %v, want %s", err, api.CodeRequestConflict)
	}
	st.View(func(tx *store.Tx) error {
		n := 0
		tx.Certificates(func(*store.Certificate) error { n++; return nil })
		if n != 1 {
			t.Errorf("%d certificates recorded, want 1", n)
		}
		return nil
	})
}
