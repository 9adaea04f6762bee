package hsm_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// storedObject is one private data object under a label as the token
// holds it: its generation and the caller's value.
type storedObject struct {
	gen   uint64
	value string
}

// putDataObject creates a private data object under label holding gen and
// value behind the DataObject's back, as an interrupted write or another
// process leaves one; extra attributes are added to the template.
func putDataObject(t *testing.T, tok *hsmtest.Token, label string, o storedObject, extra ...*pkcs11.Attribute) {
	t.Helper()
	tok.PutDataObject(t, label, true, append(binary.BigEndian.AppendUint64(nil, o.gen), o.value...), extra...)
}

// countDataObjects is how many private data objects the token holds under
// label.
func countDataObjects(t *testing.T, tok *hsmtest.Token, label string) int {
	t.Helper()
	p11, slot := tok.BehindTheBack(t)
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p11.CloseSession(h)
	if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatal(err)
	}
	defer p11.FindObjectsFinal(h)
	found, _, err := p11.FindObjects(h, 100)
	if err != nil {
		t.Fatal(err)
	}
	return len(found)
}

// TestDataObjectLeftoversOfAnInterruptedWrite: a write creates the new
// generation, then destroys the older objects. A crash in between leaves
// them; after a Reset over duplicates that is two objects of an older
// generation beneath the new one. The newest counts, and the next Update
// removes the rest. Only duplicates of the newest generation are refused.
func TestDataObjectLeftoversOfAnInterruptedWrite(t *testing.T) {
	tests := []struct {
		name string
		left []storedObject // beside generation 1, "one", made by Create
		want string         // Read's value; "" for ErrDuplicateGeneration
	}{
		{"crash mid-Update", []storedObject{{2, "two"}}, "two"},
		{"crash mid-Reset over duplicates", []storedObject{{1, "twin"}, {2, "acknowledged"}}, "acknowledged"},
		{"crash mid-Update after a crash mid-Reset", []storedObject{{1, "twin"}, {2, "acknowledged"}, {3, "three"}}, "three"},
		{"duplicates of the newest generation", []storedObject{{2, "two"}, {2, "twin"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "leftovers")
			m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
			ctx := context.Background()
			if err := m.DataObject("anchor").Create(ctx, []byte("one")); err != nil {
				t.Fatal(err)
			}
			for _, o := range tt.left {
				putDataObject(t, tok, "anchor", o)
			}
			// A new process: it has read or written nothing yet.
			obj := m.DataObject("anchor")
			v, err := obj.Read(ctx)
			if tt.want == "" {
				if !errors.Is(err, hsm.ErrDuplicateGeneration) {
					t.Fatalf("read: %q, %v; want ErrDuplicateGeneration", v, err)
				}
				if err := obj.Update(ctx, []byte("next")); !errors.Is(err, hsm.ErrDuplicateGeneration) {
					t.Fatalf("update: %v; want ErrDuplicateGeneration", err)
				}
				return
			}
			if err != nil || string(v) != tt.want {
				t.Fatalf("read: %q, %v; want %q (the newest counts)", v, err, tt.want)
			}
			if err := obj.Update(ctx, []byte("next")); err != nil {
				t.Fatalf("update: %v", err)
			}
			if v, err := m.DataObject("anchor").Read(ctx); err != nil || string(v) != "next" {
				t.Fatalf("read after the update: %q, %v; want next", v, err)
			}
			if n := countDataObjects(t, tok, "anchor"); n != 1 {
				t.Fatalf("%d objects under the label after the update, want 1 (the leftovers removed)", n)
			}
		})
	}
}

// TestDataObjectUndestroyedLeftoverReported: an older object the token
// will not destroy (CKA_DESTROYABLE false) does not stop the write, but
// Update reports it (ErrOlderObjectsLeft) rather than ignoring it; the
// new value is read back, and the next write tries again.
func TestDataObjectUndestroyedLeftoverReported(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "undestroyed")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	obj := m.DataObject("anchor")
	if err := obj.Create(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	putDataObject(t, tok, "anchor", storedObject{0, "stuck"}, pkcs11.NewAttribute(pkcs11.CKA_DESTROYABLE, false))
	for _, value := range []string{"two", "three"} {
		err := obj.Update(ctx, []byte(value))
		if !errors.Is(err, hsm.ErrOlderObjectsLeft) {
			t.Fatalf("update to %s with an undestroyable older object: %v; want ErrOlderObjectsLeft", value, err)
		}
		t.Logf("update to %s: %v", value, err)
		if v, err := m.DataObject("anchor").Read(ctx); err != nil || string(v) != value {
			t.Fatalf("read after the update: %q, %v; want %s", v, err, value)
		}
		if n := countDataObjects(t, tok, "anchor"); n != 2 {
			t.Fatalf("%d objects under the label, want 2 (the new one and the undestroyable one)", n)
		}
	}
}
