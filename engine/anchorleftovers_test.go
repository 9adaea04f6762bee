package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/hsm/hsmtest"
)

// anchorObject is one private data object under the anchor's label as
// the token holds it: the generation the hsm package puts before the
// value, and the value.
type anchorObject struct {
	gen   uint64
	value []byte
}

// tokenSession opens a read-write session on tok through a second handle
// on the module the test process already initialised (and logged in), as
// another part of the process would act on the token.
func tokenSession(t *testing.T, tok *hsmtest.Token) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	p11, slot := tok.BehindTheBack(t)
	h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p11.CloseSession(h) })
	return p11, h
}

// anchorObjects lists the private data objects under label.
func anchorObjects(t *testing.T, tok *hsmtest.Token, label string) []anchorObject {
	t.Helper()
	p11, h := tokenSession(t, tok)
	if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatal(err)
	}
	found, _, err := p11.FindObjects(h, 100)
	p11.FindObjectsFinal(h)
	if err != nil {
		t.Fatal(err)
	}
	var out []anchorObject
	for _, o := range found {
		attrs, err := p11.GetAttributeValue(h, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			t.Fatal(err)
		}
		raw := attrs[0].Value
		out = append(out, anchorObject{gen: binary.BigEndian.Uint64(raw), value: raw[8:]})
	}
	return out
}

// putAnchorObject creates a private data object under label holding o,
// behind the DataObject's back; extra attributes join the template.
func putAnchorObject(t *testing.T, tok *hsmtest.Token, label string, o anchorObject, extra ...*pkcs11.Attribute) {
	t.Helper()
	p11, h := tokenSession(t, tok)
	if _, err := p11.CreateObject(h, append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, "signerd"),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, append(binary.BigEndian.AppendUint64(nil, o.gen), o.value...)),
	}, extra...)); err != nil {
		t.Fatal(err)
	}
}

// crashMidResetAnchor is the token's anchor in a signerd that dies inside
// Reset, after it created the new generation and before it destroyed the
// older objects: the create is done on the token, and every write after
// it fails, as none happens once the process is gone. The token cannot be
// made to stop between the two steps at will.
type crashMidResetAnchor struct {
	*hsm.DataObject
	t       *testing.T
	tok     *hsmtest.Token
	crashed atomic.Bool
}

var errCrashed = errors.New("signerd died mid-Reset (injected)")

func (a *crashMidResetAnchor) Reset(_ context.Context, v []byte) error {
	if a.crashed.Swap(true) {
		return errCrashed
	}
	var newest uint64
	for _, o := range anchorObjects(a.t, a.tok, a.Label) {
		newest = max(newest, o.gen)
	}
	putAnchorObject(a.t, a.tok, a.Label, anchorObject{gen: newest + 1, value: v})
	return errCrashed
}

func (a *crashMidResetAnchor) Update(context.Context, []byte) error {
	if a.crashed.Load() {
		return errCrashed
	}
	return errors.New("update before the reset (test bug)")
}

// TestAuditAnchorStartsAfterCrashMidReset: duplicate anchors, an
// acknowledged start, and signerd dies after the Reset created the new
// anchor above the duplicates and before it destroyed them. The newest
// anchor counts: the next start needs no acknowledgement, and its write
// leaves one anchor.
func TestAuditAnchorStartsAfterCrashMidReset(t *testing.T) {
	l := newAnchorLab(t, enginetest.BoltStore)
	l.run(t, l.anchor, 1)
	objs := anchorObjects(t, l.ca.Token, l.anchor.Label)
	if len(objs) != 1 {
		t.Fatalf("%d anchor objects after a clean run, want 1", len(objs))
	}
	// A second anchor of the same generation: two signerd on the token.
	putAnchorObject(t, l.ca.Token, l.anchor.Label, anchorObject{gen: objs[0].gen, value: objs[0].value})
	if _, _, err := l.start(t, l.anchor, ""); !errors.Is(err, engine.ErrAuditBroken) || !strings.Contains(err.Error(), "two audit anchors of one generation") {
		t.Fatalf("start on duplicate anchors: %v; want ErrAuditBroken naming them", err)
	}

	crashing := &crashMidResetAnchor{DataObject: l.ca.Module.DataObject(l.anchor.Label), t: t, tok: l.ca.Token}
	e, st, err := l.start(t, crashing, "Li Na, incident 2026-40: second signerd stopped, this store kept")
	if err != nil {
		t.Fatalf("acknowledged start: %v", err)
	}
	e.Close()
	st.Close()
	if !crashing.crashed.Load() {
		t.Fatal("the acknowledged start did not reset the anchor")
	}
	if objs := anchorObjects(t, l.ca.Token, l.anchor.Label); len(objs) != 3 {
		t.Fatalf("%d anchor objects after the crash mid-Reset, want 3 (two duplicates and the new one)", len(objs))
	}

	e, st, err = l.start(t, l.anchor, "")
	if err != nil {
		t.Fatalf("start after the crash mid-Reset (no acknowledgement): %v", err)
	}
	e.Close()
	evs := events(t, st)
	st.Close()
	if objs := anchorObjects(t, l.ca.Token, l.anchor.Label); len(objs) != 1 {
		t.Fatalf("%d anchor objects after the next start, want 1 (the leftovers removed)", len(objs))
	}
	if got, last := l.anchored(t), evs[len(evs)-1].Seq; got != last {
		t.Fatalf("anchor records seal %d, want the last seal %d", got, last)
	}
}

// TestAuditAnchorUndestroyedLeftover: an older anchor object the token
// will not destroy does not make the anchor fail: each write still
// records its seal (the leftover is below it), it is logged, not audited
// as a failed anchor write, and starts go on needing nothing.
func TestAuditAnchorUndestroyedLeftover(t *testing.T) {
	l := newAnchorLab(t, enginetest.BoltStore)
	l.run(t, l.anchor, 1)
	putAnchorObject(t, l.ca.Token, l.anchor.Label, anchorObject{gen: 0, value: []byte("left by an old write")},
		pkcs11.NewAttribute(pkcs11.CKA_DESTROYABLE, false))
	for range 2 {
		sealed := l.run(t, l.anchor, 1)
		if got := l.anchored(t); got != sealed {
			t.Fatalf("anchor records seal %d, want the last seal %d", got, sealed)
		}
		if objs := anchorObjects(t, l.ca.Token, l.anchor.Label); len(objs) != 2 {
			t.Fatalf("%d anchor objects, want 2 (the anchor and the undestroyable leftover)", len(objs))
		}
	}
	for _, ev := range eventsAt(t, l.at) {
		if ev.Action == "audit.anchor" {
			t.Fatalf("event %d %s %s: %s; want no failed anchor write", ev.Seq, ev.Action, ev.Outcome, ev.Reason)
		}
	}
}
