package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"signerd/hsm/hsmtest"
	"signerd/store"
)

// notice is one sd_notify datagram and when it came.
type notice struct {
	at   time.Time
	text string
}

// listenNotify makes a NOTIFY_SOCKET in dir and returns its path and the
// datagrams sent to it, as they come.
func listenNotify(t *testing.T, dir string) (string, <-chan notice) {
	t.Helper()
	path := filepath.Join(dir, "notify")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	out := make(chan notice, 1000)
	go func() {
		defer close(out)
		buf := make([]byte, 4096)
		for {
			n, err := ns.Read(buf)
			if err != nil {
				return
			}
			select {
			case out <- notice{time.Now(), string(buf[:n])}:
			default: // a test that stopped reading loses the rest
			}
		}
	}()
	return path, out
}

// TestHSMFaultsAreReportedAndRecoveredWithoutRestart runs signerd on a
// module that fails on demand (testdata/pkcs11fault) and on a token whose
// folder is removed and restored. Each fault is reported (the request's
// hsm_unavailable, a degraded health answer, signerd_hsm_up, an audit
// event, no watchdog ping while it lasts) and signerd serves again by
// itself when it ends. No signature the HSM got wrong is ever stored.
// useFaultModule has d load the fault-injecting module in place of its
// token's.
func (d *daemonProc) useFaultModule(t *testing.T) *hsmtest.FaultModule {
	t.Helper()
	faults := hsmtest.NewFaultModule(t, d.ca.Token.Module)
	d.editConfig(t, "module: "+d.ca.Token.Module, "module: "+faults.Path)
	return faults
}

func TestHSMFaultsAreReportedAndRecoveredWithoutRestart(t *testing.T) {
	d := newDaemonProc(t, "")
	faults := d.useFaultModule(t)
	d.editConfig(t, "  sessions: 4\n", "  sessions: 4\n  probe_interval: 100ms\n")
	notifyPath, notices := listenNotify(t, d.dir)
	d.env = append(faults.Env(), "NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=400000")
	d.start(t)

	// pings collects the watchdog pings and STATUS lines seen so far.
	var pings []time.Time
	var statuses []string
	drain := func() {
		for {
			select {
			case n := <-notices:
				if strings.Contains(n.text, "WATCHDOG=1") {
					pings = append(pings, n.at)
				}
				if strings.HasPrefix(n.text, "STATUS=") {
					statuses = append(statuses, n.text)
				}
			default:
				return
			}
		}
	}
	health := func() reply { return d.callAs(t, operatorUID, "GET", "/v1/health") }
	awaitHealth := func(t *testing.T, status int) time.Time {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if r := health(); r.status == status {
				return time.Now()
			} else if time.Now().After(deadline) {
				t.Fatalf("health still %d %s after 15s, want %d\n%s", r.status, r.body, status, d.log)
			}
		}
	}
	set := func(fault string) func(*testing.T) { return func(t *testing.T) { faults.Set(t, fault) } }
	away := d.ca.Token.Dir + ".away"
	tests := []struct {
		name    string
		start   func(*testing.T)
		end     func(*testing.T) // nil: the fault is a one-shot event
		metric  string           // the signerd_hsm_errors_total kind a failed request counts as
		oneShot bool
	}{
		{name: "signatures fail", start: set("sign-error"), end: set("ok"), metric: "other"},
		{name: "signatures corrupted", start: set("sign-corrupt"), end: set("ok"), metric: "bad_signature"},
		{name: "token folder removed", metric: "transient",
			start: func(t *testing.T) {
				if err := os.Rename(d.ca.Token.Dir, away); err != nil {
					t.Fatal(err)
				}
			},
			end: func(t *testing.T) {
				if err := os.Rename(away, d.ca.Token.Dir); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "sessions closed behind the pool", start: set("close-sessions"), oneShot: true},
		{name: "logged out", start: set("logout"), oneShot: true},
	}
	var failed []string // request ids that met a fault
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("fault-%d", i)
			body := issueBody(t, id, "person-sign")
			tt.start(t)
			if tt.oneShot {
				faults.AwaitDone(t, 5*time.Second)
			} else {
				want(t, "issue under the fault", d.call(t, "POST", "/v1/certificates", body), 503, "hsm_unavailable")
				failed = append(failed, id)
				down := awaitHealth(t, 503)
				time.Sleep(800 * time.Millisecond) // several probe and watchdog intervals
				drain()
				for _, p := range pings {
					if p.After(down.Add(300 * time.Millisecond)) {
						t.Errorf("watchdog ping at %v, while the HSM was down (since %v)", p.Format(time.StampMilli), down.Format(time.StampMilli))
					}
				}
				if len(statuses) == 0 || !strings.Contains(statuses[len(statuses)-1], "HSM unavailable") {
					t.Errorf("STATUS while down: %q", statuses)
				}
				tt.end(t)
			}
			up := awaitHealth(t, 200)
			want(t, "issue after recovery", d.call(t, "POST", "/v1/certificates", body), 201, "")
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				drain()
				if len(pings) > 0 && pings[len(pings)-1].After(up) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no watchdog ping since the HSM came back")
				}
			}
		})
	}
	m := d.metrics(t) // an absent sample reads 0 and fails below
	for _, tt := range tests {
		if tt.metric != "" && m[fmt.Sprintf(`signerd_hsm_errors_total{kind=%q}`, tt.metric)] < 1 {
			t.Errorf("metrics count no %s HSM errors", tt.metric)
		}
	}
	if m["signerd_hsm_up"] != 1 {
		t.Errorf("metrics: HSM not up at the end")
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("signerd exit: %v\n%s", err, d.log)
	}

	st := openStore(t, d.store)
	events := map[string]int{}
	err := st.View(func(tx *store.Tx) error {
		for _, id := range failed {
			r, err := tx.Request(id)
			if err != nil {
				return err
			}
			if len(r.Burned) == 0 {
				return fmt.Errorf("request %s met a fault and burned no serial", id)
			}
			for _, s := range r.Burned {
				if _, err := tx.Certificate(s); !errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("burned serial %x of %s has a certificate (%v)", s, id, err)
				}
			}
		}
		if err := tx.Certificates(func(c *store.Certificate) error {
			cert, err := smx509.ParseCertificate(c.DER)
			if err != nil {
				return err
			}
			return cert.CheckSignatureFrom(d.ca.Cert)
		}); err != nil {
			return fmt.Errorf("stored certificate: %w", err)
		}
		return tx.Events(1, func(ev store.Event, _ []byte) error {
			events[ev.Action]++
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if events["hsm.unavailable"] != len(tests) || events["hsm.recovered"] != len(tests) {
		t.Errorf("audited %d outages and %d recoveries, want %d of each", events["hsm.unavailable"], events["hsm.recovered"], len(tests))
	}
}
