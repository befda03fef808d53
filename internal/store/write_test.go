package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blockFirstGroup makes the committer stop before writing its first group until release is
// closed; taken is closed once it has stopped. It MUST be called before the first Write.
func blockFirstGroup(db *DB) (taken, release chan struct{}) {
	taken, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	db.testHookGroup = func(int) {
		once.Do(func() {
			close(taken)
			<-release
		})
	}
	return taken, release
}

func TestWriteConcurrentDurable(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	ns := MustNamespace("c")
	const writers = 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			var b Batch
			b.Set(ns, fmt.Appendf(nil, "w%03d-a", i), []byte("a"))
			b.Set(ns, fmt.Appendf(nil, "w%03d-b", i), []byte("b"))
			if err := db.Write(t.Context(), &b); err != nil {
				t.Errorf("Write(w%03d): %v", i, err)
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db = openDir(t, dir)
	defer db.Close()
	got := map[string]string{}
	if err := db.View(t.Context(), func(tx *Txn) error {
		return tx.Iterate(ns, nil, IterOptions{}, func(k, v []byte) error { got[string(k)] = string(v); return nil })
	}); err != nil {
		t.Fatalf("Iterate: %v", err)
	}
	if len(got) != 2*writers {
		t.Fatalf("after reopen %d keys, want %d", len(got), 2*writers)
	}
	for i := range writers {
		for _, part := range []string{"a", "b"} {
			if k := fmt.Sprintf("w%03d-%s", i, part); got[k] != part {
				t.Fatalf("after reopen %s = %q, want %q", k, got[k], part)
			}
		}
	}
}

func TestWriteGroups(t *testing.T) {
	db := openDir(t, t.TempDir())
	defer db.Close()
	var largest atomic.Int64
	db.testHookGroup = func(n int) {
		for {
			l := largest.Load()
			if int64(n) <= l || largest.CompareAndSwap(l, int64(n)) {
				return
			}
		}
	}
	ns := MustNamespace("g")
	const writers, each = 64, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				var b Batch
				b.Set(ns, fmt.Appendf(nil, "%02d-%02d", w, i), []byte("v"))
				if err := db.Write(t.Context(), &b); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	groups := db.groups.Load()
	t.Logf("%d writes in %d groups, largest %d", writers*each, groups, largest.Load())
	if groups >= writers*each || largest.Load() < 2 {
		t.Fatalf("%d writes took %d groups (largest %d): the committer does not group", writers*each, groups, largest.Load())
	}
}

func TestWriteRefused(t *testing.T) {
	ns := MustNamespace("r")
	tests := []struct {
		name    string
		fill    func(b *Batch)
		wantErr error // nil: any error
	}{
		{"value too large", func(b *Batch) {
			b.Set(ns, []byte("small"), []byte("ok"))
			b.Set(ns, []byte("big"), make([]byte, 17))
		}, ErrTooLarge},
		{"TTL value too large", func(b *Batch) {
			b.Set(ns, []byte("small"), []byte("ok"))
			b.SetTTL(ns, []byte("big"), make([]byte, 17), time.Minute)
		}, ErrTooLarge},
		{"key too large", func(b *Batch) {
			b.Set(ns, []byte("small"), []byte("ok"))
			b.Set(ns, make([]byte, maxKeySize), nil)
		}, ErrTooLarge},
		{"zero namespace", func(b *Batch) {
			b.Set(ns, []byte("small"), []byte("ok"))
			b.Delete(Namespace{}, []byte("k"))
		}, errZeroNamespace},
		{"non-positive TTL", func(b *Batch) {
			b.Set(ns, []byte("small"), []byte("ok"))
			b.SetTTL(ns, []byte("k"), nil, 0)
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openMem(t, Config{MaxValueSize: 16})
			var b Batch
			tc.fill(&b)
			err := db.Write(t.Context(), &b)
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("Write = %v, want %v", err, tc.wantErr)
			}
			if ok, err := hasKey(t, db, ns, "small"); err != nil || ok {
				t.Fatalf("Has(small) after a refused Write = %v, %v; want false", ok, err)
			}
		})
	}
}

func hasKey(t *testing.T, db *DB, ns Namespace, key string) (bool, error) {
	t.Helper()
	var ok bool
	err := db.View(t.Context(), func(tx *Txn) error {
		var err error
		ok, err = tx.Has(ns, []byte(key))
		return err
	})
	return ok, err
}

func TestWriteEmpty(t *testing.T) {
	db := openMem(t, Config{})
	tests := []struct {
		name string
		b    *Batch
	}{
		{"nil", nil},
		{"zero", &Batch{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.Write(t.Context(), tc.b); err != nil {
				t.Fatalf("Write(%s batch): %v", tc.name, err)
			}
		})
	}
	if n := db.groups.Load(); n != 0 {
		t.Fatalf("empty Writes committed %d groups, want 0", n)
	}
}

