package reconcile

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/schakel-health/schakel/internal/store"
)

// BenchmarkAdd measures Add inside store.Update transactions of batch items each, in memory
// (the cost of the index itself) and on disk with SyncWrites (one fsync a transaction).
func BenchmarkAdd(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cfg   func(b *testing.B) store.Config
		batch int
	}{
		{"memory/batch=1", memConfig, 1},
		{"memory/batch=1000", memConfig, 1000},
		{"disk/batch=1000", func(b *testing.B) store.Config { return store.Config{Dir: b.TempDir()} }, 1000},
	} {
		b.Run(tc.name, func(b *testing.B) {
			idx := openIndexConfig(b, tc.cfg(b))
			rng := rand.New(rand.NewPCG(41, 42))
			items := randItems(rng, b.N, oneYear)
			b.ResetTimer()
			addBatches(b, idx, items, tc.batch)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

func memConfig(*testing.B) store.Config {
	return store.Config{InMemory: true, MemTableSize: 64 << 20}
}

// million is the shared fixture of the large benchmarks: a server index of a million items over
// a year, and a client index holding the same but for 500 of the server's, plus 500 of its own.
var million struct {
	once        sync.Once
	client, srv *Index
	err         error
}

const millionN = 1_000_000

func millionIndexes(b *testing.B) (client, srv *Index) {
	if testing.Short() {
		b.Skip("builds two indexes of a million items")
	}
	million.once.Do(func() {
		rng := rand.New(rand.NewPCG(51, 52))
		all := randItems(rng, millionN+500, oneYear)
		open := func(items []Item) *Index {
			// Not closed: the fixture lives as long as the benchmark binary.
			db, err := store.Open(store.Config{InMemory: true, MemTableSize: 64 << 20})
			if err != nil {
				million.err = err
				return nil
			}
			idx, err := NewIndex(db)
			if err != nil {
				million.err = err
				return nil
			}
			load(b, idx, items)
			// Finish the compactions the load started, so they do not run during the timing.
			if err := db.Badger().Flatten(2); err != nil {
				million.err = err
			}
			return idx
		}
		million.srv = open(all[:millionN])
		million.client = open(slices.Concat(all[:millionN-500], all[millionN:]))
	})
	if million.err != nil {
		b.Fatalf("million-item fixture: %v", million.err)
	}
	return million.client, million.srv
}

// BenchmarkRespond measures the server's work on a million items: a request from a client in
// sync (one round trip's worth), and the first split of a client that differs.
func BenchmarkRespond(b *testing.B) {
	client, srv := millionIndexes(b)
	for _, tc := range []struct {
		name string
		from *Index
	}{
		{"in-sync", srv},
		{"differs", client},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req, err := NewSession(tc.from).Start(b.Context())
			if err != nil {
				b.Fatalf("Start: %v", err)
			}
			var size int
			for b.Loop() {
				resp, err := srv.Respond(b.Context(), req)
				if err != nil {
					b.Fatalf("Respond: %v", err)
				}
				size = resp.size()
			}
			b.ReportMetric(float64(size), "answer-bytes")
		})
	}
}

// BenchmarkReconcile runs whole sessions with d = 1000 differences (500 each way) among a
// million items, messages encoded and decoded, and reports the bytes and round trips of one.
func BenchmarkReconcile(b *testing.B) {
	client, srv := millionIndexes(b)
	var o outcome
	for b.Loop() {
		var err error
		if o, err = reconcileWith(b.Context(), client, srv.Respond); err != nil {
			b.Fatalf("reconcile: %v", err)
		}
	}
	if !o.complete || len(o.missing) != 500 || len(o.extra) != 500 {
		b.Fatalf("complete=%v missing=%d extra=%d, want true 500 500", o.complete, len(o.missing), len(o.extra))
	}
	b.ReportMetric(float64(o.bytes), "bytes/op")
	b.ReportMetric(float64(o.rounds), "rounds/op")
	b.ReportMetric(float64(o.maxMessage), "max-message-bytes")
}

// BenchmarkCatchUp runs the session of a client that holds nothing against servers of growing
// size: one session fetches at most what MaxRounds answers of MaxMessageSize carry.
func BenchmarkCatchUp(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			srv, client := openIndexConfig(b, memConfig(b)), openIndex(b)
			load(b, srv, randItems(rand.New(rand.NewPCG(61, 62)), n, oneYear))
			var o outcome
			for b.Loop() {
				var err error
				if o, err = reconcileWith(b.Context(), client, srv.Respond); err != nil {
					b.Fatalf("reconcile: %v", err)
				}
			}
			if !o.complete || len(o.missing) != n {
				b.Fatalf("complete=%v missing=%d, want true %d", o.complete, len(o.missing), n)
			}
			b.ReportMetric(float64(o.bytes)/float64(n), "bytes/item")
			b.ReportMetric(float64(o.rounds), "rounds/op")
		})
	}
}
