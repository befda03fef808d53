package accesslog

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
)

// benchPatients is how many distinct patients the benchmark entries are about.
const benchPatients = 10000

// benchEntry returns a lean data-access entry of about 300 bytes once the log has filled it in.
func benchEntry(n int, patients []string) *verify.Entry {
	return &verify.Entry{
		Event:     verify.EventDataAccess,
		Action:    "read",
		Outcome:   verify.OutcomeGranted,
		Requester: &verify.Requester{DID: "did:schakel:7Xq3yvC9KzbR1d"},
		Patient:   patients[n%len(patients)],
		TokenID:   fmt.Sprintf("tok-%08d", n),
	}
}

func benchPseudonyms() []string {
	out := make([]string, benchPatients)
	for i := range out {
		out[i] = pseudonym(1, i)
	}
	return out
}

// benchEntrySize is the size of a benchmark entry as the log writes it at a six-digit index.
func benchEntrySize(b *testing.B) int {
	e := benchEntry(1, benchPseudonyms())
	e.V, e.Origin, e.Index, e.Prev, e.Time, e.PatientSeq = verify.Version, testOrigin, 123456, strings.Repeat("A", 43)+"=", placeholderTime, 12
	raw, err := e.Marshal()
	if err != nil {
		b.Fatalf("Marshal: %v", err)
	}
	return len(raw)
}

// runAppenders spreads b.N appends over w goroutines and reports appends per second, the 50th
// and 99th percentile latency of one append, and the process's CPU time per append.
func runAppenders(b *testing.B, w int, appendOne func(n int) error) {
	var next atomic.Int64
	lat := make([][]time.Duration, w)
	var wg sync.WaitGroup
	var ru0, ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		b.Fatalf("Getrusage: %v", err)
	}
	b.ResetTimer()
	for i := range w {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				start := time.Now()
				if err := appendOne(int(n)); err != nil {
					b.Errorf("append: %v", err)
					return
				}
				lat[i] = append(lat[i], time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		b.Fatalf("Getrusage: %v", err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
}

// BenchmarkAppend measures Log.Append on disk with SyncWrites on (the store's default): every
// acknowledged append is fsynced, with its hashes, patient row and counter and the head.
func BenchmarkAppend(b *testing.B) {
	for _, w := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			db := diskDB(b, b.TempDir())
			key := newLogKey(b, testOrigin)
			l, err := New(Config{}, db, key.signer, key.vkey, testOrigin, nil)
			if err != nil {
				b.Fatalf("New: %v", err)
			}
			if err := l.Start(b.Context()); err != nil {
				b.Fatalf("Start: %v", err)
			}
			patients := benchPseudonyms()
			runAppenders(b, w, func(n int) error {
				_, err := l.Append(b.Context(), benchEntry(n, patients))
				return err
			})
			b.ReportMetric(float64(b.N)/float64(max(l.groups.Load(), 1)), "appends/group")
			if err := l.Close(b.Context()); err != nil {
				b.Fatalf("Close: %v", err)
			}
			db.Close()
		})
	}
}

// bareCommitter is the baseline BenchmarkAppend is measured against: the same group commit
// (one committer goroutine, every queued append in one transaction, no timer, a yield after
// acknowledging) on a store opened the same way, writing per append only a value of the log's
// entry size under a sequential key and two 32-byte hash rows: no validation, encoding, hashing
// or patient rows.
type bareCommitter struct {
	bdb    *badger.DB
	mu     sync.Mutex
	queue  []*bareReq
	wake   chan struct{}
	next   uint64
	hash   uint64
	value  []byte
	hash0  []byte
	groups int
}

type bareReq struct {
	done chan error
}

