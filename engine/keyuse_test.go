package engine_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
)

// spki is a key's DER SubjectPublicKeyInfo as a KMC sends it.
func spki(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// explicitSPKI encodes key's point under id-ecPublicKey with explicit
// curve parameters (RFC 3279 ECParameters): SM2's p and n, and the a, b
// and base point given (nil for SM2's own).
func explicitSPKI(t *testing.T, key *sm2.PrivateKey, a, b, gx *big.Int) []byte {
	t.Helper()
	params := sm2.P256().Params()
	if a == nil {
		a = new(big.Int).Sub(params.P, big.NewInt(3))
	}
	if b == nil {
		b = params.B
	}
	if gx == nil {
		gx = params.Gx
	}
	fe := func(v *big.Int) []byte { return v.FillBytes(make([]byte, 32)) }
	point := func(x, y *big.Int) []byte { return append(append([]byte{4}, fe(x)...), fe(y)...) }
	var bld cryptobyte.Builder
	bld.AddASN1(casn1.SEQUENCE, func(spki *cryptobyte.Builder) {
		spki.AddASN1(casn1.SEQUENCE, func(alg *cryptobyte.Builder) {
			alg.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1})
			alg.AddASN1(casn1.SEQUENCE, func(ec *cryptobyte.Builder) {
				ec.AddASN1Int64(1)
				ec.AddASN1(casn1.SEQUENCE, func(field *cryptobyte.Builder) {
					field.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 1, 1})
					field.AddASN1BigInt(params.P)
				})
				ec.AddASN1(casn1.SEQUENCE, func(curve *cryptobyte.Builder) {
					curve.AddASN1OctetString(fe(a))
					curve.AddASN1OctetString(fe(b))
				})
				ec.AddASN1OctetString(point(gx, params.Gy))
				ec.AddASN1BigInt(params.N)
				ec.AddASN1Int64(1)
			})
		})
		spki.AddASN1BitString(point(key.X, key.Y))
	})
	return bld.BytesOrPanic()
}

// csrWithSPKI is a CSR by key whose SubjectPublicKeyInfo is replaced by
// spki, signed again by key with the default SM2 ID, so its signature
// verifies.
func csrWithSPKI(t *testing.T, key *sm2.PrivateKey, spki []byte) []byte {
	t.Helper()
	csr, err := smx509.ParseCertificateRequest(csrWith(t, key))
	if err != nil {
		t.Fatal(err)
	}
	body := cryptobyte.String(csr.RawTBSCertificateRequest)
	var content cryptobyte.String
	if !body.ReadASN1(&content, casn1.SEQUENCE) {
		t.Fatal("CSR body")
	}
	var tbs cryptobyte.Builder
	tbs.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(bytes.Replace(content, csr.RawSubjectPublicKeyInfo, spki, 1))
	})
	return signCSR(t, key, hsm.DefaultSM2ID, tbs.BytesOrPanic())
}

