package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"signerd/store"
)

// storeCopyBytes returns the bytes of a real, empty store file, as
// signerd would send it.
func storeCopyBytes(t *testing.T) []byte {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.db")
	st, err := store.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if _, err := st.CopyTo(copyPath); err != nil {
		t.Fatal(err)
	}
	st.Close()
	raw, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestStoreBackupEndsItsSignalWatcher: once store backup returns, the
// goroutine that watched for SIGINT and SIGTERM has ended (a later signal
// can no longer remove anything or exit). On the code before, it waited
// on a channel never closed, for the life of the process.
func TestStoreBackupEndsItsSignalWatcher(t *testing.T) {
	raw := storeCopyBytes(t)
	t.Setenv("SIGNERD_SOCKET", backupServer(t, raw, raw, false, nil))
	out := filepath.Join(t.TempDir(), "backup.db")
	if err := storeBackup([]string{"--out", out}, io.Discard); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "signerctl.storeBackup.func") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine of store backup outlives it:\n%s", stacks)
		}
	}
}

// TestStoreBackupKeepsFileCreatedWhileReceiving: FILE created by someone
// else after the first check (here while signerd sends) is left as it
// is; the copy is not kept and no temporary file stays.
func TestStoreBackupKeepsFileCreatedWhileReceiving(t *testing.T) {
	raw := storeCopyBytes(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "backup.db")
	// FILE appears while signerd sends.
	sock := backupServer(t, raw, raw, false, func() { os.WriteFile(out, []byte("theirs"), 0o600) })
	_, stderr, code := signerctl(t, sock, "store", "backup", "--out", out)
	if code == 0 || !strings.Contains(stderr, "appeared meanwhile") {
		t.Fatalf("backup onto a FILE created meanwhile: exit %d: %s; want a refusal", code, stderr)
	}
	if got, _ := os.ReadFile(out); string(got) != "theirs" {
		t.Fatalf("FILE created meanwhile now holds %d bytes, want it untouched", len(got))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("folder holds %d entries, want FILE only", len(entries))
	}
}
