package engine_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"signerd/audit"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/hsm"
	"signerd/issuance"
	"signerd/store"
)

// auditKey generates the audit key in the CA's token.
func auditKey(t *testing.T, ca *enginetest.CA) *hsm.SM2Signer {
	t.Helper()
	k, err := ca.Module.GenerateKey(context.Background(), hsm.KeySpec{Label: "audit-2026", Algorithm: hsm.SM2})
	if err != nil {
		t.Fatal(err)
	}
	s, err := k.SM2Signer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// events reads the whole audit log.
func events(t *testing.T, st *store.Store) []store.Event {
	t.Helper()
	var out []store.Event
	if err := st.View(func(tx *store.Tx) error {
		return tx.Events(1, func(e store.Event, _ []byte) error { out = append(out, e); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditSeals runs on each store engine.
func TestAuditSeals(t *testing.T) { onEachStore(t, testAuditSeals) }

func testAuditSeals(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	key := auditKey(t, ca)
	at := se.New(t)
	st := at.Open(t)
	e := ca.Engine(t, st, engine.Config{AuditKey: key, SealEvery: 3, SealInterval: time.Hour})
	for i := range 4 {
		issue(t, e, request(t, fmt.Sprintf("seal-%d", i)))
	}
	// The sealer notices three or more unsealed events within a tick.
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := events(t, st)
		if evs[len(evs)-1].Action == "audit.seal" || evs[len(evs)-2].Action == "audit.seal" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no seal after 4 events with SealEvery 3")
		}
		time.Sleep(50 * time.Millisecond)
	}
	issue(t, e, request(t, "after-seal"))
	e.Close() // seals what is left
	evs := events(t, st)
	last := evs[len(evs)-1]
	if last.Action != "audit.seal" || last.Reason != "shutdown" {
		t.Fatalf("last event %+v, want the shutdown seal", last)
	}
	pub := key.Public().(*ecdsa.PublicKey)
	seals := 0
	for _, ev := range evs {
		if ev.Seal == nil {
			continue
		}
		seals++
		if err := store.VerifySeal(pub, ev); err != nil {
			t.Fatal(err)
		}
		if string(ev.Seal.KeyID) != string(hsm.KeyID(pub)) {
			t.Fatal("seal names another key")
		}
	}
	if seals < 2 {
		t.Fatalf("%d seals", seals)
	}
	st.Close()

	// A clean log starts; one edited after its last seal, or whose last
	// seal is forged, does not, unless the break is acknowledged.
	start := func(ack string) error {
		t.Helper()
		st := at.Open(t)
		defer st.Close()
		e, err := engine.New(engine.Config{Store: st, Issuers: []*issuance.Issuer{ca.Issuer}, Random: ca.Module.Random(),
			AuditKey: key, AcknowledgeAuditBreak: ack})
		if err == nil {
			e.Close()
		}
		return err
	}
	if err := start(""); err != nil {
		t.Fatalf("clean log: %v", err)
	}
	evs = eventsAt(t, at)
	lastSeal := evs[len(evs)-1].Seq
	var original []byte
	at.EditAuditEvent(t, lastSeal, func(v []byte) []byte {
		original = append([]byte(nil), v...)
		return []byte(strings.Replace(string(v), `"reason":"shutdown"`, `"reason":"shutdowN"`, 1))
	})
	err := start("")
	if !errors.Is(err, engine.ErrAuditBroken) || !strings.Contains(err.Error(), fmt.Sprintf("audit event %d: stored bytes differ", lastSeal)) {
		t.Fatalf("start on an edited seal: %v", err)
	}
	at.EditAuditEvent(t, lastSeal, func([]byte) []byte { return original })
	if err := start(""); err != nil {
		t.Fatalf("log put back: %v", err)
	}
	at.EditAuditEvent(t, lastSeal, func(v []byte) []byte {
		var ev store.Event
		if err := json.Unmarshal(v, &ev); err != nil {
			t.Fatal(err)
		}
		ev.Seal.Signature[len(ev.Seal.Signature)-2] ^= 1
		out, _ := json.Marshal(ev)
		return out
	})
	err = start("")
	if !errors.Is(err, engine.ErrAuditBroken) || !strings.Contains(err.Error(), "seal signature does not verify") {
		t.Fatalf("start on a forged seal: %v", err)
	}
	if err := start("ticket CA-17: restored from backup, checked by Li Na"); err != nil {
		t.Fatalf("acknowledged start: %v", err)
	}
	evs = eventsAt(t, at)
	var ack *store.Event
	for i := range evs {
		if evs[i].Action == "audit.break.acknowledged" {
			ack = &evs[i]
		}
	}
	if ack == nil || !strings.Contains(ack.Detail, "ticket CA-17") || !strings.Contains(ack.Reason, "seal signature") {
		t.Fatalf("acknowledgement event: %+v", ack)
	}
	if evs[ack.Seq].Action != "audit.seal" {
		t.Fatalf("event after the acknowledgement: %+v, want a seal", evs[ack.Seq])
	}
	// Now the log starts clean again.
	if err := start(""); err != nil {
		t.Fatalf("after acknowledgement: %v", err)
	}
}

// eventsAt reads the audit log of the store at, which must be closed.
func eventsAt(t *testing.T, at *enginetest.StoreAt) []store.Event {
	t.Helper()
	st := at.Open(t)
	defer st.Close()
	return events(t, st)
}

// failingKey is the real audit key with signing made to fail on demand:
// an HSM that cannot seal is a fault the token will not produce at will.
type failingKey struct {
	*hsm.SM2Signer
	fail atomic.Bool
}

func (k *failingKey) SignDigest(ctx context.Context, e []byte) ([]byte, error) {
	if k.fail.Load() {
		return nil, fmt.Errorf("%w: device error (injected)", hsm.ErrTransient)
	}
	return k.SM2Signer.SignDigest(ctx, e)
}

func TestFailedSealIsAuditedOnce(t *testing.T) { onEachStore(t, testFailedSealIsAuditedOnce) }

func testFailedSealIsAuditedOnce(t *testing.T, se enginetest.StoreEngine) {
	ca := enginetest.NewCA(t)
	st := se.Open(t)
	key := &failingKey{SM2Signer: auditKey(t, ca)}
	e := ca.Engine(t, st, engine.Config{AuditKey: key, SealEvery: 1000, SealInterval: 20 * time.Millisecond})
	key.fail.Store(true)
	issue(t, e, request(t, "while-failing"))
	time.Sleep(300 * time.Millisecond) // many sealer ticks, all failing
	key.fail.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := events(t, st)
		if last := evs[len(evs)-1]; last.Action == "audit.seal" && last.Outcome == store.OutcomeOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no seal once the HSM signs again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var failed []store.Event
	for _, ev := range events(t, st) {
		if ev.Action == "audit.seal" && ev.Outcome == store.OutcomeFailed {
			failed = append(failed, ev)
		}
	}
	if len(failed) != 1 || !strings.Contains(failed[0].Reason, "injected") || failed[0].Seal != nil {
		t.Fatalf("failed seals recorded: %+v, want one", failed)
	}
	// The failure is part of a log that verifies.
	var buf bytes.Buffer
	if _, err := e.ExportAudit(context.Background(), auditor, time.Time{}, time.Time{}, &buf); err != nil {
		t.Fatal(err)
	}
	if rep := audit.Verify(buf.Bytes(), audit.Options{Root: ca.Root}); !rep.OK() {
		t.Fatalf("log with a failed seal: %v", rep.Problems)
	}
}
