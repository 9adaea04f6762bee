package hsm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha1"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/emmansun/gmsm/sm2"
	"github.com/miekg/pkcs11"
)

// Algorithm is a key's algorithm and curve.
type Algorithm int

const (
	SM2 Algorithm = iota + 1
	ECDSAP256
	ECDSAP384
)

func (a Algorithm) String() string {
	switch a {
	case SM2:
		return "sm2"
	case ECDSAP256:
		return "ecdsa-p256"
	case ECDSAP384:
		return "ecdsa-p384"
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// ParseAlgorithm reads "sm2", "ecdsa-p256" or "ecdsa-p384".
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range []Algorithm{SM2, ECDSAP256, ECDSAP384} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown key algorithm %q (want sm2, ecdsa-p256 or ecdsa-p384)", s)
}

// Curve OIDs as CKA_EC_PARAMS carries them (DER of the named curve OID).
var (
	ecParamsSM2  = mustOID(asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 301})
	ecParamsP256 = mustOID(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	ecParamsP384 = mustOID(asn1.ObjectIdentifier{1, 3, 132, 0, 34})
)

func mustOID(oid asn1.ObjectIdentifier) []byte {
	der, err := asn1.Marshal(oid)
	if err != nil {
		panic(err)
	}
	return der
}

// KeySpec describes a key to generate.
type KeySpec struct {
	Label     string
	Algorithm Algorithm
	// Backup makes the key extractable, but only under a trusted wrapping
	// key (CKA_WRAP_WITH_TRUSTED), for split-control backup (SPEC §4.3).
	Backup bool
}

// Key is a signing key pair in the token. Its private half stays there.
type Key struct {
	m         *Module
	Label     string
	ID        []byte // SHA-1 of the public EC point, as RFC 5280's key identifier
	Algorithm Algorithm
	Public    *ecdsa.PublicKey

	mu     sync.Mutex
	gen    uint64 // pool generation the handle was found in
	handle pkcs11.ObjectHandle
	found  bool
}

// KeyID is the CKA_ID signerd gives a key: SHA-1 of the uncompressed public
// point, which is also RFC 5280 §4.2.1.2 method 1 subject key identifier.
func KeyID(pub *ecdsa.PublicKey) []byte {
	sum := sha1.Sum(marshalPoint(pub))
	return sum[:]
}

func marshalPoint(pub *ecdsa.PublicKey) []byte {
	size := (pub.Curve.Params().BitSize + 7) / 8
	out := make([]byte, 1+2*size)
	out[0] = 4
	pub.X.FillBytes(out[1 : 1+size])
	pub.Y.FillBytes(out[1+size:])
	return out
}

// GenerateKey makes a key pair in the token with the attributes of SPEC §3.5.
// It refuses a label that any object in the token already has.
func (m *Module) GenerateKey(ctx context.Context, spec KeySpec) (*Key, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("generate key: label is empty")
	}
	mech, keyType, params, err := m.keyGen(spec.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", spec.Label, err)
	}
	var key *Key
	err = m.do(ctx, func(s *session) error {
		p11 := m.lib.ctx
		if err := m.labelUnused(s, spec.Label); err != nil {
			return err
		}
		// The ID is the public key's hash, known only after generation; a
		// random placeholder keeps the two halves paired until then.
		tmpID, err := p11.GenerateRandom(s.h, 20)
		if err != nil {
			return fmt.Errorf("random key ID: %w", err)
		}
		pubT := publicKeyTemplate(keyType, spec.Label, tmpID, params)
		privT := privateKeyTemplate(keyType, spec.Label, tmpID, spec.Backup)
		pubH, privH, err := p11.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("C_GenerateKeyPair: %w", err)
		}
		key, err = m.finishKey(s, spec, pubH, privH)
		if err != nil {
			// Never leave a half-made key behind under the label.
			p11.DestroyObject(s.h, privH)
			p11.DestroyObject(s.h, pubH)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("generate %s key %q: %w", spec.Algorithm, spec.Label, err)
	}
	return key, nil
}

// labelUnused refuses a label any object in the token has, so no key is
// ever shadowed by another under the same name.
func (m *Module) labelUnused(s *session, label string) error {
	existing, err := m.findObjects(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)})
	if err != nil {
		return err
	}
	if len(existing) > 0 {
		return ErrKeyExists
	}
	return nil
}

