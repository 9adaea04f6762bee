package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBlankAcknowledgementIsRefused: the statements that let signerd start
// past a broken audit log or a clock reset are recorded as who acknowledged
// and why; one that says nothing (blank, or only invisible characters that
// strings.TrimSpace keeps) or hides what it says (control, format or
// bidirectional characters) is refused before anything is opened.
func TestBlankAcknowledgementIsRefused(t *testing.T) {
	statements := []struct{ name, statement string }{
		{"space", " "},
		{"tab and newline", "\t\n"},
		{"zero width space", "\u200b"},
		{"word joiner", "\u2060"},
		{"byte order mark", "\ufeff"},
		{"zero width characters and spaces", " \u200b\u2060 \ufeff "},
		{"punctuation only", "-- ."},
		{"right-to-left override", "Li Wei, ticket \u202e1174"},
		{"newline forging a second line", "Li Wei\nacknowledged by the CISO"},
		{"escape sequence", "Li Wei \x1b[2K"},
		{"zero width space in a name", "Li\u200bWei, ticket 4711"},
		{"invalid UTF-8", "Li Wei \xff"},
	}
	for _, flag := range []string{"--acknowledge-audit-break", "--acknowledge-clock-reset"} {
		for _, c := range statements {
			t.Run(strings.TrimPrefix(flag, "--")+"/"+c.name, func(t *testing.T) {
				d := newDaemonProc(t, "")
				// A signerd that took the statement would serve on:
				// bounded, so that fails rather than hangs.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, signerdBin, "--config", d.config, flag, c.statement).CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
					t.Fatalf("signerd %s %q: %v, want exit status %d\n%s", flag, c.statement, err, exitUsage, out)
				}
				if !strings.Contains(string(out), "needs a statement") {
					t.Errorf("log does not say why:\n%s", out)
				}
			})
		}
	}
}

// TestAcknowledgementStatementsInAnyScript: what the statement check takes,
// a name and a reason in any script, with spaces and punctuation.
func TestAcknowledgementStatementsInAnyScript(t *testing.T) {
	for _, statement := range []string{"Li Wei, ticket 4711", "李伟，工单 4711", "4711", "Ærø: NTP fixed (ticket #9)"} {
		if why := statementFault(statement); why != "" {
			t.Errorf("statement %q refused: %s", statement, why)
		}
	}
}
