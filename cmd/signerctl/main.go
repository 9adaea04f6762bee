// Command signerctl is the CA's command-line tool. Operators make tokens
// and keys only through key ceremonies (declarative, checked, recorded;
// PINs from files, custodians' shares or the terminal, never from
// arguments); RA staff, operators and auditors reach signerd over its
// socket.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"signerd/api"
	"sort"
	"strings"
)

// command is one "signerctl GROUP VERB".
type command struct {
	summary string
	run     func(args []string, stdout io.Writer) error
}

var commands = map[string]command{
	"ceremony run": {"perform a key ceremony file (--dry-run: check only)", ceremonyRun},

	"issue":   {"RA: have signerd issue a certificate for a CSR or KMC key", clientIssue(false)},
	"renew":   {"RA: issue a certificate for a new key replacing -serial", clientIssue(true)},
	"extend":  {"RA: reissue -serial with a new validity (same key)", clientExtend},
	"revoke":  {"RA: revoke -serial with a -reason", serialCommand("revoke", api.RouteRevoke, true)},
	"hold":    {"RA: put -serial on hold (certificateHold)", serialCommand("hold", api.RouteHold, false)},
	"restore": {"RA: lift the hold on -serial", serialCommand("restore", api.RouteRestore, false)},
	"status":  {"RA: show the record of -serial", serialCommand("status", api.RouteStatus, false)},
	"crl":     {"RA: fetch the current CRL; operator: -sign a new one", clientCRL},
	"stats":   {"auditor: monthly statistics per profile", clientStats},
	"health":  {"operator: is signerd serving", clientHealth},

	"audit export": {"auditor: write a sealed bundle of the audit log to --out", auditExport},
	"audit verify": {"check an audit bundle offline against --root, the CA's root certificate (required)", auditVerify},
	"audit show":   {"list audit events of a bundle, or of a fresh export, by time, actor, action, serial, node", auditShow},

	"store backup":  {"operator: have signerd copy its store while it serves, to --out (checked)", storeBackup},
	"store verify":  {"check a copy of the store file offline, or a PostgreSQL store (--dsn): schema, indexes, audit chain", storeVerify},
	"store upgrade": {"operator: create or migrate the schema of a PostgreSQL store (--dsn)", storeUpgrade},
	"store migrate": {"operator: copy a stopped signerd's store file (--from) into a new PostgreSQL database (--dsn), checked", storeMigrate},

	"bench": {"measure signerd against the HSM ceiling on a throwaway token (make bench)", bench},
}

// Exit codes: 0 success, 1 the operation failed (or signerd refused it),
// 2 bad usage, 3 signerd could not be reached.
func main() {
	err := run(os.Args[1:], os.Stdout)
	var usage usageError
	var down unreachable
	switch {
	case err == nil:
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "signerctl:", err)
		os.Exit(2)
	case errors.As(err, &down):
		fmt.Fprintln(os.Stderr, "signerctl:", err)
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "signerctl:", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, stdout io.Writer) error {
	if len(args) >= 2 {
		if c, ok := commands[args[0]+" "+args[1]]; ok {
			return c.run(args[2:], stdout)
		}
	}
	if len(args) >= 1 {
		if c, ok := commands[args[0]]; ok {
			return c.run(args[1:], stdout)
		}
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(stdout)
		return nil
	}
	printUsage(os.Stderr)
	return usageError{fmt.Sprintf("unknown command %q", strings.Join(args[:min(2, len(args))], " "))}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: signerctl COMMAND [flags]   (signerctl COMMAND -h for flags)")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
}

// parse parses flags; -h prints the flags and ends with no error.
func parse(fs *flag.FlagSet, args []string) error {
	files, err := parseWithFiles(fs, args)
	if err == nil && len(files) > 0 {
		err = usageError{fmt.Sprintf("unexpected arguments: %q", files)}
	}
	return err
}

// parseWithFiles parses flags given before, between or after FILE
// arguments, and returns the files.
func parseWithFiles(fs *flag.FlagSet, args []string) ([]string, error) {
	var files []string
	fs.SetOutput(os.Stderr)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return files, nil
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
