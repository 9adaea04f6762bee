package main

import (
	"bufio"
	"os"
	"path"
	"path/filepath"
	"signerd/store"
	"strings"
	"testing"
)

// unitDirectives reads a unit file in systemd/ into its directives, each
// key with its values in order (comments and section headers dropped).
func unitDirectives(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", name, line)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The unit skips signerd while the PIN refusal marker exists, at the path
// signerd itself uses by default for the store the README configures
// (/var/lib/signerd/signerd.db in StateDirectory=signerd), and for a
// PostgreSQL store under the unit (in $STATE_DIRECTORY, which systemd
// sets to /var/lib/signerd).
func TestUnitSkipsStartWhilePINRefused(t *testing.T) {
	svc := unitDirectives(t, "signerd.service")
	state := svc["StateDirectory"]
	if len(state) != 1 {
		t.Fatalf("StateDirectory= %q, want one", state)
	}
	storeFile := path.Join("/var/lib", state[0], "signerd.db")
	t.Setenv("STATE_DIRECTORY", path.Join("/var/lib", state[0]))
	onDatabase, err := pinRefusedMarkerFor(storeConfig{Postgres: new(store.PostgresDSN)})
	if err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{defaultPINRefusedMarker(storeFile), onDatabase} {
		want := "!" + marker
		found := false
		for _, v := range svc["ConditionPathExists"] {
			found = found || v == want
		}
		if !found {
			t.Errorf("ConditionPathExists= %q does not include %q", svc["ConditionPathExists"], want)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "path: "+storeFile) {
		t.Errorf("README's configuration does not put the store at %s", storeFile)
	}
}

// The socket unit makes the socket root:signerd-clients 0660 (and its
// folder, DirectoryMode=). The service must not name that folder in a
// RuntimeDirectory= (or any other *Directory=): at each start systemd
// chowns such a folder recursively to User=/Group=, socket included
// (setup_exec_directory), and every RA in signerd-clients gets EACCES
// from then on.
func TestUnitLeavesTheSocketsOwnership(t *testing.T) {
	sock := unitDirectives(t, "signerd.socket")
	svc := unitDirectives(t, "signerd.service")
	for key, want := range map[string]string{"SocketUser": "root", "SocketGroup": "signerd-clients", "SocketMode": "0660", "Accept": "no"} {
		if got := sock[key]; len(got) != 1 || got[0] != want {
			t.Errorf("signerd.socket %s= %q, want %q", key, got, want)
		}
	}
	streams := sock["ListenStream"]
	if len(streams) != 1 || !path.IsAbs(streams[0]) {
		t.Fatalf("signerd.socket ListenStream= %q, want one path", streams)
	}
	folder := path.Dir(streams[0])
	if len(sock["DirectoryMode"]) != 1 {
		t.Errorf("signerd.socket has no DirectoryMode=: the socket's folder %s is the socket unit's to make", folder)
	}
	bases := map[string]string{"RuntimeDirectory": "/run", "StateDirectory": "/var/lib", "CacheDirectory": "/var/cache",
		"LogsDirectory": "/var/log", "ConfigurationDirectory": "/etc"}
	for key, base := range bases {
		for _, v := range svc[key] {
			for _, dir := range strings.Fields(v) {
				dir, _, _ = strings.Cut(dir, ":") // a symlink's target follows the colon
				owned := path.Join(base, dir)
				if folder == owned || strings.HasPrefix(folder, owned+"/") {
					t.Errorf("signerd.service %s=%s: systemd would chown %s, and the socket %s in it, to %s:%s at each start",
						key, v, owned, streams[0], strings.Join(svc["User"], ","), strings.Join(svc["Group"], ","))
				}
			}
		}
	}
}
