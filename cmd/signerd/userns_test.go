package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"signerd/api"
	"signerd/store"
)

// Uids of the user-namespace test: signerd's service user, and an RA that
// is neither root nor the service user.
const (
	serviceUID = 1010
	raPeerUID  = 1004
	// overflowUID is how the kernel shows a uid the reader's user
	// namespace does not map (/proc/sys/kernel/overflowuid).
	overflowUID = 65534
)

// TestPeerIdentityInAUserNamespace runs signerd as its service user the
// way PrivateUsers=yes runs it: in a user namespace that maps root and the
// service user alone. There SO_PEERCRED shows any other peer as 65534, so
// a configured RA is an unknown_peer and the audit log records 65534.
// Without the namespace (the unit as shipped) the same peer is the RA.
func TestPeerIdentityInAUserNamespace(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("the test runs signerd and its peers as other uids, which needs root")
	}
	for _, tc := range []struct {
		name      string
		namespace bool
		status    int
		code      string
		actorUID  int
	}{
		{"PrivateUsers namespace", true, 403, string(api.CodeUnknownPeer), overflowUID},
		{"as shipped", false, 404, "not_found", raPeerUID}, // the RA may ask; the serial is unknown
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDaemonProc(t, "")
			d.editConfig(t, "  ra: {uids: [0]}\n", "  ra: {uids: [0, "+strconv.Itoa(raPeerUID)+"]}\n")
			// signerd runs as the service user: it must own its files and
			// the token's, as StateDirectory= and the token folder's owner
			// would give it, and reach the module (the test's build of it
			// is in root's home).
			module := filepath.Join(d.dir, "libsofthsm2.so")
			copyFile(t, d.ca.Token.Module, module, 0o755)
			d.editConfig(t, "module: "+d.ca.Token.Module, "module: "+module)
			chownTree(t, d.dir, serviceUID)
			chownTree(t, filepath.Dir(d.ca.Token.Dir), serviceUID)
			attr := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID, NoSetGroups: true}}
			if tc.namespace {
				// What systemd writes for PrivateUsers=yes: root and the
				// unit's user and group, one each, mapped to themselves.
				ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}, {ContainerID: serviceUID, HostID: serviceUID, Size: 1}}
				attr.Cloneflags = syscall.CLONE_NEWUSER
				attr.UidMappings, attr.GidMappings = ids, ids
				probe := exec.Command("/bin/true")
				probe.SysProcAttr = attr
				if err := probe.Run(); err != nil {
					t.Skipf("the kernel refuses a user namespace mapping root and uid %d: %v", serviceUID, err)
				}
			}
			startWithAttr(t, d, attr)
			r := d.callAs(t, raPeerUID, "GET", "/v1/certificates/01")
			if r.status != tc.status || r.code != tc.code {
				t.Errorf("RA uid %d: %d %q, want %d %q\n%s", raPeerUID, r.status, r.code, tc.status, tc.code, r.body)
			}
			if err := d.stop(t); err != nil {
				t.Fatalf("signerd exit: %v\n%s", err, d.log)
			}
			st := openStore(t, d.store)
			var actors []int
			st.View(func(tx *store.Tx) error {
				return tx.Events(1, func(ev store.Event, _ []byte) error {
					if ev.Actor.UID != 0 && ev.Actor.UID != store.System.UID {
						actors = append(actors, ev.Actor.UID)
					}
					return nil
				})
			})
			if tc.namespace && (len(actors) != 1 || actors[0] != tc.actorUID) {
				t.Errorf("audited actors %v, want the refusal by uid %d", actors, tc.actorUID)
			}
			for _, uid := range actors {
				if uid != tc.actorUID {
					t.Errorf("an event names uid %d; the peer was %d", uid, raPeerUID)
				}
			}
		})
	}
}

// The shipped unit has no PrivateUsers=: it hides every peer's identity.
func TestUnitKeepsPeerIdentity(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "systemd", "signerd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^\s*PrivateUsers\s*=.*$`).Find(raw); m != nil {
		t.Fatalf("systemd/signerd.service sets %q: SO_PEERCRED would show every peer but root and signerd as %d", m, overflowUID)
	}
}

// startWithAttr is daemonProc.start with signerd's process attributes
// (credentials, namespaces) set; signerd runs from a copy in d's folder,
// which the uid it runs as may read.
func startWithAttr(t *testing.T, d *daemonProc, attr *syscall.SysProcAttr) {
	t.Helper()
	binCopy := filepath.Join(d.dir, "signerd")
	copyFile(t, signerdBin, binCopy, 0o755)
	d.startBinary(t, binCopy, attr)
}

// chownTree gives uid (and the group of the same number) everything under
// root, root included.
func chownTree(t *testing.T, root string, uid int) {
	t.Helper()
	err := filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}
