package accesslog

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

// crashChildEnv names the directory a child process appends in; set, TestCrashSafety runs as
// the child.
const crashChildEnv = "SCHAKEL_ACCESSLOG_CRASH_DIR"

// TestCrashSafety runs appends in a child process on a disk store, kills it with SIGKILL in the
// middle of a burst, reopens the store and checks that every append the child saw return is
// present with the bytes it was acknowledged with, and that chain, tree and checkpoints are
// intact (invariant 6). Three rounds append to the same log.
func TestCrashSafety(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	key := newLogKey(t, testOrigin)
	jwk, err := key.priv.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.json"), jwk, 0o600); err != nil {
		t.Fatal(err)
	}
	acked := map[int64]tlog.Hash{}
	for round := range 3 {
		want := 300 + rand.IntN(2000)
		got := runCrashChild(t, dir, want, acked)
		if got < want {
			t.Fatalf("round %d: the child acknowledged %d appends before it died, want %d", round, got, want)
		}

		db := diskDB(t, filepath.Join(dir, "db"))
		l, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil)
		if err != nil {
			t.Fatalf("round %d: New after kill: %v", round, err)
		}
		size := l.Size()
		for idx, leaf := range acked {
			if idx >= size {
				t.Fatalf("round %d: acknowledged entry %d lost: log size %d after kill", round, idx, size)
			}
			b, err := l.Entries(t.Context(), idx, idx+1)
			if err != nil {
				t.Fatalf("round %d: Entries(%d): %v", round, idx, err)
			}
			if tlog.RecordHash(b[0]) != leaf {
				t.Fatalf("round %d: entry %d differs from the one acknowledged", round, idx)
			}
		}
		x := exportLog(t, l)
		checkExport(t, x, testOrigin)
		t.Logf("round %d: %d acknowledged in total, log size %d, %d checkpoints", round, len(acked), size, len(x.checkpoints))
		if err := l.Close(t.Context()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("store Close: %v", err)
		}
	}
}

// runCrashChild starts the child, reads its acknowledgements into acked, kills it with SIGKILL
// once it has acknowledged want appends, reads what it wrote before it died and returns how many
// it acknowledged.
func runCrashChild(t *testing.T, dir string, want int, acked map[int64]tlog.Hash) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	killed := false
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		idx, err := strconv.ParseInt(f[1], 10, 64)
		raw, err2 := hex.DecodeString(f[2])
		if err != nil || err2 != nil || len(raw) != tlog.HashSize {
			t.Fatalf("child wrote %q", sc.Text())
		}
		if _, dup := acked[idx]; dup {
			t.Fatalf("child acknowledged index %d twice", idx)
		}
		acked[idx] = tlog.Hash(raw)
		n++
		if n >= want && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended by itself after %d acknowledgements: %v", n, err)
	}
	return n
}

// crashChild appends from 32 goroutines until it is killed, writing "ack <index> <leaf hash>"
// to stdout after each Append returns. It exits by itself after a minute in case the parent
// died.
func crashChild(dir string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	jwk, err := os.ReadFile(filepath.Join(dir, "key.json"))
	if err != nil {
		fail(err)
	}
	priv, err := crypto.ParsePrivateKey(jwk)
	if err != nil {
		fail(err)
	}
	signer, err := priv.NoteSigner(testOrigin)
	if err != nil {
		fail(err)
	}
	vkey, err := priv.Public().NoteVerifierKey(testOrigin)
	if err != nil {
		fail(err)
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(dir, "db")})
	if err != nil {
		fail(err)
	}
	l, err := New(Config{CheckpointEvery: 100}, db, signer, vkey, testOrigin, nil)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if err := l.Start(ctx); err != nil {
		fail(err)
	}
	time.AfterFunc(time.Minute, func() { os.Exit(4) })
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r, err := l.Append(ctx, sampleEntry(i, pseudonym(1, (w*7+i)%50)))
				if err != nil {
					fail(err)
				}
				mu.Lock()
				_, err = fmt.Fprintf(os.Stdout, "ack %d %x\n", r.Index, r.LeafHash[:])
				mu.Unlock()
				if err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
}
