package e2e

import (
	"strings"
	"testing"
)

// TestBenchAccess runs the load command as a user would, small: the custodian in a process of its
// own, requests over the peer RPC, closed and open loop. The command itself checks that every
// request was granted and has its entry in the custodian's log; it exits 1 otherwise.
func TestBenchAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	for _, args := range [][]string{
		{"--requests", "600", "--inflight", "32", "--patients", "50"},
		{"--rate", "100", "--duration", "2s", "--patients", "20"},
	} {
		out := schakel(t, 0, append([]string{"bench", "access", "--data", t.TempDir()}, args...)...)
		for _, want := range []string{"decisions/s", "p99 ", "per decision", "failed 0", "every answer has its entry in the custodian's log"} {
			if !strings.Contains(out, want) {
				t.Fatalf("bench access %v printed no %q:\n%s", args, want, out)
			}
		}
	}
}