// publicKeyTemplate is a token public key that verifies and does nothing
// else.
func publicKeyTemplate(keyType uint, label string, id, params []byte) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if params != nil {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params))
	}
	return t
}

// privateKeyTemplate is a private key with SPEC §3.5's attributes: a
// sensitive, sign-only token object, extractable only for backup and then
// only under a trusted KEK.
func privateKeyTemplate(keyType uint, label string, id []byte, backup bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, backup),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP_WITH_TRUSTED, backup),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// finishKey reads the new public key and sets CKA_ID on both halves.
func (m *Module) finishKey(s *session, spec KeySpec, pubH, privH pkcs11.ObjectHandle) (*Key, error) {
	p11 := m.lib.ctx
	attrs, err := p11.GetAttributeValue(s.h, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("read CKA_EC_POINT: %w", err)
	}
	pub, err := parseECPoint(attrs[0].Value, spec.Algorithm)
	if err != nil {
		return nil, err
	}
	id := KeyID(pub)
	for _, h := range []pkcs11.ObjectHandle{pubH, privH} {
		if err := p11.SetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
			return nil, fmt.Errorf("set CKA_ID: %w", err)
		}
	}
	return &Key{m: m, Label: spec.Label, ID: id, Algorithm: spec.Algorithm, Public: pub,
		gen: s.gen, handle: privH, found: true}, nil
}

func (m *Module) keyGen(alg Algorithm) (mech, keyType uint, params []byte, err error) {
	switch alg {
	case SM2:
		if m.sm2 == nil {
			return 0, 0, nil, fmt.Errorf("module has no SM2 mechanism profile")
		}
		if m.sm2.CurveParams {
			params = ecParamsSM2
		}
		return m.sm2.KeyGen, m.sm2.KeyType, params, nil
	case ECDSAP256:
		return pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC, ecParamsP256, nil
	case ECDSAP384:
		return pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKK_EC, ecParamsP384, nil
	}
	return 0, 0, nil, fmt.Errorf("unsupported algorithm %v", alg)
}

// FindKey finds the one private key labelled label and its public half
// (same CKA_ID). Two private keys under one label are an error, not a pick.
func (m *Module) FindKey(ctx context.Context, label string) (*Key, error) {
	var key *Key
	err := m.do(ctx, func(s *session) error {
		privH, err := m.findPrivateKey(s, label)
		if err != nil {
			return err
		}
		p11 := m.lib.ctx
		attrs, err := p11.GetAttributeValue(s.h, privH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
		if err != nil {
			return fmt.Errorf("read CKA_ID: %w", err)
		}
		id := attrs[0].Value
		pubs, err := m.findObjects(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		})
		if err != nil {
			return err
		}
		if len(pubs) != 1 {
			return fmt.Errorf("%d public keys with the private key's CKA_ID %X (want 1)", len(pubs), id)
		}
		attrs, err = p11.GetAttributeValue(s.h, pubs[0], []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil),
		})
		if err != nil {
			return fmt.Errorf("read public key: %w", err)
		}
		alg, err := m.algorithmOf(attrs[0].Value, attrs[1].Value)
		if err != nil {
			return err
		}
		pub, err := parseECPoint(attrs[2].Value, alg)
		if err != nil {
			return err
		}
		key = &Key{m: m, Label: label, ID: id, Algorithm: alg, Public: pub, gen: s.gen, handle: privH, found: true}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find key %q: %w", label, err)
	}
	return key, nil
}

