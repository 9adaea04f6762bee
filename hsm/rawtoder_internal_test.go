package hsm

import (
	"bytes"
	"encoding/asn1"
	"math/big"
	"testing"
)

// rawToDER writes the DER encoding/asn1 writes for SEQUENCE{r, s}: r and
// s with their top bit set (a leading zero octet), with leading zero
// octets of their own (shorter INTEGERs), and both at once; and refuses
// a zero r or s and a wrong length.
func TestRawToDERAsEncodingASN1(t *testing.T) {
	const size = 32
	fill := func(first byte, rest byte) []byte {
		b := bytes.Repeat([]byte{rest}, size)
		b[0] = first
		return b
	}
	halves := [][]byte{fill(0x80, 0x01), fill(0x7f, 0xff), fill(0x00, 0x00), fill(0x00, 0x80), fill(0x01, 0x00),
		append(make([]byte, size-1), 1), append(make([]byte, size-1), 0x80)}
	halves[2][size-1] = 0x42 // a single octet after leading zeros
	for _, r := range halves {
		for _, s := range halves {
			raw := append(bytes.Clone(r), s...)
			got, err := rawToDER(raw, size)
			if err != nil {
				t.Fatal(err)
			}
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("rawToDER(%x) = %x, encoding/asn1 writes %x", raw, got, want)
			}
		}
	}
	for name, raw := range map[string][]byte{
		"r zero": append(make([]byte, size), fill(1, 1)...), "s zero": append(fill(1, 1), make([]byte, size)...),
		"short": fill(1, 1),
	} {
		if _, err := rawToDER(raw, size); err == nil {
			t.Errorf("%s: rawToDER took it", name)
		}
	}
}