// TestEncryptionKeysComeFromTheKMCAlone: an encryption profile takes the
// KMC's public key and nothing else; no key is certified for two uses (a
// holder's signing key as its encryption key, a KMC key for signing, a CA
// key, the audit key); keys given with explicit curve parameters are
// refused, on every profile.
func TestEncryptionKeysComeFromTheKMCAlone(t *testing.T) {
	ca := enginetest.NewCA(t)
	st := enginetest.OpenStore(t)
	audit := auditKey(t, ca)
	e := ca.Engine(t, st, engine.Config{AuditKey: audit, SealInterval: time.Hour})
	ctx := context.Background()
	person := engine.Subject{CommonName: "李四"}

	signingKey, signingCSR := enginetest.NewCSR(t)
	issue(t, e, engine.Request{ID: "li-sign", Profile: "person-sign", Subject: person, CSR: signingCSR})
	kmcKey, _ := enginetest.NewCSR(t)
	encCert := issue(t, e, engine.Request{ID: "li-enc", Profile: "person-enc", Subject: person, PublicKey: spki(t, &kmcKey.PublicKey)})
	// The same KMC key again for encryption is no conflict.
	issue(t, e, engine.Request{ID: "li-enc-again", Profile: "person-enc", Subject: person, PublicKey: spki(t, &kmcKey.PublicKey)})

	otherKey, otherCSR := enginetest.NewCSR(t)
	wrongB := new(big.Int).Add(sm2.P256().Params().B, big.NewInt(1))
	wrongA := big.NewInt(7)
	wrongG := new(big.Int).Add(sm2.P256().Params().Gx, big.NewInt(1))
	tests := []struct {
		name string
		req  engine.Request
		want api.Code
	}{
		{"CSR on an encryption profile", engine.Request{Profile: "person-enc", CSR: otherCSR}, api.CodeBadRequest},
		{"nothing on an encryption profile", engine.Request{Profile: "person-enc"}, api.CodeBadRequest},
		{"the holder's signing key as its encryption key", engine.Request{Profile: "person-enc", PublicKey: spki(t, &signingKey.PublicKey)}, api.CodeKeyReused},
		{"the signing key on another encryption profile", engine.Request{Profile: "device-enc", PublicKey: spki(t, &signingKey.PublicKey)}, api.CodeKeyReused},
		{"a KMC key for signing", engine.Request{Profile: "person-sign", CSR: csrWith(t, kmcKey)}, api.CodeKeyReused},
		{"the issuing CA's key", engine.Request{Profile: "person-enc", PublicKey: spki(t, ca.Cert.PublicKey)}, api.CodeKeyReused},
		{"the audit key", engine.Request{Profile: "person-enc", PublicKey: spki(t, audit.Public())}, api.CodeKeyReused},
		{"explicit parameters, b not SM2's", engine.Request{Profile: "person-enc", PublicKey: explicitSPKI(t, otherKey, nil, wrongB, nil)}, api.CodeWrongCurve},
		{"explicit parameters, a not SM2's", engine.Request{Profile: "person-enc", PublicKey: explicitSPKI(t, otherKey, wrongA, nil, nil)}, api.CodeWrongCurve},
		{"explicit parameters, G not SM2's", engine.Request{Profile: "person-enc", PublicKey: explicitSPKI(t, otherKey, nil, nil, wrongG)}, api.CodeWrongCurve},
		{"explicit parameters, all SM2's", engine.Request{Profile: "person-enc", PublicKey: explicitSPKI(t, otherKey, nil, nil, nil)}, api.CodeWrongCurve},
		{"CSR with explicit parameters, b not SM2's", engine.Request{Profile: "person-sign", CSR: csrWithSPKI(t, otherKey, explicitSPKI(t, otherKey, nil, wrongB, nil))}, api.CodeWrongCurve},
		{"CSR with explicit parameters, all SM2's", engine.Request{Profile: "person-sign", CSR: csrWithSPKI(t, otherKey, explicitSPKI(t, otherKey, nil, nil, nil))}, api.CodeWrongCurve},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ID = "keyuse-" + string(rune('a'+i))
			tt.req.Subject = person
			_, err := e.Issue(ctx, ra, tt.req)
			if code := engine.CodeOf(err); err == nil || code != tt.want {
				t.Fatalf("Issue = %v, want %s", err, tt.want)
			}
		})
	}
	// Renewing the encryption certificate with the holder's signing key is
	// refused the same way.
	_, err := e.Renew(ctx, ra, encCert.Serial, engine.Request{ID: "li-enc-renew", Profile: "person-enc", Subject: person,
		PublicKey: spki(t, &signingKey.PublicKey)})
	if engine.CodeOf(err) != api.CodeKeyReused {
		t.Fatalf("renew with the signing key: %v, want %s", err, api.CodeKeyReused)
	}
	// A named-curve key from the KMC and the CSR's own key still work.
	issue(t, e, engine.Request{ID: "other-enc", Profile: "person-enc", Subject: person, PublicKey: spki(t, &otherKey.PublicKey)})
	issue(t, e, engine.Request{ID: "fresh-sign", Profile: "person-sign", Subject: person, CSR: csrWith(t, mustSM2(t))})
}

func mustSM2(t *testing.T) *sm2.PrivateKey {
	t.Helper()
	k, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
