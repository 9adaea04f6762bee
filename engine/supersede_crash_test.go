package engine_test

import (
	"context"
	"os"
	"testing"
	"time"

	"signerd/api"
	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/store"
)

// TestCrashWhileReplacing kills an engine (a child process) while an
// extension is between its two transactions, then restarts on the same
// store: the claim on the old certificate was durable while the extension
// was signing, the restart burns the extension's serial and releases the
// claim, and another request can then extend the certificate, once. It
// runs on each store engine.
func TestCrashWhileReplacing(t *testing.T) {
	for _, se := range enginetest.Stores {
		for _, point := range []string{"reserved", "signed"} {
			t.Run(se.Name+"/"+point, func(t *testing.T) {
				ca := enginetest.NewCA(t)
				dir := t.TempDir()
				ca.Save(t, dir)
				at := se.New(t)
				runCrashChild(t, "TestReplaceCrashChild", at, "SIGNERD_REPLACE_CRASH_CHILD="+dir, "SIGNERD_CRASH_POINT="+point)
				st := at.Open(t)
				var orig *store.Certificate
				st.View(func(tx *store.Tx) error {
					return tx.Certificates(func(c *store.Certificate) error {
						if c.RequestID == "orig" {
							orig = c
						}
						return nil
					})
				})
				if orig == nil || orig.Status != store.StatusGood || orig.Superseding != "ext-1" {
					t.Fatalf("certificate being extended when the engine died: %+v, want good and claimed by ext-1", orig)
				}

				e := ca.Engine(t, st, engine.Config{})
				if rec, err := e.Status(orig.Serial); err != nil || rec.Superseding != "" || rec.Status != store.StatusGood {
					t.Fatalf("after restart: %+v, %v; want good and unclaimed", rec, err)
				}
				if _, err := e.Extend(context.Background(), ra, "ext-2", orig.Serial, 30); err != nil {
					t.Fatalf("extend after the interrupted one was burned: %v", err)
				}
				if _, err := e.Extend(context.Background(), ra, "ext-1", orig.Serial, 30); engine.CodeOf(err) != api.CodeAlreadySuperseded {
					t.Fatalf("retry of the interrupted extension after another replaced the certificate: %v, want %s", err, api.CodeAlreadySuperseded)
				}
				checkLines(t, st)
			})
		}
	}
}

// TestReplaceCrashChild is the engine TestCrashWhileReplacing kills.
func TestReplaceCrashChild(t *testing.T) {
	dir := os.Getenv("SIGNERD_REPLACE_CRASH_CHILD")
	if dir == "" {
		t.Skip("runs only as TestCrashWhileReplacing's child process")
	}
	e := crashChildEngine(t, dir)
	orig := issue(t, e, request(t, "orig"))
	armCrashHook()
	e.Extend(context.Background(), ra, "ext-1", orig.Serial, 30)
	time.Sleep(10 * time.Second)
	t.Fatal("the crash hook never ran")
}
