package main

import (
	"bytes"
	"context"
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

	"signerd/api"
	"signerd/store"
)

// Store commands: an operator has signerd copy its embedded store while it
// serves; anyone checks a copy offline, or a store on PostgreSQL; an
// operator creates and upgrades a PostgreSQL store's schema and migrates
// an embedded store into a new database.

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
	hdr, err := c.send(api.RouteBackupStore.Method, api.RouteBackupStore.Path, nil, 0, io.MultiWriter(f, h))
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
	if want, _ := hex.DecodeString(hdr.Get(api.HeaderBackupSHA256)); !bytes.Equal(sum, want) {
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
	if head := hdr.Get(api.HeaderBackupAuditHead); head != strconv.FormatUint(report.AuditHead, 10) {
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

// storeVerify checks a store file offline, or a store on PostgreSQL
// (--dsn), which it may do while signerd serves from it.
func storeVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store verify", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	dsn := fs.String("dsn", "", "verify the store in the PostgreSQL database `DSN` names (no password in it)")
	files, err := parseWithFiles(fs, args)
	if err != nil {
		return err
	}
	var report *store.Report
	var name string
	switch {
	case *dsn != "" && len(files) > 0:
		return usageError{"store verify takes one FILE or --dsn DSN, not both"}
	case *dsn != "":
		if err := refuseDSNPassword(*dsn); err != nil {
			return err
		}
		if name, err = store.PostgresLocation(*dsn); err != nil {
			return err
		}
		ctx, stop := interruptible()
		defer stop()
		if report, err = store.VerifyPostgres(ctx, *dsn); err != nil {
			return err
		}
	case len(files) == 1:
		name = files[0]
		if report, err = store.Verify(name); err != nil {
			return err
		}
	default:
		return usageError{"store verify takes one FILE (a copy; signerd's open store is locked) or --dsn DSN"}
	}
	if *asJSON {
		if err := writeJSON(stdout, report); err != nil {
			return err
		}
	} else {
		printReport(stdout, name, report)
	}
	if !report.OK() {
		return errors.New(name + ": " + strconv.Itoa(len(report.Findings)) + " findings")
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// interruptible is a context that SIGINT, SIGTERM or SIGHUP cancel: a
// database command so stopped ends its transaction (rolled back) rather
// than leave it to the server to notice the connection gone.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
}

// storeUpgrade applies the PostgreSQL schema's pending migrations. signerd
// never does it on its own: a schema changes only when an operator says so.
func storeUpgrade(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store upgrade", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "the PostgreSQL database, as a libpq `DSN` or URL (no password in it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dsn == "" {
		return usageError{"store upgrade needs --dsn DSN"}
	}
	if err := refuseDSNPassword(*dsn); err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	applied, err := store.UpgradePostgres(ctx, *dsn)
	for _, m := range applied {
		fmt.Fprintf(stdout, "applied version %d: %s\n", m.Version, m.Description)
	}
	if err != nil {
		return err
	}
	version, err := store.PostgresSchemaVersion(ctx, *dsn)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "schema current at version %d\n", version)
	} else {
		fmt.Fprintf(stdout, "schema now at version %d\n", version)
	}
	return nil
}

// storeMigrate copies a stopped signerd's store file into a new PostgreSQL
// database (store.MigrateToPostgres) and prints what it copied.
func storeMigrate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("store migrate", flag.ContinueOnError)
	from := fs.String("from", "", "the store `file` to copy (signerd stopped; the file is not changed)")
	dsn := fs.String("dsn", "", "the new PostgreSQL database, as a libpq `DSN` or URL (no password in it), upgraded and empty")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *dsn == "" {
		return usageError{"store migrate needs --from FILE and --dsn DSN"}
	}
	if err := refuseDSNPassword(*dsn); err != nil {
		return err
	}
	ctx, stop := interruptible()
	defer stop()
	report, err := store.MigrateToPostgres(ctx, *from, *dsn)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: nothing was kept in the database (%w)", err)
		}
		return err
	}
	if *asJSON {
		return writeJSON(stdout, report)
	}
	fmt.Fprintf(stdout, "migrated %s to %s (schema %d): %d records\n", report.From, report.To, report.Schema, report.Records())
	for _, t := range report.Tables {
		fmt.Fprintf(stdout, "  %-17s %9d records  SHA-256 %x\n", t.Table, t.Records, t.SHA256)
	}
	fmt.Fprintf(stdout, "audit head: event %d (chain hash %x), last seal: event %d\n", report.AuditHead, report.AuditHash, report.LastSeal)
	fmt.Fprintln(stdout, "checked: every table read back from the database has the file's records and SHA-256; the audit chain verifies on the database and ends at the file's head")
	return nil
}

// refuseDSNPassword refuses a DSN that carries a password (password= or
// sslpassword=, or one in a URL's user part): a command's arguments are
// visible to every user of the machine. A password that comes from
// elsewhere (a passfile, the environment) is not in the DSN and passes.
func refuseDSNPassword(dsn string) error {
	switch secret, err := store.PostgresDSNSecret(dsn); {
	case err != nil:
		return fmt.Errorf("--dsn (not shown): %w", err)
	case secret == "password":
		return errors.New("the DSN carries a password, and a command's arguments are visible to every user of this machine: " +
			"put it in a password file (passfile=FILE in the DSN, mode 0600) or use peer authentication over the Unix socket")
	case secret == "sslpassword":
		return errors.New("the DSN carries the client key's passphrase (sslpassword), and a command's arguments are visible to every user of this machine: " +
			"use a key file without one, readable only by its owner")
	}
	return nil
}

func printReport(w io.Writer, path string, r *store.Report) {
	if len(r.Chains) == 0 {
		fmt.Fprintf(w, "%s: schema %d, %d certificates, %d serials, %d requests, %d revoked, %d audit events\n",
			path, r.Schema, r.Certificates, r.Serials, r.Requests, r.Revoked, r.Events)
		fmt.Fprintf(w, "audit head: event %d (chain hash %x), last seal: event %d\n", r.AuditHead, r.AuditHash, r.LastSeal)
	} else {
		// A store shared by nodes: one audit chain per node, and the
		// unnamed one only where a single signerd wrote before them.
		fmt.Fprintf(w, "%s: schema %d, %d certificates, %d serials, %d requests, %d revoked\n",
			path, r.Schema, r.Certificates, r.Serials, r.Requests, r.Revoked)
		if r.Events > 0 {
			fmt.Fprintf(w, "unnamed audit chain: %d events, head event %d (chain hash %x), last seal: event %d\n",
				r.Events, r.AuditHead, r.AuditHash, r.LastSeal)
		}
		for _, c := range r.Chains {
			fmt.Fprintf(w, "node %s's audit chain: %d events, head event %d (chain hash %x), last seal: event %d\n",
				c.Node, c.Events, c.AuditHead, c.AuditHash, c.LastSeal)
		}
	}
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