func (m *Module) findPrivateKey(s *session, label string) (pkcs11.ObjectHandle, error) {
	privs, err := m.findObjects(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	})
	if err != nil {
		return 0, err
	}
	switch len(privs) {
	case 0:
		return 0, ErrKeyNotFound
	case 1:
		return privs[0], nil
	}
	return 0, fmt.Errorf("%d private keys are labelled %q: refusing to guess", len(privs), label)
}

func (m *Module) algorithmOf(keyTypeAttr, params []byte) (Algorithm, error) {
	if len(keyTypeAttr) != 8 {
		return 0, fmt.Errorf("CKA_KEY_TYPE is %d bytes, want a CK_ULONG", len(keyTypeAttr))
	}
	keyType := uint(binary.NativeEndian.Uint64(keyTypeAttr))
	switch {
	case bytes.Equal(params, ecParamsSM2), m.sm2 != nil && keyType == m.sm2.KeyType && keyType != pkcs11.CKK_EC:
		if m.sm2 == nil {
			return 0, fmt.Errorf("SM2 key, but the module has no SM2 mechanism profile")
		}
		return SM2, nil
	case bytes.Equal(params, ecParamsP256):
		return ECDSAP256, nil
	case bytes.Equal(params, ecParamsP384):
		return ECDSAP384, nil
	}
	return 0, fmt.Errorf("unsupported key: type 0x%X, EC params %X", keyType, params)
}

// findObjects returns every object matching template.
func (m *Module) findObjects(s *session, template []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	p11 := m.lib.ctx
	if err := p11.FindObjectsInit(s.h, template); err != nil {
		return nil, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	var all []pkcs11.ObjectHandle
	for {
		batch, _, err := p11.FindObjects(s.h, 64)
		if err != nil {
			p11.FindObjectsFinal(s.h)
			return nil, fmt.Errorf("C_FindObjects: %w", err)
		}
		all = append(all, batch...)
		if len(batch) < 64 {
			break
		}
	}
	if err := p11.FindObjectsFinal(s.h); err != nil {
		return nil, fmt.Errorf("C_FindObjectsFinal: %w", err)
	}
	return all, nil
}

// privateHandle returns the private key's handle valid in s's generation,
// looking it up again after a recovery (handles die with a logout).
func (k *Key) privateHandle(s *session) (pkcs11.ObjectHandle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.found && k.gen == s.gen {
		return k.handle, nil
	}
	h, err := k.m.findPrivateKey(s, k.Label)
	if err != nil {
		return 0, err
	}
	attrs, err := k.m.lib.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
	if err != nil {
		return 0, fmt.Errorf("read CKA_ID: %w", err)
	}
	if !bytes.Equal(attrs[0].Value, k.ID) {
		return 0, fmt.Errorf("key %q now has CKA_ID %X, was %X: the key changed", k.Label, attrs[0].Value, k.ID)
	}
	k.handle, k.gen, k.found = h, s.gen, true
	return h, nil
}

// parseECPoint reads CKA_EC_POINT: DER OCTET STRING around the uncompressed
// point (PKCS#11 v2.40), or the bare point as some modules return it.
func parseECPoint(raw []byte, alg Algorithm) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch alg {
	case SM2:
		curve = sm2.P256()
	case ECDSAP256:
		curve = elliptic.P256()
	case ECDSAP384:
		curve = elliptic.P384()
	default:
		return nil, fmt.Errorf("unsupported algorithm %v", alg)
	}
	size := 1 + 2*((curve.Params().BitSize+7)/8)
	point := raw
	if len(raw) != size {
		rest, err := asn1.Unmarshal(raw, &point)
		if err != nil || len(rest) != 0 || len(point) != size {
			return nil, fmt.Errorf("CKA_EC_POINT is neither a %d-byte point nor a DER OCTET STRING of one", size)
		}
	}
	if alg == SM2 {
		pub, err := sm2.NewPublicKey(point)
		if err != nil {
			return nil, fmt.Errorf("SM2 public key: %w", err)
		}
		return pub, nil
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("%v public key: %w", alg, err)
	}
	return pub, nil
}

