package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"signerd/engine/enginetest"
	"signerd/store"
)

// lastSeal is the sequence number of the last seal in the store file.
func lastSeal(t *testing.T, path string) uint64 {
	t.Helper()
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return lastSealIn(t, st)
}

// lastSealIn is the sequence number of the last seal in an open store.
func lastSealIn(t *testing.T, st *store.Store) uint64 {
	t.Helper()
	var seq uint64
	if err := st.View(func(tx *store.Tx) error {
		last, err := tx.LastSeal()
		if last != nil {
			seq = last.Seq
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestAuditLogCutIsRefused: signerd on a fresh token anchors its log in
// the token; with the log cut back to an earlier seal it refuses to
// start, naming the anchored seal and the store's head.
func TestAuditLogCutIsRefused(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "anchor-1", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	earlier := lastSeal(t, d.store)
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "anchor-2", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	later := lastSeal(t, d.store)
	raw, err := d.ca.Module.DataObject("signerd-audit-anchor").Read(context.Background())
	if want := fmt.Sprintf("signerd-audit-anchor-v1\n%d\n", later); err != nil || !strings.HasPrefix(string(raw), want) {
		t.Fatalf("the token's anchor: %q, %v; want it to start %q", raw, err, want)
	}

	enginetest.CutAuditLog(t, d.store, earlier)
	out, code := refusedStart(t, d)
	wantMsg := fmt.Sprintf("audit anchor records seal event %d, but the store's audit log ends at event %d", later, earlier)
	if code != 1 || !strings.Contains(out, "audit log broken") || !strings.Contains(out, wantMsg) {
		t.Fatalf("signerd on a log cut back from seal %d to seal %d: exit %d\n%s", later, earlier, code, out)
	}
}

// refusedStart runs signerd, which should refuse to start, and returns
// what it printed and its exit status. If it serves instead, the test
// fails (and signerd is stopped).
func refusedStart(t *testing.T, d *daemonProc) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(signerdBin, "--config", d.config)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case err := <-exited:
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatal(err)
			}
			return out.String(), cmd.ProcessState.ExitCode()
		default:
		}
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			t.Fatalf("signerd started and served:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAuditAnchorMadeForAnExistingLog: a deployment whose token holds no
// anchor (signerd from before anchors, or a new token) starts, anchors
// the log at its last seal, and records that in the log.
func TestAuditAnchorMadeForAnExistingLog(t *testing.T) {
	d := newDaemonProc(t, "")
	d.start(t)
	want(t, "issue", d.call(t, "POST", "/v1/certificates", issueBody(t, "existing-1", "person-sign")), 201, "")
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	sealed := lastSeal(t, d.store)
	// The token as signerd before anchors left it: no data object.
	p11 := pkcs11.New(d.ca.Token.Module)
	slots, err := p11.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	destroyed := 0
	for _, slot := range slots {
		if ti, err := p11.GetTokenInfo(slot); err != nil || ti.Label != d.ca.Token.Label {
			continue
		}
		h, err := p11.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p11.CloseSession(h)
		// The test's own module keeps the token logged in.
		if err := p11.FindObjectsInit(h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "signerd-audit-anchor")}); err != nil {
			t.Fatal(err)
		}
		objs, _, err := p11.FindObjects(h, 16)
		p11.FindObjectsFinal(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if err := p11.DestroyObject(h, o); err != nil {
				t.Fatal(err)
			}
			destroyed++
		}
	}
	if destroyed != 1 {
		t.Fatalf("destroyed %d anchor objects, want 1", destroyed)
	}

	d.start(t)
	if err := d.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, d.log)
	}
	created := d.storeEvents(t, "audit.anchor.created")
	if len(created) != 1 || created[0].Object != fmt.Sprintf("seal event %d", sealed) {
		t.Fatalf("anchor creation events %+v, want one naming seal event %d", created, sealed)
	}
	raw, err := d.ca.Module.DataObject("signerd-audit-anchor").Read(context.Background())
	if want := fmt.Sprintf("signerd-audit-anchor-v1\n%d\n", lastSeal(t, d.store)); err != nil || !strings.HasPrefix(string(raw), want) {
		t.Fatalf("the token's anchor: %q, %v; want it to start %q", raw, err, want)
	}
}
