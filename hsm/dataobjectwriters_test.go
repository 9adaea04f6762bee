package hsm_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// TestDataObjectOtherWriters: an Update does not write over a generation
// it did not read or write (another process wrote the object meanwhile);
// two objects of one generation fail Read and Update with
// ErrDuplicateGeneration, and Reset replaces them with one above both.
func TestDataObjectOtherWriters(t *testing.T) {
	tok := hsmtest.NewToken(t, hsmtest.SM2Module(t), "writers")
	m := tok.Open(t, tok.Config(hsmtest.SoftHSMProfile(t)))
	ctx := context.Background()
	mine, theirs := m.DataObject("anchor"), m.DataObject("anchor")
	if err := mine.Create(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := theirs.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if err := theirs.Update(ctx, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := mine.Update(ctx, []byte("three")); !errors.Is(err, hsm.ErrWrittenElsewhere) {
		t.Fatalf("update over another writer's generation: %v; want ErrWrittenElsewhere", err)
	}
	if v, err := theirs.Read(ctx); err != nil || string(v) != "two" {
		t.Fatalf("after the refused update: %q, %v; want two", v, err)
	}

	// A second object of generation 2, as two processes writing at once
	// leave it.
	tok.PutDataObject(t, "anchor", true, append(binary.BigEndian.AppendUint64(nil, 2), "twin"...))
	if _, err := theirs.Read(ctx); !errors.Is(err, hsm.ErrDuplicateGeneration) {
		t.Fatalf("read with two objects of generation 2: %v; want ErrDuplicateGeneration", err)
	}
	if err := theirs.Update(ctx, []byte("x")); !errors.Is(err, hsm.ErrDuplicateGeneration) {
		t.Fatalf("update with two objects of generation 2: %v; want ErrDuplicateGeneration", err)
	}
	if err := mine.Reset(ctx, []byte("four")); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if v, err := m.DataObject("anchor").Read(ctx); err != nil || string(v) != "four" {
		t.Fatalf("after reset: %q, %v; want four", v, err)
	}
	if err := mine.Update(ctx, []byte("five")); err != nil {
		t.Fatalf("update after reset: %v", err)
	}
}
