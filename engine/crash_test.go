package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/engine"
	"signerd/engine/enginetest"
	"signerd/issuance"
	"signerd/store"
)

// TestCrashBetweenBatchTransactions kills a signerd engine (a child
// process) right after a batch's first transaction, and right after the
// HSM signed but before the second, then restarts on the same store: the
// interrupted serials are burned, nothing signed is left unrecorded as
// issued, the RA's retries succeed, and no serial is used twice. It runs
// on each store engine.
func TestCrashBetweenBatchTransactions(t *testing.T) {
	for _, se := range enginetest.Stores {
		for _, point := range []string{"reserved", "signed"} {
			t.Run(se.Name+"/"+point, func(t *testing.T) {
				testCrashBetweenBatchTransactions(t, se, point)
			})
		}
	}
}

func testCrashBetweenBatchTransactions(t *testing.T, se enginetest.StoreEngine, point string) {
	ca := enginetest.NewCA(t)
	dir := t.TempDir()
	ca.Save(t, dir)
	at := se.New(t)
	reqs := make([]engine.Request, 8)
	for i := range reqs {
		reqs[i] = request(t, fmt.Sprintf("crash-%d", i))
	}
	raw, _ := json.Marshal(reqs)
	if err := os.WriteFile(filepath.Join(dir, "requests.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	runCrashChild(t, "TestCrashChild", at, "SIGNERD_CRASH_CHILD="+dir, "SIGNERD_CRASH_POINT="+point)

	st := at.Open(t)
	var interrupted []*store.Request
	if err := st.View(func(tx *store.Tx) error {
		var err error
		if interrupted, err = tx.InFlight(); err != nil {
			return err
		}
		n := 0
		if err := tx.Certificates(func(*store.Certificate) error { n++; return nil }); err != nil {
			return err
		}
		if n != 0 {
			t.Errorf("%d certificates recorded by a batch that never finished", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(interrupted) == 0 {
		t.Fatal("the crash left no request in flight")
	}

	e := ca.Engine(t, st, engine.Config{})
	burned := map[string]bool{}
	if err := st.View(func(tx *store.Tx) error {
		for _, r := range interrupted {
			s, err := tx.Serial(r.Serial)
			if err != nil || s.State != store.SerialBurned {
				t.Errorf("serial %x of interrupted %s: %+v, %v", r.Serial, r.ID, s, err)
			}
			burned[string(r.Serial)] = true
		}
		left, err := tx.InFlight()
		if len(left) != 0 {
			t.Errorf("%d requests still in flight after recovery", len(left))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		c := issue(t, e, req)
		if burned[string(c.Serial)] {
			t.Fatalf("retry of %s reused burned serial %x", req.ID, c.Serial)
		}
		verifyChainGMSM(t, ca, c.DER)
	}
	if err := st.View(func(tx *store.Tx) error { return tx.VerifyAuditChain() }); err != nil {
		t.Error(err)
	}
}

func verifyChainGMSM(t *testing.T, ca *enginetest.CA, der []byte) {
	t.Helper()
	c, err := smx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
}

// TestCrashChild is the engine TestCrashBetweenBatchTransactions kills.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("SIGNERD_CRASH_CHILD")
	if dir == "" {
		t.Skip("runs only as TestCrashBetweenBatchTransactions' child process")
	}
	armCrashHook()
	e := crashChildEngine(t, dir)
	raw, err := os.ReadFile(filepath.Join(dir, "requests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var reqs []engine.Request
	if err := json.Unmarshal(raw, &reqs); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() { e.Issue(context.Background(), ra, req) })
	}
	wg.Wait()
	time.Sleep(10 * time.Second)
	t.Fatal("the crash hook never ran")
}

// runCrashChild runs the test named child in a new process of this test
// binary, on the store at, with env added to its environment, and fails
// unless the child was killed by a signal (its crash hook) rather than
// ending on its own.
func runCrashChild(t *testing.T, child string, at *enginetest.StoreAt, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.v")
	cmd.Env = append(os.Environ(), append(env, "SIGNERD_CRASH_STORE="+at.String())...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("child was not killed: %v\n%s", err, out)
	}
}

// crashChildEngine is the engine a crash child runs: the CA its parent
// saved in dir, on the store SIGNERD_CRASH_STORE names. The child exits by
// being killed, so nothing is closed.
func crashChildEngine(t *testing.T, dir string) *engine.Engine {
	t.Helper()
	m, iss, err := enginetest.LoadIssuer(filepath.Join(dir, "ca.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	st, err := enginetest.OpenStoreAt(os.Getenv("SIGNERD_CRASH_STORE"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Store: st, Issuers: []*issuance.Issuer{iss}, Random: m.Random()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// armCrashHook makes this process kill itself at the point
// SIGNERD_CRASH_POINT names: "reserved", after a batch's first
// transaction, or otherwise after the HSM signed, before the second.
func armCrashHook() {
	kill := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	if os.Getenv("SIGNERD_CRASH_POINT") == "reserved" {
		engine.SetCrashHooks(kill, nil)
	} else {
		engine.SetCrashHooks(nil, kill)
	}
}
