package main

import (
	"fmt"
	"io"
	"strings"

	"signerd/ceremony"
)

// ceremonyRun performs a ceremony file. "--dry-run" may come before or
// after the file, as operators type it either way.
func ceremonyRun(args []string, stdout io.Writer) error {
	var file string
	dryRun := false
	for _, a := range args {
		switch {
		case a == "-dry-run" || a == "--dry-run":
			dryRun = true
		case a == "-h" || a == "--help" || a == "-help":
			fmt.Fprintf(stdout, "usage: signerctl ceremony run FILE [--dry-run]\n  types: %s\n  examples: docs/ceremonies/\n",
				strings.Join(ceremony.Types(), ", "))
			return nil
		case strings.HasPrefix(a, "-"):
			return usageError{fmt.Sprintf("unknown flag %q (only --dry-run)", a)}
		case file != "":
			return usageError{"one ceremony file at a time"}
		default:
			file = a
		}
	}
	if file == "" {
		return usageError{"usage: signerctl ceremony run FILE [--dry-run]"}
	}
	f, err := ceremony.Load(file)
	if err != nil {
		return err
	}
	return f.Run(ceremony.Options{DryRun: dryRun, Out: stdout})
}
