package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/schakel-health/schakel/internal/store"
)

// openIndex returns an index in a fresh in-memory store, closed when the test ends.
func openIndex(tb testing.TB) *Index {
	tb.Helper()
	return openIndexConfig(tb, store.Config{InMemory: true})
}

func openIndexConfig(tb testing.TB, cfg store.Config) *Index {
	tb.Helper()
	db, err := store.Open(cfg)
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	idx, err := NewIndex(db)
	if err != nil {
		tb.Fatalf("NewIndex: %v", err)
	}
	return idx
}

// addItems adds items through Add, in transactions of up to 500 items.
func addItems(tb testing.TB, idx *Index, items []Item) {
	tb.Helper()
	addBatches(tb, idx, items, 500)
}

// addBatches adds items through Add, in transactions of up to batch items.
func addBatches(tb testing.TB, idx *Index, items []Item, batch int) {
	tb.Helper()
	for start := 0; start < len(items); start += batch {
		part := items[start:min(start+batch, len(items))]
		err := idx.db.Update(context.Background(), func(tx *store.Txn) error {
			for _, it := range part {
				if _, err := idx.Add(tx, it); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("Add: %v", err)
		}
	}
}

// loadBatch keeps one batch of the loader well inside a badger transaction of the smallest
// (in-memory, 8 MiB memtable) store.
const loadBatch = 5000

// load writes the rows Add would write for items (distinct), directly and in large batches:
// the benchmarks need indexes of a million items. TestLoadMatchesAdd checks it against Add.
func load(tb testing.TB, idx *Index, items []Item) {
	tb.Helper()
	keys := make([]key, len(items))
	for i, it := range items {
		keys[i] = it.key()
	}
	slices.SortFunc(keys, func(a, b key) int { return bytes.Compare(a[:], b[:]) })
	var b store.Batch
	flush := func() {
		if err := idx.db.Write(context.Background(), &b); err != nil {
			tb.Fatalf("load: Write: %v", err)
		}
		b = store.Batch{}
	}
	put := func(k, v []byte) {
		b.Set(ns, k, v)
		if b.Len() == loadBatch {
			flush()
		}
	}
	for i := range keys {
		put(rowKey(itemLevel, &keys[i]), nil)
	}
	for l := 0; l <= leafLevel; l++ {
		p := prefixLen[l]
		for i := 0; i < len(keys); {
			var a acc
			j := i
			for ; j < len(keys) && bytes.Equal(keys[j][:p], keys[i][:p]); j++ {
				a.addItem((*[32]byte)(keys[j][8:]))
			}
			put(rowKey(l, &keys[i]), encodeRow(&a))
			i = j
		}
	}
	flush()
}

// checkRows recomputes every summary row from the items and compares it with the stored rows.
func checkRows(tb testing.TB, idx *Index) {
	tb.Helper()
	want := map[string]acc{}
	got := map[string]acc{}
	err := idx.db.View(context.Background(), func(tx *store.Txn) error {
		return tx.Iterate(ns, nil, store.IterOptions{}, func(k, v []byte) error {
			switch {
			case bytes.Equal(k, versionKey):
				return nil
			case k[0] == itemLevel:
				ik := key(k[1:])
				for l := 0; l <= leafLevel; l++ {
					a := want[string(rowKey(l, &ik))]
					a.addItem((*[32]byte)(ik[8:]))
					want[string(rowKey(l, &ik))] = a
				}
			case int(k[0]) <= leafLevel && len(k) == 1+prefixLen[k[0]]:
				a, err := decodeRow(v)
				if err != nil {
					return err
				}
				got[string(k)] = a
			default:
				return fmt.Errorf("unexpected row %x", k)
			}
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("checkRows: View: %v", err)
	}
	for k, a := range want {
		if got[k] != a {
			tb.Fatalf("row %x = %+v, recomputed from the items %+v", k, got[k], a)
		}
	}
	for k, a := range got {
		if _, ok := want[k]; !ok {
			tb.Fatalf("row %x = %+v summarises no item", k, a)
		}
	}
}

// timeSpan says how item times are drawn.
type timeSpan struct {
	from, width uint64
}

var (
	oneSecond = timeSpan{from: 1_750_000_000, width: 1}
	oneYear   = timeSpan{from: 1_720_000_000, width: 365 * 86400}
	years     = timeSpan{from: 1_000_000_000, width: 30 * 365 * 86400}
)

func randItems(rng *rand.Rand, n int, ts timeSpan) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i].Time = ts.from + rng.Uint64N(ts.width)
		for j := 0; j < 32; j += 8 {
			v := rng.Uint64()
			for b := range 8 {
				items[i].ID[j+b] = byte(v >> (8 * b))
			}
		}
	}
	return items
}

// outcome is what one reconciliation did.
type outcome struct {
	missing, extra []Item
	rounds         int
	bytes          int // both directions
	maxMessage     int
	complete       bool
}

// server answers a request; tests wrap Index.Respond to play a hostile server.
type server func(ctx context.Context, req *Message) (*Message, error)

// reconcileWith runs a session of client against srv, passing every message through its
// encoding and checking that the encoding round-trips byte for byte.
func reconcileWith(ctx context.Context, client *Index, srv server) (outcome, error) {
	return drive(ctx, client, srv, wire)
}

// carry takes a message from one side to the other.
type carry func(m *Message, o *outcome) (*Message, error)

// direct hands a message over as it is, so that Session.Next sees exactly what a test built.
func direct(m *Message, _ *outcome) (*Message, error) { return m, nil }

// drive runs a session of client against srv; requests go through the encoding, answers
// through answers.
func drive(ctx context.Context, client *Index, srv server, answers carry) (outcome, error) {
	var o outcome
	s := NewSession(client)
	req, err := s.Start(ctx)
	if err != nil {
		return o, fmt.Errorf("Start: %w", err)
	}
	for range 2 * MaxRounds {
		rb, err := wire(req, &o)
		if err != nil {
			return o, fmt.Errorf("request: %w", err)
		}
		resp, err := srv(ctx, rb)
		if err != nil {
			return o, fmt.Errorf("Respond: %w", err)
		}
		if resp, err = answers(resp, &o); err != nil {
			return o, fmt.Errorf("answer: %w", err)
		}
		o.rounds++
		next, done, err := s.Next(ctx, resp)
		if err != nil {
			return o, err
		}
		if done {
			o.missing, o.extra, o.complete = s.Missing(), s.Extra(), s.Complete()
			return o, nil
		}
		req = next
	}
	return o, errors.New("session did not end after 2·MaxRounds rounds")
}

// wire encodes m, decodes it again and checks the round trip, counting the bytes.
func wire(m *Message, o *outcome) (*Message, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("MarshalBinary: %w", err)
	}
	o.bytes += len(b)
	o.maxMessage = max(o.maxMessage, len(b))
	p, err := ParseMessage(b)
	if err != nil {
		return nil, fmt.Errorf("ParseMessage: %w", err)
	}
	b2, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("MarshalBinary of the parsed message: %w", err)
	}
	if !bytes.Equal(b, b2) {
		return nil, errors.New("encoding does not round-trip")
	}
	return p, nil
}

// minus returns the items of a not in b, sorted.
func minus(a, b []Item) []Item {
	in := make(map[Item]bool, len(b))
	for _, it := range b {
		in[it] = true
	}
	var out []Item
	for _, it := range a {
		if !in[it] {
			out = append(out, it)
		}
	}
	slices.SortFunc(out, Item.Compare)
	return out
}

// pair builds a client and a server that share common and each hold their own extra items.
func pair(tb testing.TB, common, onlyClient, onlyServer []Item, fill func(testing.TB, *Index, []Item)) (client, srv *Index) {
	client, srv = openIndex(tb), openIndex(tb)
	fill(tb, client, slices.Concat(common, onlyClient))
	fill(tb, srv, slices.Concat(common, onlyServer))
	return client, srv
}
