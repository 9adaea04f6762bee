package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"signerd/store"
)

// onFreezableFS moves d's store onto an ext4 file system of its own,
// mounted from an image file through a loop device, and returns a freeze
// that suspends every write to it (fsfreeze, as a storage controller or a
// snapshot tool would) and returns the thaw. It needs root.
func onFreezableFS(t *testing.T, d *daemonProc) (freeze func(*testing.T) (thaw func())) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Fatal("a file system to freeze needs root (mount -o loop, fsfreeze)")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "fsfreeze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to freeze the store's file system (e2fsprogs, util-linux)", tool)
		}
	}
	img, fs := filepath.Join(d.dir, "storefs.img"), filepath.Join(d.dir, "storefs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"truncate", "-s", "64M", img},
		{"mkfs.ext4", "-q", "-F", img},
		{"mount", "-o", "loop,noatime", img, fs},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if err := unix.Unmount(fs, 0); err != nil {
			unix.Unmount(fs, unix.MNT_DETACH)
		}
	})
	st := filepath.Join(fs, "signerd.db")
	d.editConfig(t, "store: "+d.store+"\n", "store: {path: "+st+", write_stall_after: 1s}\n")
	d.store = st
	return func(t *testing.T) func() {
		t.Helper()
		if out, err := exec.Command("fsfreeze", "-f", fs).CombinedOutput(); err != nil {
			t.Fatalf("fsfreeze -f: %v\n%s", err, out)
		}
		var once sync.Once
		thaw := func() {
			once.Do(func() {
				if out, err := exec.Command("fsfreeze", "-u", fs).CombinedOutput(); err != nil {
					t.Errorf("fsfreeze -u: %v\n%s", err, out)
				}
			})
		}
		// Thawed before signerd is stopped (cleanups run last first),
		// and in any case within a minute: a process writing to a frozen
		// file system cannot be killed.
		t.Cleanup(thaw)
		time.AfterFunc(time.Minute, thaw)
		return thaw
	}
}

// TestStalledStoreWithholdsWatchdog freezes the file system under a
// running signerd's store, so its writes hang in the kernel as on a
// storage controller that stopped answering. Health answers at once,
// 503 store_unavailable naming the stall; signerd_store_writable is 0;
// reads are still answered; the watchdog pings stop and STATUS says why.
// Once thawed, the waiting issuance completes, health and pings return,
// and the stall is logged and audited (store.stalled).
func TestStalledStoreWithholdsWatchdog(t *testing.T) {
	d := newDaemonProc(t, "")
	freeze := onFreezableFS(t, d)
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  probe_interval: 100ms\n")
	notifyPath, notices := listenNotify(t, d.dir)
	d.env = append(d.env, "NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=400000")
	d.start(t)
	first := certView(t, d.call(t, "POST", "/v1/certificates", issueBody(t, "before", "person-sign")))

	// awaitNotice waits for a notice that match accepts, returning the
	// notices before it.
	awaitNotice := func(t *testing.T, what string, match func(string) bool) []string {
		t.Helper()
		var seen []string
		timeout := time.After(20 * time.Second)
		for {
			select {
			case n := <-notices:
				if match(n.text) {
					return seen
				}
				seen = append(seen, n.text)
			case <-timeout:
				t.Fatalf("no %s in 20s; saw %q", what, seen)
			}
		}
	}
	isPing := func(s string) bool { return strings.Contains(s, "WATCHDOG=1") }
	isStall := func(s string) bool { return strings.HasPrefix(s, "STATUS=store writes stalled") }
	health := func() reply { return d.curlAs(t, operatorUID, "-m", "10", "http://signerd/v1/health") }
	awaitNotice(t, "watchdog ping", isPing)

	thaw := freeze(t)
	issued := make(chan error, 1)
	body := issueBody(t, "during", "person-sign")
	go func() {
		r, err := d.callWithin(time.Minute, "POST", "/v1/certificates", body)
		if err == nil && r.status != 201 {
			err = fmt.Errorf("%d %s", r.status, r.body)
		}
		issued <- err
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h := health()
		if h.status == 503 {
			want(t, "health while writes stall", h, 503, "store_unavailable")
			if !strings.Contains(string(h.body), "writes stalled") {
				t.Errorf("health does not say writes stalled: %s", h.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health still %d after 20s of frozen writes: %s", h.status, h.body)
		}
	}
	if v := d.metric(t, "signerd_store_writable"); v != 0 {
		t.Errorf("signerd_store_writable = %v while writes stall", v)
	}
	r, err := d.callWithin(10*time.Second, "GET", "/v1/certificates/"+first.Serial, "")
	if err != nil || r.status != 200 {
		t.Errorf("status read while writes stall: %d %s %v", r.status, r.body, err)
	}
	// The monitor says so at each tick, and pings at none of them.
	awaitNotice(t, "stall STATUS", isStall)
	for range 3 {
		if seen := awaitNotice(t, "stall STATUS", isStall); len(seen) > 0 {
			t.Errorf("between ticks of a stall signerd sent %q", seen)
		}
	}
	select {
	case err := <-issued:
		t.Fatalf("an issuance was answered while the store's writes were frozen: %v", err)
	default:
	}

	thaw()
	if err := <-issued; err != nil {
		t.Fatalf("the issuance waiting through the stall: %v", err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if h := health(); h.status == 200 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("health still %d after the thaw: %s", h.status, h.body)
		}
	}
	awaitNotice(t, "watchdog ping after the thaw", isPing)

	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}
	for _, line := range []string{`"msg":"store writes stalled"`, `"msg":"store writes completed again"`} {
		if !strings.Contains(d.log.String(), line) {
			t.Errorf("signerd's log has no %s:\n%s", line, d.log)
		}
	}
	stalls := d.storeEvents(t, "store.stalled")
	if len(stalls) == 0 {
		t.Fatal("no store.stalled event")
	}
	for _, ev := range stalls {
		t.Logf("audited %s: %s; %s", ev.Action, ev.Reason, ev.Detail)
		if ev.Outcome != store.OutcomeFailed || ev.Actor.Role != "system" || !strings.HasPrefix(ev.Reason, "no store write completed for ") {
			t.Errorf("store.stalled event %+v", ev)
		}
	}
}
