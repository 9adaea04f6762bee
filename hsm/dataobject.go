package hsm

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// ErrObjectNotFound: no private data object with that label.
var ErrObjectNotFound = errors.New("data object not found")

// ErrDuplicateGeneration: two private data objects under the label carry
// the newest generation. One process never makes that (writes through a
// Module are serialised), so two processes wrote the object at once, or
// the token was restored beside a copy. Reset gets past it. Duplicates
// below the newest generation are not this: they are leftovers of a write
// interrupted between its create and its destroys (a Reset over
// duplicates), which the newest object supersedes.
var ErrDuplicateGeneration = errors.New("two data objects of one generation")

// ErrOlderObjectsLeft: the write itself succeeded (Read returns the new
// value), but an older object under the label could not be destroyed.
// It is harmless, being below the new generation; the next write tries
// again to remove it.
var ErrOlderObjectsLeft = errors.New("value written, but older data objects under the label could not be destroyed")

// ErrWrittenElsewhere: the object's newest generation is not the one
// this DataObject last read or wrote, so something else (another process
// on the token) wrote it meanwhile. Update refuses rather than write over
// it.
var ErrWrittenElsewhere = errors.New("data object written by another process")

// DataObject is a value kept in the token as a private data object
// (CKO_DATA, CKA_TOKEN and CKA_PRIVATE true): only a session logged in
// with the user PIN reads, writes or deletes it, so whoever can rewrite
// the files beside signerd cannot. What the value means is the caller's
// business.
//
// Only private objects are ever looked at: anyone who can open a session
// may create a public object, and one under the same label must not pass
// for this one.
type DataObject struct {
	m     *Module
	Label string
	// seen is the generation this DataObject last read or wrote (0:
	// none yet), so Update notices another writer.
	seen atomic.Uint64
}

// dataApplication is CKA_APPLICATION of the data objects signerd makes,
// so a listing of the token says whose they are.
const dataApplication = "signerd"

// DataObject names the private data object labelled label. Nothing is
// read or written until its methods are called.
func (m *Module) DataObject(label string) *DataObject {
	return &DataObject{m: m, Label: label}
}

// A value is never changed in place: PKCS#11 does not say CKA_VALUE of
// a data object may be modified, and SoftHSM2 refuses it. Each write
// creates a new object whose value starts with a generation number one
// above the newest, then destroys the older ones. A crash between the two
// (or a destroy that fails) leaves older objects, duplicates of one
// generation included after a Reset; the newest is the value, and the
// next write removes the rest. Only two objects of the newest generation
// are refused. C_CreateObject is atomic, so a reader sees the old value or
// the new one, never a mix.

// generationSize is the length of the big-endian generation number that
// starts every stored value.
const generationSize = 8

// version is one object under the label: its handle, generation and the
// caller's value.
type version struct {
	h     pkcs11.ObjectHandle
	gen   uint64
	value []byte
}

// Read returns the object's value, ErrObjectNotFound if there is none.
func (d *DataObject) Read(ctx context.Context) ([]byte, error) {
	var value []byte
	err := d.m.do(ctx, func(s *session) error {
		vs, err := d.versions(s)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return ErrObjectNotFound
		}
		value = vs[len(vs)-1].value
		d.seen.Store(vs[len(vs)-1].gen)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("data object %q: %w", d.Label, err)
	}
	return value, nil
}

