package ocsp

import (
	"reflect"
	"testing"
)

// TestRequestRoundTrip: Request writes what ParseRequest reads back, for
// every hash and a serial with its high bit set; it refuses no CertID, an
// empty serial and a hash not ours.
func TestRequestRoundTrip(t *testing.T) {
	var ids []CertID
	for i, h := range []HashAlg{SHA1, SHA256, SM3} {
		ids = append(ids, CertID{HashAlg: h, IssuerNameHash: h.sum([]byte("name")), IssuerKeyHash: h.sum([]byte("key")),
			Serial: []byte{0x80 | byte(i), 0x01}})
	}
	der, err := Request(ids...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ids) {
		t.Fatalf("parsed %+v, want %+v", got, ids)
	}
	for name, bad := range map[string][]CertID{
		"none":         nil,
		"empty serial": {{HashAlg: SHA1, IssuerNameHash: ids[0].IssuerNameHash, IssuerKeyHash: ids[0].IssuerKeyHash}},
		"foreign hash": {{HashAlg: HashAlg(99), Serial: []byte{1}}},
	} {
		if _, err := Request(bad...); err == nil {
			t.Errorf("%s: Request succeeded", name)
		}
	}
}
