package verify

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStandsAlone keeps the auditor's verifier free of storage, network and generated code: its
// dependencies are the standard library and golang.org/x/mod/sumdb's tlog and note.
func TestStandsAlone(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(gocmd, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	allowed := map[string]bool{
		"golang.org/x/mod/sumdb/tlog":                                 true,
		"golang.org/x/mod/sumdb/note":                                 true,
		"golang.org/x/mod/internal/lazyregexp":                        true,
		"github.com/schakel-health/schakel/internal/accesslog/verify": true,
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, line := range lines {
		path, std, _ := strings.Cut(line, " ")
		for _, banned := range []string{"badger", "libp2p", "connect", "schakel/internal/store", "proto"} {
			if strings.Contains(path, banned) {
				t.Errorf("go list -deps: %s depends on %s", "verify", path)
			}
		}
		if std != "true" && !allowed[path] {
			t.Errorf("go list -deps: unexpected dependency %s", path)
		}
	}
	if len(lines) < 10 {
		t.Fatalf("go list -deps listed only %d packages: %q", len(lines), out)
	}
}
