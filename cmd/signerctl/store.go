package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"signerd/store"
)

// Store commands: an operator has signerd copy its embedded store while it
// serves; anyone checks a copy offline.

// storeBackup writes a copy of the store from signerd to --out: to a
// temporary file of its own beside FILE first (.FILE.*.tmp, 0600, a name
// no other run uses, so a leftover never blocks the next), synced,
// checked (its SHA-256 against signerd's, then store.Verify), and only
// then linked as FILE (which fails if FILE appeared meanwhile, where a
// rename would replace it) and unlinked, with the directory synced, so
// FILE is whole or absent whatever happens meanwhile. SIGINT, SIGTERM or SIGHUP
// before the link removes the temporary file before signerctl exits;
// after it, signerctl finishes. Only SIGKILL or a crash leaves the
// temporary file (remove it by hand).
func storeBackup(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store backup", flag.ContinueOnError)
	var c clientFlags
	c.register(fs)
	out := fs.String("out", "", "write the copy to `file` (must not exist)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"store backup needs --out FILE"}
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite", *out)
	}
	f, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// Interrupted, the copy so far is removed, not left to fill the disk;
	// once FILE is being linked (finishing, under mu), a signal is caught
	// and dropped: FILE is written, and the command ends as it would.
	var (
		mu        sync.Mutex
		finishing bool
	)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP) // SIGHUP: a dropped terminal session
	defer func() {
		signal.Stop(signals)
		close(signals) // ends the goroutine below
	}()
	go func() {
		for sig := range signals {
			mu.Lock()
			if !finishing {
				os.Remove(tmp)
				fmt.Fprintf(os.Stderr, "signerctl: %v: the partial copy %s was removed; %s not written\n", sig, tmp, *out)
				os.Exit(1)
			}
			mu.Unlock()
		}
	}()
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	hdr, err := c.send("POST", "/v1/store/backup", nil, 0, io.MultiWriter(f, h))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	sum := h.Sum(nil)
	if want, _ := hex.DecodeString(hdr.Get("Signerd-Backup-Sha256")); !bytes.Equal(sum, want) {
		return fmt.Errorf("the copy received has SHA-256 %x, signerd sent one of %x: not kept", sum, want)
	}
	report, err := store.Verify(tmp)
	if err != nil {
		return err
	}
	if !report.OK() {
		printReport(stdout, tmp, report)
		return fmt.Errorf("the copy fails its check (%d findings): not kept", len(report.Findings))
	}
	if head := hdr.Get("Signerd-Backup-Audit-Head"); head != strconv.FormatUint(report.AuditHead, 10) {
		return fmt.Errorf("the copy's audit head is event %d, signerd said %s: not kept", report.AuditHead, head)
	}
	mu.Lock()
	finishing = true
	mu.Unlock()
	// A link, not a rename: it fails if FILE appeared meanwhile, where a
	// rename would replace it.
	if err := os.Link(tmp, *out); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s appeared meanwhile; refusing to overwrite (the copy was not kept)", *out)
		}
		return err
	}
	keep = true
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("%s written, but the temporary file %s could not be removed: %w", *out, tmp, err)
	}
	if err := syncDir(filepath.Dir(*out)); err != nil {
		return fmt.Errorf("%s written, but its directory could not be synced: %w", *out, err)
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d bytes, SHA-256 %x\n", *out, st.Size(), sum)
	fmt.Fprintf(stdout, "audit head: event %d (chain hash %x), last seal: event %d\n", report.AuditHead, report.AuditHash, report.LastSeal)
	fmt.Fprintf(stdout, "checked: %d certificates, %d serials, %d requests, %d revoked, %d audit events\n",
		report.Certificates, report.Serials, report.Requests, report.Revoked, report.Events)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// storeVerify checks a store file offline.
func storeVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store verify", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return usageError{"store verify takes one FILE (a copy; signerd's open store is locked)"}
	}
	report, err := store.Verify(files[0])
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		printReport(stdout, files[0], report)
	}
	if !report.OK() {
		return errors.New(files[0] + ": " + strconv.Itoa(len(report.Findings)) + " findings")
	}
	return nil
}

func printReport(w io.Writer, path string, r *store.Report) {
	fmt.Fprintf(w, "%s: schema %d, %d certificates, %d serials, %d requests, %d revoked, %d audit events\n",
		path, r.Schema, r.Certificates, r.Serials, r.Requests, r.Revoked, r.Events)
	fmt.Fprintf(w, "audit head: event %d (chain hash %x), last seal: event %d\n", r.AuditHead, r.AuditHash, r.LastSeal)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "FAIL %s\n", f)
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	}
}