func (c *bareCommitter) append() error {
	r := &bareReq{done: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return <-r.done
}

func (c *bareCommitter) run(stop chan struct{}) {
	var group []*bareReq
	for {
		select {
		case <-c.wake:
		case <-stop:
			return
		}
		c.mu.Lock()
		group, c.queue = c.queue, group[:0]
		c.mu.Unlock()
		if len(group) == 0 {
			continue
		}
		txn := c.bdb.NewTransaction(true)
		var err error
		for range group {
			err = txn.Set(ns.Key(binary.BigEndian.AppendUint64([]byte("bare/e"), c.next)), c.value)
			for range 2 {
				if err == nil {
					err = txn.Set(ns.Key(binary.BigEndian.AppendUint64([]byte("bare/t"), c.hash)), c.hash0)
				}
				c.hash++
			}
			c.next++
		}
		if err == nil {
			err = txn.Commit()
		} else {
			txn.Discard()
		}
		for _, r := range group {
			r.done <- err
		}
		c.groups++
		clear(group)
		runtime.Gosched()
	}
}

// BenchmarkBareGroupCommit is the baseline for BenchmarkAppend: bare badger group commit of
// entry-sized values plus two hash rows each, on disk with SyncWrites on.
func BenchmarkBareGroupCommit(b *testing.B) {
	size := benchEntrySize(b)
	for _, w := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			db := diskDB(b, b.TempDir())
			c := &bareCommitter{bdb: db.Badger(), wake: make(chan struct{}, 1), value: make([]byte, size), hash0: make([]byte, 32)}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.run(stop)
			}()
			runAppenders(b, w, func(int) error { return c.append() })
			b.ReportMetric(float64(size), "entry-bytes")
			b.ReportMetric(float64(b.N)/float64(max(c.groups, 1)), "appends/group")
			close(stop)
			<-done
			db.Close()
		})
	}
}

// buildLog writes n benchmark entries to a log on disk through the committer's group path in
// groups of 2,000, without the queue, and returns the log (not started).
func buildLog(b *testing.B, n int) *Log {
	b.Helper()
	db := diskDB(b, b.TempDir())
	b.Cleanup(func() { db.Close() })
	key := newLogKey(b, testOrigin)
	l, err := New(Config{CheckpointEvery: 100000}, db, key.signer, key.vkey, testOrigin, nil)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(func() { l.Close(b.Context()) })
	patients := benchPseudonyms()
	const group = 2000
	reqs := make([]*request, 0, group)
	for i := 0; i < n; i += group {
		reqs = reqs[:0]
		for j := i; j < min(i+group, n); j++ {
			r, err := l.prepare(benchEntry(j, patients))
			if err != nil {
				b.Fatalf("prepare: %v", err)
			}
			reqs = append(reqs, r)
		}
		l.commitGroup(reqs)
		for _, r := range reqs {
			if r.err != nil {
				b.Fatalf("commitGroup: %v", r.err)
			}
		}
	}
	if _, err := l.makeCheckpoint(1); err != nil {
		b.Fatalf("checkpoint: %v", err)
	}
	settle(b, l)
	return l
}

// settle waits until badger's background compactions after the bulk write have stopped (the
// tables per level unchanged for three seconds), as in a log that was not just bulk-written, so
// that proofs are not measured against compactions competing for the two cores.
func settle(b *testing.B, l *Log) {
	shape := func() string { return fmt.Sprint(l.bdb.Levels()) }
	deadline := time.Now().Add(3 * time.Minute)
	last, since := shape(), time.Now()
	for time.Since(since) < 3*time.Second {
		if time.Now().After(deadline) {
			b.Fatalf("compactions still running after 3 minutes")
		}
		time.Sleep(250 * time.Millisecond)
		if s := shape(); s != last {
			last, since = s, time.Now()
		}
	}
}

// BenchmarkInclusionProof measures InclusionProof for a random entry against the whole tree of a
// log of 1M entries on disk.
func BenchmarkInclusionProof(b *testing.B) {
	const n = 1_000_000
	l := buildLog(b, n)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.InclusionProof(b.Context(), rng.Int64N(n), n); err != nil {
			b.Fatalf("InclusionProof: %v", err)
		}
	}
}

// BenchmarkConsistencyProof measures ConsistencyProof from a random earlier size to the whole
// tree of a log of 1M entries on disk.
func BenchmarkConsistencyProof(b *testing.B) {
	const n = 1_000_000
	l := buildLog(b, n)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.ConsistencyProof(b.Context(), 1+rng.Int64N(n-1), n); err != nil {
			b.Fatalf("ConsistencyProof: %v", err)
		}
	}
}
