package store

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// benchValueSize is about the size of an access log entry.
const benchValueSize = 256

// openBench opens a DB on the real disk with SyncWrites on (the default).
func openBench(b *testing.B) *DB {
	b.Helper()
	db, err := Open(Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// runWriters spreads b.N writes over w goroutines, each write a distinct key, and reports
// writes per second of measured time.
func runWriters(b *testing.B, w int, write func(key []byte) error) {
	var next atomic.Uint64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range w {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > uint64(b.N) {
					return
				}
				if err := write(binary.BigEndian.AppendUint64(nil, i)); err != nil {
					b.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkWrite measures the group committer on disk, one single-key Batch per Write, with an
// fsync for every group.
func BenchmarkWrite(b *testing.B) {
	for _, w := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			db := openBench(b)
			ns := MustNamespace("bench")
			value := make([]byte, benchValueSize)
			runWriters(b, w, func(key []byte) error {
				var batch Batch
				batch.Set(ns, key, value)
				return db.Write(b.Context(), &batch)
			})
			b.ReportMetric(float64(b.N)/float64(db.groups.Load()), "writes/group")
		})
	}
}

// BenchmarkBadgerUpdate is the baseline: one badger Update, so one fsync, per write, on a
// database opened with the same options as BenchmarkWrite's.
func BenchmarkBadgerUpdate(b *testing.B) {
	for _, w := range []int{64} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			bdb := openBench(b).Badger()
			ns := MustNamespace("bench")
			value := make([]byte, benchValueSize)
			runWriters(b, w, func(key []byte) error {
				return bdb.Update(func(txn *badger.Txn) error { return txn.Set(ns.Key(key), value) })
			})
		})
	}
}