// Create makes the object with value. It refuses if a private data
// object with the label exists, so one is never shadowed by another.
func (d *DataObject) Create(ctx context.Context, value []byte) error {
	d.m.dataMu.Lock()
	defer d.m.dataMu.Unlock()
	err := d.m.do(ctx, func(s *session) error {
		vs, err := d.versions(s)
		if err != nil {
			return err
		}
		if len(vs) > 0 {
			return errors.New("a private data object with this label exists")
		}
		if err := d.create(s, 1, value); err != nil {
			return err
		}
		d.seen.Store(1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("create data object %q: %w", d.Label, err)
	}
	return nil
}

// Update replaces the object's value: ErrObjectNotFound if there is
// none. Writes through one Module are serialised; two processes must not
// write one object, and Update refuses (ErrWrittenElsewhere) once the
// newest generation is not the one this DataObject last read or wrote.
// Once it returns nil or ErrOlderObjectsLeft, Read returns value; with
// ErrOlderObjectsLeft some older objects remain, and the next write tries
// again to destroy them.
func (d *DataObject) Update(ctx context.Context, value []byte) error {
	return d.replace(ctx, value, false)
}

// Reset replaces whatever objects the label holds, duplicates of one
// generation and another writer's included, with one holding value, of
// a generation above all of them. It is for an operator's acknowledged
// recovery, never for an ordinary write. It may return
// ErrOlderObjectsLeft as Update does.
func (d *DataObject) Reset(ctx context.Context, value []byte) error {
	return d.replace(ctx, value, true)
}

func (d *DataObject) replace(ctx context.Context, value []byte, reset bool) error {
	d.m.dataMu.Lock()
	defer d.m.dataMu.Unlock()
	err := d.m.do(ctx, func(s *session) error {
		vs, err := d.versions(s)
		if reset && errors.Is(err, ErrDuplicateGeneration) {
			err = nil
		}
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return ErrObjectNotFound
		}
		newest := vs[len(vs)-1].gen
		if seen := d.seen.Load(); !reset && seen != 0 && newest != seen {
			return fmt.Errorf("%w: its newest generation is %d, and this process last wrote or read %d", ErrWrittenElsewhere, newest, seen)
		}
		if err := d.create(s, newest+1, value); err != nil {
			return err
		}
		d.seen.Store(newest + 1)
		// The new object is the value now, whatever happens to the
		// older ones; one that stays is below it and harmless, but is
		// reported, not ignored.
		var left []error
		for _, v := range vs {
			if err := d.m.lib.ctx.DestroyObject(s.h, v.h); err != nil {
				left = append(left, fmt.Errorf("C_DestroyObject (generation %d): %w", v.gen, err))
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%w: generation %d written; %d of %d older objects left: %w",
				ErrOlderObjectsLeft, newest+1, len(left), len(vs), errors.Join(left...))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update data object %q: %w", d.Label, err)
	}
	return nil
}

func (d *DataObject) create(s *session, gen uint64, value []byte) error {
	stored := binary.BigEndian.AppendUint64(make([]byte, 0, generationSize+len(value)), gen)
	_, err := d.m.lib.ctx.CreateObject(s.h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, d.Label),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, dataApplication),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, append(stored, value...)),
	})
	if err != nil {
		return fmt.Errorf("C_CreateObject: %w", err)
	}
	return nil
}

// versions returns every private token data object under the label,
// oldest generation first. Two of the newest generation are an error, not
// a pick (ErrDuplicateGeneration, returned with every version found).
// Older objects, duplicated or not, are what an interrupted write left
// behind: the newest supersedes them, and the next write destroys them.
func (d *DataObject) versions(s *session) ([]version, error) {
	p11 := d.m.lib.ctx
	found, err := d.m.findObjects(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, d.Label),
	})
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		// A session that lost its login sees no private object at all:
		// that is a lost login to restore, not an absent object.
		info, err := p11.GetSessionInfo(s.h)
		if err != nil {
			return nil, fmt.Errorf("C_GetSessionInfo: %w", err)
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return nil, fmt.Errorf("session not logged in: %w", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN))
		}
		return nil, nil
	}
	vs := make([]version, 0, len(found))
	for _, h := range found {
		attrs, err := p11.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, fmt.Errorf("read CKA_VALUE: %w", err)
		}
		raw := attrs[0].Value
		if len(raw) < generationSize {
			return nil, fmt.Errorf("a private data object under the label holds %d bytes: not one signerd wrote", len(raw))
		}
		vs = append(vs, version{h: h, gen: binary.BigEndian.Uint64(raw), value: raw[generationSize:]})
	}
	slices.SortFunc(vs, func(a, b version) int { return cmp.Compare(a.gen, b.gen) })
	if n := len(vs); n > 1 && vs[n-1].gen == vs[n-2].gen {
		return vs, fmt.Errorf("%w: two private data objects under the label have the newest generation, %d: refusing to guess", ErrDuplicateGeneration, vs[n-1].gen)
	}
	return vs, nil
}
