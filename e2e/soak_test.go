package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkBenchMix fails the test unless out, from a run of bench mix that exited 0, reports every
// kind with no error and the checks done; with soak, also the growth measured.
func checkBenchMix(t *testing.T, out string, soak bool) {
	t.Helper()
	wants := []string{"per operation", "custodian at the start: ",
		"the export of ", "verifies; every acknowledged decision and append is its entry in it"}
	if soak {
		wants = append(wants, "growth after the warm-up:")
	}
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Fatalf("bench mix printed no %q:\n%s", want, out)
		}
	}
	// The table: "<kind> <count> <errors> <per s> <latencies>" for each kind and "all".
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[0] != "token" && f[0] != "introspect" && f[0] != "record" && f[0] != "all") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		rows++
		if n == 0 || f[2] != "0" {
			t.Fatalf("bench mix: %q: want operations and 0 errors:\n%s", line, out)
		}
	}
	if rows != 4 {
		t.Fatalf("bench mix printed %d rows of operations, want 4 (three kinds and all):\n%s", rows, out)
	}
}

// TestBenchMix runs the mixed load briefly, as the soak does, with the custodian's API behind
// a token: token requests over the peer RPC, introspections and appends over HTTP, the
// custodian's goroutines and memory read from /metrics, the log exported and checked. The
// command exits 1 on any failed operation, lost acknowledgement, invalid log or, with --soak,
// growth beyond its bounds.
func TestBenchMix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	schakel(t, 2, "bench", "mix", "--mix", "token=1,read=1")
	schakel(t, 2, "bench", "mix", "--soak", "--duration", "10s", "--warmup", "10s")
	t.Setenv("SCHAKEL_API_TOKEN", "e2e-bench-mix-token")
	for _, args := range [][]string{
		{"--soak", "--rate", "150", "--duration", "6s", "--warmup", "2s", "--sample-every", "1s", "--patients", "20"},
		{"--inflight", "16", "--duration", "3s", "--patients", "20", "--mix", "token=1,introspect=2,record=1"},
	} {
		out := schakel(t, 0, append([]string{"bench", "mix", "--data", t.TempDir()}, args...)...)
		checkBenchMix(t, out, args[0] == "--soak")
		if !strings.Contains(out, "API token from SCHAKEL_API_TOKEN") {
			t.Fatalf("bench mix %v did not use the API token:\n%s", args, out)
		}
	}
}

// TestSoak runs the default mix open loop for SCHAKEL_SOAK (a duration such as 2m) at
// SCHAKEL_SOAK_RATE operations per second (default 150) with --soak: it fails if any operation
// fails, an acknowledgement is lost, the log does not verify, or the custodian's goroutines or
// resident memory grow beyond the command's default bounds after the warm-up. Without
// SCHAKEL_SOAK it is skipped: go test ./... does not run it.
//
//	SCHAKEL_SOAK=2m go test ./e2e/ -run TestSoak -count=1 -timeout 15m -v
func TestSoak(t *testing.T) {
	soak := os.Getenv("SCHAKEL_SOAK")
	if soak == "" || testing.Short() {
		t.Skip("set SCHAKEL_SOAK to a duration, e.g. SCHAKEL_SOAK=2m")
	}
	d, err := time.ParseDuration(soak)
	if err != nil || d < time.Minute {
		t.Fatalf("SCHAKEL_SOAK=%q: want a duration of at least 1m", soak)
	}
	rate := "150"
	if r := os.Getenv("SCHAKEL_SOAK_RATE"); r != "" {
		rate = r
	}
	out := schakel(t, 0, "bench", "mix", "--soak", "--duration", d.String(), "--rate", rate, "--data", t.TempDir())
	t.Logf("schakel bench mix --soak --duration %s --rate %s:\n%s", d, rate, out)
	checkBenchMix(t, out, true)
}
