package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs `schakel demo` as a user would, keeping its data and exports, then checks what it
// left behind with the CLI alone: one data directory per node, named for whom it hosts, and a GP
// practice's log export that verifies with the witnesses' cosignatures the demo printed.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	data, out := t.TempDir(), t.TempDir()
	story := schakel(t, 0, "demo", "--data", data, "--out", out)
	if !strings.Contains(story, "Every step held.") {
		t.Fatalf("the demo did not end with every step held:\n%s", story)
	}
	for _, name := range []string{"gp", "pharmacy", "hospital", "portal", "insurer", "register"} {
		if _, err := os.Stat(filepath.Join(data, name)); err != nil {
			t.Errorf("no data directory for %s: %v", name, err)
		}
	}
	// The export step prints the command that checks the GP practice's log with its witnesses.
	var verifyCmd string
	for _, line := range strings.Split(story, "\n") {
		if _, cmd, ok := strings.Cut(line, "check it yourself: schakel "); ok {
			verifyCmd = cmd
		}
	}
	args := strings.Fields(verifyCmd)
	if len(args) < 6 || args[0] != "log" || args[1] != "verify" {
		t.Fatalf("the demo printed no verify command: %q", verifyCmd)
	}
	schakel(t, 0, args...)
	// The tampered copy the demo made is refused by the CLI too.
	schakel(t, 1, "log", "verify", filepath.Join(data, "tampered-gp-log"))
}
