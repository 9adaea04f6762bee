package hsm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// TestDataObject: a private data object is created once, read and
// updated, survives the module being closed and opened again, and is not
// confused with a public object under its label or with an absent one
// when the login is lost.
func TestDataObject(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "data")
	cfg := tok.Config(hsmtest.SoftHSMProfile(t))
	m := tok.Open(t, cfg)
	ctx := context.Background()
	obj := m.DataObject("anchor")

	if v, err := obj.Read(ctx); !errors.Is(err, hsm.ErrObjectNotFound) {
		t.Fatalf("read before create: %q, %v; want ErrObjectNotFound", v, err)
	}
	if err := obj.Update(ctx, []byte("x")); !errors.Is(err, hsm.ErrObjectNotFound) {
		t.Fatalf("update before create: %v; want ErrObjectNotFound", err)
	}
	// Anyone who can open a session may make a public object; it must
	// not pass for the private one.
	tok.PutDataObject(t, "anchor", false, []byte("planted"))
	if v, err := obj.Read(ctx); !errors.Is(err, hsm.ErrObjectNotFound) {
		t.Fatalf("read with only a public object under the label: %q, %v; want ErrObjectNotFound", v, err)
	}

	if err := obj.Create(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := obj.Create(ctx, []byte("two")); err == nil {
		t.Fatal("a second private object under the label was created")
	}
	if err := obj.Update(ctx, []byte("three")); err != nil {
		t.Fatal(err)
	}
	if v, err := obj.Read(ctx); err != nil || string(v) != "three" {
		t.Fatalf("read after update: %q, %v", v, err)
	}
	// An update that stopped after creating its object (generation 3)
	// and before destroying the older one: the newer value holds, and the
	// next update leaves one object.
	tok.PutDataObject(t, "anchor", true, append([]byte{0, 0, 0, 0, 0, 0, 0, 3}, "interrupted"...))
	if v, err := obj.Read(ctx); err != nil || string(v) != "interrupted" {
		t.Fatalf("read after an interrupted update: %q, %v; want the newer value", v, err)
	}
	if err := obj.Update(ctx, []byte("three")); err != nil {
		t.Fatal(err)
	}

	// Logged out behind the module's back, a search for private objects
	// finds none: that is a lost login, restored, not an absent object.
	p11, slot := tok.BehindTheBack(t)
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p11.Logout(h); err != nil {
		t.Fatal(err)
	}
	p11.CloseSession(h)
	if v, err := obj.Read(ctx); !errors.Is(err, hsm.ErrTransient) {
		t.Fatalf("read while logged out: %q, %v; want ErrTransient", v, err)
	}
	if v, err := obj.Read(ctx); err != nil || string(v) != "three" {
		t.Fatalf("read after the login is restored: %q, %v", v, err)
	}

	// A token object: it is there for the next process, and private.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := tok.Open(t, cfg)
	if v, err := m2.DataObject("anchor").Read(ctx); err != nil || string(v) != "three" {
		t.Fatalf("read after reopening: %q, %v", v, err)
	}
	var kinds []string
	objs, err := m2.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Label == "anchor" && o.Class == pkcs11.CKO_DATA {
			kinds = append(kinds, "data")
		}
	}
	if len(kinds) != 2 { // ours and the planted public one
		t.Fatalf("data objects labelled anchor: %d, want 2", len(kinds))
	}
}

// TestDataObjectConcurrentUpdates: updates at once, through handles of
// their own, each make a generation of its own; the object ends as one,
// holding one of the values written.
func TestDataObjectConcurrentUpdates(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "data")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	if err := m.DataObject("value").Create(ctx, []byte("0")); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error)
	for i := range 8 {
		go func() { errs <- m.DataObject("value").Update(ctx, []byte{'1' + byte(i)}) }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	v, err := m.DataObject("value").Read(ctx)
	if err != nil || len(v) != 1 || v[0] < '1' || v[0] > '8' {
		t.Fatalf("after concurrent updates: %q, %v", v, err)
	}
	objs, err := m.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 {
		t.Fatalf("%d objects in the token, want 1", len(objs))
	}
}