// KeyAttributes are the private key's protection and usage flags.
type KeyAttributes struct {
	Token, Private, Sensitive, AlwaysSensitive       bool
	Extractable, NeverExtractable, WrapWithTrusted   bool
	Local, Sign, Decrypt, Derive, Unwrap, Modifiable bool
}

// Attributes reads the private key's flags, for checks that a key is what
// a ceremony or policy expects.
func (k *Key) Attributes(ctx context.Context) (KeyAttributes, error) {
	var a KeyAttributes
	fields := []struct {
		attr uint
		dst  *bool
	}{
		{pkcs11.CKA_TOKEN, &a.Token}, {pkcs11.CKA_PRIVATE, &a.Private},
		{pkcs11.CKA_SENSITIVE, &a.Sensitive}, {pkcs11.CKA_ALWAYS_SENSITIVE, &a.AlwaysSensitive},
		{pkcs11.CKA_EXTRACTABLE, &a.Extractable}, {pkcs11.CKA_NEVER_EXTRACTABLE, &a.NeverExtractable},
		{pkcs11.CKA_WRAP_WITH_TRUSTED, &a.WrapWithTrusted}, {pkcs11.CKA_LOCAL, &a.Local},
		{pkcs11.CKA_SIGN, &a.Sign}, {pkcs11.CKA_DECRYPT, &a.Decrypt}, {pkcs11.CKA_DERIVE, &a.Derive},
		{pkcs11.CKA_UNWRAP, &a.Unwrap}, {pkcs11.CKA_MODIFIABLE, &a.Modifiable},
	}
	template := make([]*pkcs11.Attribute, len(fields))
	for i, f := range fields {
		template[i] = pkcs11.NewAttribute(f.attr, nil)
	}
	got, err := k.privateAttributes(ctx, template)
	if err != nil {
		return KeyAttributes{}, fmt.Errorf("key %q attributes: %w", k.Label, err)
	}
	for i, f := range fields {
		*f.dst = len(got[i].Value) == 1 && got[i].Value[0] != 0
	}
	return a, nil
}

// Usable checks, without signing, that the private key is still in the
// token, unchanged, reachable through a logged-in session, and allowed to
// sign. It is the health probe for a CA key, every signature of which must
// be over a certificate or a CRL.
func (k *Key) Usable(ctx context.Context) error {
	got, err := k.privateAttributes(ctx, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil)})
	if err != nil {
		return fmt.Errorf("key %q: %w", k.Label, err)
	}
	if v := got[0].Value; len(v) != 1 || v[0] == 0 {
		return fmt.Errorf("key %q may no longer sign (CKA_SIGN is false)", k.Label)
	}
	return nil
}

// privateAttributes reads template from the private key.
func (k *Key) privateAttributes(ctx context.Context, template []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	var got []*pkcs11.Attribute
	err := k.m.do(ctx, func(s *session) error {
		h, err := k.privateHandle(s)
		if err != nil {
			return err
		}
		got, err = k.m.lib.ctx.GetAttributeValue(s.h, h, template)
		if err != nil {
			return fmt.Errorf("C_GetAttributeValue: %w", err)
		}
		return nil
	})
	return got, err
}

// Object is what a listing of the token shows of one object.
type Object struct {
	Class uint // CKO_*
	Label string
}

// Objects lists every object the user sees in the token (session objects
// included), so a ceremony can record what it changed.
func (m *Module) Objects(ctx context.Context) ([]Object, error) {
	var out []Object
	err := m.do(ctx, func(s *session) error {
		handles, err := m.findObjects(s, nil)
		if err != nil {
			return err
		}
		for _, h := range handles {
			attrs, err := m.lib.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			})
			if err != nil {
				return fmt.Errorf("read object attributes: %w", err)
			}
			o := Object{Label: string(attrs[1].Value)}
			if len(attrs[0].Value) == 8 {
				o.Class = uint(binary.NativeEndian.Uint64(attrs[0].Value))
			}
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list token objects: %w", err)
	}
	return out, nil
}