func TestWriteCancelled(t *testing.T) {
	ns := MustNamespace("x")
	tests := []struct {
		name string
		// cancelWhileQueued cancels ctx while the Write waits for the blocked committer;
		// otherwise ctx is cancelled before Write is called.
		cancelWhileQueued bool
	}{
		{name: "before Write"},
		{name: "while queued", cancelWhileQueued: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openMem(t, Config{})
			taken, release := blockFirstGroup(db)
			// A first Write occupies the committer, so the second cannot be taken.
			first := make(chan error, 1)
			go func() {
				var b Batch
				b.Set(ns, []byte("first"), []byte("1"))
				first <- db.Write(t.Context(), &b)
			}()
			<-taken

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if !tc.cancelWhileQueued {
				cancel()
			}
			second := make(chan error, 1)
			go func() {
				var b Batch
				b.Set(ns, []byte("second"), []byte("2"))
				second <- db.Write(ctx, &b)
			}()
			if tc.cancelWhileQueued {
				select {
				case err := <-second:
					t.Fatalf("Write returned %v while the committer was blocked", err)
				case <-time.After(50 * time.Millisecond):
				}
				cancel()
			}
			if err := <-second; !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Write = %v, want context.Canceled", err)
			}
			close(release)
			if err := <-first; err != nil {
				t.Fatalf("first Write: %v", err)
			}
			if ok, err := hasKey(t, db, ns, "second"); err != nil || ok {
				t.Fatalf("Has(second) = %v, %v; the cancelled Write wrote", ok, err)
			}
			if ok, err := hasKey(t, db, ns, "first"); err != nil || !ok {
				t.Fatalf("Has(first) = %v, %v; want true", ok, err)
			}
		})
	}
}

// queueBehindBlockedCommitter starts one Write per batch while the committer is blocked, waits
// until they are all queued, releases the committer and returns each Write's result. The batches
// then form one group (beyond the first, blocked one).
func queueBehindBlockedCommitter(t *testing.T, db *DB, batches []*Batch) []error {
	t.Helper()
	taken, release := blockFirstGroup(db)
	ns := MustNamespace("block")
	blocker := make(chan error, 1)
	go func() {
		var b Batch
		b.Set(ns, []byte("blocker"), nil)
		blocker <- db.Write(t.Context(), &b)
	}()
	<-taken
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() { errs[i] = db.Write(t.Context(), b) })
	}
	// The Writes block on the unbuffered queue; give them time to reach it.
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	if err := <-blocker; err != nil {
		t.Fatalf("blocking Write: %v", err)
	}
	return errs
}

func TestWriteSplitsLargeGroups(t *testing.T) {
	// A 1 MiB memtable lets badger commit about 150 KiB per transaction: about 18 of these
	// 8 KiB batches.
	db := openMem(t, Config{MemTableSize: 1 << 20, MaxValueSize: 16 << 10})
	ns := MustNamespace("s")
	const n = 100
	batches := make([]*Batch, n)
	for i := range batches {
		batches[i] = &Batch{}
		batches[i].Set(ns, fmt.Appendf(nil, "%03d", i), make([]byte, 8<<10))
	}
	errs := queueBehindBlockedCommitter(t, db, batches)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Write(%03d): %v", i, err)
		}
	}
	count := 0
	if err := db.View(t.Context(), func(tx *Txn) error {
		return tx.Iterate(ns, nil, IterOptions{KeysOnly: true}, func(_, _ []byte) error { count++; return nil })
	}); err != nil {
		t.Fatalf("Iterate: %v", err)
	}
	if count != n {
		t.Fatalf("%d keys after %d Writes", count, n)
	}
	// 1 blocked group + at least ceil(100/18) transactions for the rest.
	if got := db.groups.Load(); got < 1+n/18 {
		t.Fatalf("%d batches of 8 KiB committed in %d transactions, want them split", n, got)
	}
}

func TestWriteOversizedBatchFailsAlone(t *testing.T) {
	db := openMem(t, Config{MemTableSize: 1 << 20, MaxValueSize: 16 << 10})
	ns := MustNamespace("o")
	big := &Batch{}
	for i := range 20 { // 320 KiB: more than one transaction holds
		big.Set(ns, fmt.Appendf(nil, "big-%02d", i), make([]byte, 16<<10))
	}
	batches := []*Batch{{}, {}, big, {}, {}}
	for i, b := range batches {
		if b != big {
			b.Set(ns, fmt.Appendf(nil, "small-%d", i), []byte("v"))
		}
	}
	errs := queueBehindBlockedCommitter(t, db, batches)
	for i, err := range errs {
		if batches[i] == big {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Write(oversized batch) = %v, want ErrTooLarge", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Write(small-%d) in the oversized batch's group: %v", i, err)
		}
		if ok, err := hasKey(t, db, ns, fmt.Sprintf("small-%d", i)); err != nil || !ok {
			t.Fatalf("Has(small-%d) = %v, %v; want true", i, ok, err)
		}
	}
	if ok, err := hasKey(t, db, ns, "big-00"); err != nil || ok {
		t.Fatalf("Has(big-00) = %v, %v; part of the oversized batch was written", ok, err)
	}
}

func TestCloseDrainsWrites(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	ns := MustNamespace("d")
	const writers = 32
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("%02d-%06d", w, i)
				var b Batch
				b.Set(ns, []byte(key), []byte("v"))
				err := db.Write(context.Background(), &b)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Write(%s): %v", key, err)
					return
				}
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	db = openDir(t, dir)
	defer db.Close()
	for _, key := range acked {
		if ok, err := hasKey(t, db, ns, key); err != nil || !ok {
			t.Fatalf("acknowledged write %s lost across Close: Has = %v, %v", key, ok, err)
		}
	}
	t.Logf("%d acknowledged writes survived Close", len(acked))
	if len(acked) == 0 {
		t.Fatalf("no Write completed before Close")
	}
}

func TestWriteOrderWithinGroup(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("w")
	var b Batch
	b.Set(ns, []byte("k"), []byte("1"))
	b.Delete(ns, []byte("k"))
	b.Set(ns, []byte("k"), []byte("2"))
	b.Set(ns, []byte("gone"), []byte("x"))
	b.Delete(ns, []byte("gone"))
	if err := db.Write(t.Context(), &b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if v, err := get(t, db, ns, "k"); err != nil || string(v) != "2" {
		t.Fatalf("Get(k) = %q, %v; want the batch's last write 2", v, err)
	}
	if _, err := get(t, db, ns, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(gone) = %v, want ErrNotFound", err)
	}
}
