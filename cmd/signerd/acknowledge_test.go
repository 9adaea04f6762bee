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
// and why; a blank one is refused before anything is opened.
func TestBlankAcknowledgementIsRefused(t *testing.T) {
	for _, flag := range []string{"--acknowledge-audit-break", "--acknowledge-clock-reset"} {
		for _, statement := range []string{" ", "\t\n"} {
			t.Run(strings.TrimPrefix(flag, "--"), func(t *testing.T) {
				d := newDaemonProc(t, "")
				// A signerd that took the blank statement would serve on:
				// bounded, so that fails rather than hangs.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, signerdBin, "--config", d.config, flag, statement).CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
					t.Fatalf("signerd %s %q: %v, want exit status %d\n%s", flag, statement, err, exitUsage, out)
				}
				if !strings.Contains(string(out), "needs a statement") {
					t.Errorf("log does not say why:\n%s", out)
				}
			})
		}
	}
}
