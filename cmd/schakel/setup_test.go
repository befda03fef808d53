package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSetupWritesLoadableConfig: setup prepares a node whose schakel.yaml the daemon's strict
// loader accepts, names the other node as a /dns4 bootstrap peer, and a second run changes nothing.
func TestSetupWritesLoadableConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	dir := t.TempDir()
	if err := setupNetwork(t.Context(), io.Discard, dir, []string{"gp", "hospital"}); err != nil {
		t.Fatalf("setup: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gp", "schakel.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fc, err := parseConfigFile(b)
	if err != nil {
		t.Fatalf("the daemon refuses the file setup wrote: %v\n%s", err, b)
	}
	if len(fc.Bootstrap) != 1 || !strings.HasPrefix(fc.Bootstrap[0], "/dns4/hospital/tcp/7632/p2p/") || len(fc.TrustedRegisters) != 1 {
		t.Fatalf("gp's configuration: %+v", fc)
	}
	listing, err := os.ReadFile(filepath.Join(dir, "register", "network.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := setupNetwork(t.Context(), &out, dir, []string{"gp", "hospital"}); err != nil {
		t.Fatalf("setup again: %v", err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "register", "network.txt"))
	if string(again) != string(listing) || !strings.Contains(out.String(), "gp: already set up") {
		t.Fatalf("a second setup changed the network:\n%s\nwas\n%s", again, listing)
	}
}
