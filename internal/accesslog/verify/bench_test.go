package verify

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// verify10M turns on TestVerify10M, the performance goal: a 10-million-entry export of about
// 300-byte entries verified in at most 10 s on the project's 2-CPU machine. Generating it takes
// about a minute and 3.2 GB in the temporary directory, or in -benchdir, where it is kept for
// the next run:
//
//	go test ./internal/accesslog/verify/ -run TestVerify10M -v -timeout 30m -verify10m [-benchdir DIR]
var (
	verify10M = flag.Bool("verify10m", false, "generate a 10-million-entry export and time VerifyExport on it")
	benchDir  = flag.String("benchdir", "", "keep generated exports in this directory and reuse them")
)

// benchEvery is the checkpoint interval of generated large exports.
const benchEvery = 4096

var (
	bigMu   sync.Mutex
	bigDirs = map[string]string{} // cached exports, removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range bigDirs {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// bigExport returns the directory of a generated export of n entries, building it on first use.
func bigExport(tb testing.TB, n int, compact bool) (dir string, size int64) {
	tb.Helper()
	bigMu.Lock()
	defer bigMu.Unlock()
	key := fmt.Sprintf("%d-compact-%t", n, compact)
	dir, ok := bigDirs[key]
	if *benchDir != "" {
		dir, ok = filepath.Join(*benchDir, key), true
		if _, err := os.Stat(filepath.Join(dir, VerifierKeyFile)); err != nil {
			os.RemoveAll(dir)
			ok = false
		}
	}
	if ok {
		fi, err := os.Stat(filepath.Join(dir, EntriesFile))
		if err != nil {
			tb.Fatal(err)
		}
		return dir, fi.Size()
	}
	if *benchDir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "verify-bench-"); err != nil {
			tb.Fatal(err)
		}
		bigDirs[key] = dir
	}
	start := time.Now()
	size = writeBigExport(tb, dir, n, compact)
	tb.Logf("generated %d entries, %d bytes (%.0f bytes an entry) in %v", n, size, float64(size)/float64(n), time.Since(start).Round(time.Millisecond))
	return dir, size
}

// writeBigExport streams a generated export to dir without holding its entries: the roots come
// from this package's frontier, which TestFrontierRoot checks against tlog.TreeHash.
func writeBigExport(tb testing.TB, dir string, n int, compact bool) int64 {
	tb.Helper()
	l := newTestLog(tb, 1)
	l.patients, l.compact = max(1, n/10), compact
	if err := os.MkdirAll(filepath.Join(dir, CheckpointsDir), 0o755); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, EntriesFile))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 4<<20)
	var tree frontier
	var size int64
	for i := range n {
		e := l.next(i)
		e.Index, e.Origin = uint64(i), l.origin
		if i > 0 {
			e.Prev = b64(l.prev)
		}
		b, err := e.Marshal()
		if err != nil {
			tb.Fatalf("Marshal: %v", err)
		}
		w.Write(b)
		w.WriteByte('\n')
		size += int64(len(b)) + 1
		l.prev = sha256Sum(b)
		tree.appendNode(node{index: int64(i), hash: tlog.RecordHash(b)})
		if s := i + 1; s%benchEvery == 0 || s == n {
			msg := l.signedCheckpoint(int64(s), tree.root())
			writeFile(tb, filepath.Join(dir, CheckpointsDir, strconv.Itoa(s)), msg)
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	// The key last: its presence marks a complete export for -benchdir.
	writeFile(tb, filepath.Join(dir, VerifierKeyFile), []byte(l.vkey+"\n"))
	return size
}

// BenchmarkVerifyExport verifies generated exports of one million entries. Compare with the
// hashing alone: each entry costs two SHA-256 passes over its bytes (chain and leaf) and one
// node hash.
//
//	go test -run '^$' -bench BenchmarkVerifyExport -benchtime 5x -count 6 ./internal/accesslog/verify/
func BenchmarkVerifyExport(b *testing.B) {
	for _, bc := range []struct {
		name    string
		compact bool
	}{
		{"1M/300B", true},
		{"1M/520B", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 1_000_000
			dir, size := bigExport(b, n, bc.compact)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				rep, err := VerifyExport(b.Context(), dir, Options{})
				if err != nil {
					b.Fatalf("VerifyExport: %v", err)
				}
				if rep.Entries != n {
					b.Fatalf("VerifyExport: %d entries, want %d", rep.Entries, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// TestVerify10M times VerifyExport on ten million entries (behind -verify10m).
func TestVerify10M(t *testing.T) {
	if !*verify10M {
		t.Skip("needs -verify10m: generates a 10-million-entry export (about 3.2 GB)")
	}
	const n = 10_000_000
	dir, size := bigExport(t, n, true)
	for run := range 3 {
		runtime.GC()
		start, cpu := time.Now(), cpuTime()
		rep, err := VerifyExport(t.Context(), dir, Options{})
		elapsed, cpu := time.Since(start), cpuTime()-cpu
		if err != nil {
			t.Fatalf("VerifyExport: %v", err)
		}
		if rep.Entries != n {
			t.Fatalf("VerifyExport: %d entries, want %d", rep.Entries, n)
		}
		t.Logf("run %d: %d entries (%d bytes), %d checkpoints, %d patients in %v (goal: ≤ 10 s): %.2f M entries/s, %.0f MB/s; CPU %v, %.2f of %d CPUs busy",
			run+1, rep.Entries, size, rep.Checkpoints, rep.Patients, elapsed.Round(time.Millisecond),
			float64(n)/elapsed.Seconds()/1e6, float64(size)/elapsed.Seconds()/1e6,
			cpu.Round(time.Millisecond), cpu.Seconds()/elapsed.Seconds(), runtime.GOMAXPROCS(0))
	}
}
