package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestTxnGetSetDeleteHas(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("t")
	ctx := t.Context()
	if err := db.Update(ctx, func(tx *Txn) error {
		for _, k := range []string{"a", "b", "c"} {
			if err := tx.Set(ns, []byte(k), []byte("v"+k)); err != nil {
				return fmt.Errorf("Set(%s): %w", k, err)
			}
		}
		if err := tx.Set(ns, []byte("empty"), nil); err != nil {
			return fmt.Errorf("Set(empty): %w", err)
		}
		return tx.Delete(ns, []byte("b"))
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	tests := []struct {
		name    string
		key     string
		want    string
		wantHas bool
	}{
		{name: "present", key: "a", want: "va", wantHas: true},
		{name: "deleted", key: "b"},
		{name: "never written", key: "z"},
		{name: "empty value", key: "empty", want: "", wantHas: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := db.View(ctx, func(tx *Txn) error {
				v, err := tx.Get(ns, []byte(tc.key))
				switch {
				case tc.wantHas && err != nil:
					return fmt.Errorf("Get(%s): %w", tc.key, err)
				case !tc.wantHas && err != ErrNotFound:
					return fmt.Errorf("Get(%s) = %q, %v; want ErrNotFound", tc.key, v, err)
				case string(v) != tc.want:
					return fmt.Errorf("Get(%s) = %q, want %q", tc.key, v, tc.want)
				}
				has, err := tx.Has(ns, []byte(tc.key))
				if err != nil || has != tc.wantHas {
					return fmt.Errorf("Has(%s) = %v, %v; want %v", tc.key, has, err, tc.wantHas)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTxnReadOnlyAndCopies(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("t")
	ctx := t.Context()
	buf := []byte("first")
	if err := db.Update(ctx, func(tx *Txn) error {
		if err := tx.Set(ns, []byte("k"), buf); err != nil {
			return err
		}
		copy(buf, "XXXXX") // the caller may reuse its buffer once Set returns
		return nil
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if v, err := get(t, db, ns, "k"); err != nil || string(v) != "first" {
		t.Fatalf("Get(k) = %q, %v; want first", v, err)
	}
	writes := []struct {
		name string
		fn   func(tx *Txn) error
	}{
		{"Set", func(tx *Txn) error { return tx.Set(ns, []byte("x"), nil) }},
		{"SetTTL", func(tx *Txn) error { return tx.SetTTL(ns, []byte("x"), nil, time.Minute) }},
		{"Delete", func(tx *Txn) error { return tx.Delete(ns, []byte("k")) }},
	}
	for _, tc := range writes {
		t.Run(tc.name, func(t *testing.T) {
			err := db.View(ctx, tc.fn)
			if err == nil {
				t.Fatalf("%s in a View transaction succeeded", tc.name)
			}
		})
	}
}

func TestTxnMaxValueSize(t *testing.T) {
	db := openMem(t, Config{MaxValueSize: 16})
	ns := MustNamespace("t")
	err := db.Update(t.Context(), func(tx *Txn) error {
		if err := tx.Set(ns, []byte("ok"), make([]byte, 16)); err != nil {
			return fmt.Errorf("Set(16 bytes): %w", err)
		}
		return tx.Set(ns, []byte("big"), make([]byte, 17))
	})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Update with Set(17 bytes) = %v, want ErrTooLarge", err)
	}
	if _, err := get(t, db, ns, "ok"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(ok) after a failed Update = %v, want ErrNotFound", err)
	}
}

func TestIterate(t *testing.T) {
	db := openMem(t, Config{})
	ns, nsNext := MustNamespace("t"), MustNamespace("tt")
	// Keys on both sides of the "k" prefix, the key right after its range ("l"), and keys that
	// continue with 0xFF bytes, which a reverse seek to prefix+0xFF would miss.
	keys := []string{"j", "k00", "k01", "k02", "k03", "k04", "k\xff", "k\xff\xff\xff\xff\x01", "l", "l0"}
	mustWrite(t, db, func(b *Batch) {
		for _, k := range keys {
			b.Set(ns, []byte(k), []byte("v"+k))
		}
		b.Set(nsNext, []byte("k00"), []byte("other namespace"))
	})
	kAll := []string{"k00", "k01", "k02", "k03", "k04", "k\xff", "k\xff\xff\xff\xff\x01"}
	kRev := slices.Clone(kAll)
	slices.Reverse(kRev)
	allRev := slices.Clone(keys)
	slices.Reverse(allRev)
	errFn := errors.New("callback failed")

	tests := []struct {
		name    string
		prefix  string
		opt     IterOptions
		stopAt  string // fn returns ErrStop after this key
		failAt  string // fn returns errFn at this key
		want    []string
		wantErr error
	}{
		{name: "prefix", prefix: "k", want: kAll},
		{name: "whole namespace", prefix: "", want: keys},
		{name: "whole namespace reverse", prefix: "", opt: IterOptions{Reverse: true}, want: allRev},
		{name: "reverse", prefix: "k", opt: IterOptions{Reverse: true}, want: kRev},
		{name: "reverse limit", prefix: "k", opt: IterOptions{Reverse: true, Limit: 3}, want: kRev[:3]},
		{name: "seek", prefix: "k", opt: IterOptions{Seek: []byte("k02")}, want: kAll[2:]},
		{name: "seek between keys", prefix: "k", opt: IterOptions{Seek: []byte("k025")}, want: kAll[3:]},
		{name: "seek before prefix", prefix: "k", opt: IterOptions{Seek: []byte("a")}, want: kAll},
		{name: "seek after prefix", prefix: "k", opt: IterOptions{Seek: []byte("m")}, want: nil},
		{name: "reverse seek", prefix: "k", opt: IterOptions{Reverse: true, Seek: []byte("k02")}, want: []string{"k02", "k01", "k00"}},
		{name: "reverse seek between keys", prefix: "k", opt: IterOptions{Reverse: true, Seek: []byte("k025")}, want: []string{"k02", "k01", "k00"}},
		{name: "reverse seek after prefix", prefix: "k", opt: IterOptions{Reverse: true, Seek: []byte("z")}, want: kRev},
		{name: "reverse seek before prefix", prefix: "k", opt: IterOptions{Reverse: true, Seek: []byte("a")}, want: nil},
		{name: "limit", prefix: "k", opt: IterOptions{Limit: 2}, want: kAll[:2]},
		{name: "keys only", prefix: "k0", opt: IterOptions{KeysOnly: true}, want: kAll[:5]},
		{name: "stop", prefix: "k", stopAt: "k01", want: kAll[:2]},
		{name: "callback error", prefix: "k", failAt: "k01", want: kAll[:2], wantErr: errFn},
		{name: "no match", prefix: "x", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := db.View(t.Context(), func(tx *Txn) error {
				return tx.Iterate(ns, []byte(tc.prefix), tc.opt, func(k, v []byte) error {
					got = append(got, string(k))
					switch {
					case tc.opt.KeysOnly && v != nil:
						return fmt.Errorf("KeysOnly gave value %q for %q", v, k)
					case !tc.opt.KeysOnly && string(v) != "v"+string(k):
						return fmt.Errorf("value of %q = %q", k, v)
					case string(k) == tc.stopAt:
						return ErrStop
					case string(k) == tc.failAt:
						return errFn
					}
					return nil
				})
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Iterate(%q, %+v) error = %v, want %v", tc.prefix, tc.opt, err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Iterate(%q, %+v) = %q, want %q", tc.prefix, tc.opt, got, tc.want)
			}
		})
	}
}

func TestIterateSeesOwnWrites(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("t")
	mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("a"), []byte("old")) })
	var got []string
	err := db.Update(t.Context(), func(tx *Txn) error {
		if err := tx.Set(ns, []byte("b"), []byte("new")); err != nil {
			return err
		}
		return tx.Iterate(ns, nil, IterOptions{Reverse: true}, func(k, v []byte) error {
			got = append(got, string(k)+"="+string(v))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if want := []string{"b=new", "a=old"}; !slices.Equal(got, want) {
		t.Fatalf("Iterate in Update = %q, want %q", got, want)
	}
}

func TestIterateHonoursContext(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("t")
	mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("a"), nil) })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	visited := 0
	err := db.View(ctx, func(tx *Txn) error {
		cancel()
		return tx.Iterate(ns, nil, IterOptions{}, func(_, _ []byte) error { visited++; return nil })
	})
	if !errors.Is(err, context.Canceled) || visited != 0 {
		t.Fatalf("Iterate after cancel = %v with %d keys visited, want context.Canceled and none", err, visited)
	}
	if err := db.View(ctx, func(*Txn) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("View with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestTTL(t *testing.T) {
	const ttl = time.Second
	ns := MustNamespace("ttl")
	tests := []struct {
		name  string
		write func(ctx context.Context, db *DB) error
	}{
		{"Batch.SetTTL", func(ctx context.Context, db *DB) error {
			var b Batch
			b.SetTTL(ns, []byte("short"), []byte("x"), ttl)
			b.Set(ns, []byte("long"), []byte("y"))
			return db.Write(ctx, &b)
		}},
		{"Txn.SetTTL", func(ctx context.Context, db *DB) error {
			return db.Update(ctx, func(tx *Txn) error {
				if err := tx.SetTTL(ns, []byte("short"), []byte("x"), ttl); err != nil {
					return err
				}
				return tx.Set(ns, []byte("long"), []byte("y"))
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := openMem(t, Config{})
			start := time.Now()
			if err := tc.write(t.Context(), db); err != nil {
				t.Fatalf("write: %v", err)
			}
			// Expiry rounds up to whole seconds, so the entry is there for at least ttl.
			if v, err := get(t, db, ns, "short"); err != nil || string(v) != "x" {
				t.Fatalf("Get(short) right after writing = %q, %v", v, err)
			}
			for {
				_, err := get(t, db, ns, "short")
				if errors.Is(err, ErrNotFound) {
					break
				}
				if err != nil {
					t.Fatalf("Get(short): %v", err)
				}
				if time.Since(start) > ttl+2*time.Second {
					t.Fatalf("Get(short) still finds it %v after writing with TTL %v", time.Since(start), ttl)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if lived := time.Since(start); lived < ttl {
				t.Fatalf("entry with TTL %v expired after %v", ttl, lived)
			}
			var seen []string
			if err := db.View(t.Context(), func(tx *Txn) error {
				return tx.Iterate(ns, nil, IterOptions{}, func(k, _ []byte) error { seen = append(seen, string(k)); return nil })
			}); err != nil {
				t.Fatalf("Iterate: %v", err)
			}
			if !slices.Equal(seen, []string{"long"}) {
				t.Fatalf("Iterate after expiry = %q, want [long]", seen)
			}
		})
	}
}

func TestTTLMustBePositive(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("ttl")
	var b Batch
	b.SetTTL(ns, []byte("k"), []byte("v"), 0)
	if err := db.Write(t.Context(), &b); err == nil {
		t.Fatalf("Write(SetTTL 0) succeeded")
	}
	if err := db.Update(t.Context(), func(tx *Txn) error { return tx.SetTTL(ns, []byte("k"), nil, -time.Second) }); err == nil {
		t.Fatalf("Txn.SetTTL(-1s) succeeded")
	}
}

func TestExpiresAt(t *testing.T) {
	base := time.Unix(100, 0)
	tests := []struct {
		name string
		now  time.Time
		ttl  time.Duration
		want uint64
	}{
		{"whole seconds", base, time.Second, 101},
		{"rounds up", base.Add(100 * time.Millisecond), time.Second, 102},
		{"sub-second ttl", base, 10 * time.Millisecond, 101},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := expiresAt(tc.now, tc.ttl); got != tc.want {
				t.Fatalf("expiresAt(%v, %v) = %d, want %d", tc.now, tc.ttl, got, tc.want)
			}
		})
	}
}

func TestUpdateRetriesConflict(t *testing.T) {
	ns := MustNamespace("u")
	errFn := errors.New("fn failed")
	tests := []struct {
		name string
		// conflicts is how many attempts commit a conflicting write to the key they read.
		conflicts    int
		fnErr        error
		wantAttempts int
		wantErr      error
		wantValue    string
	}{
		{name: "no conflict", conflicts: 0, wantAttempts: 1, wantValue: "init+"},
		{name: "one conflict", conflicts: 1, wantAttempts: 2, wantValue: "outside1+"},
		{name: "eight conflicts", conflicts: 8, wantAttempts: 9, wantValue: "outside8+"},
		{name: "always conflicts", conflicts: 100, wantAttempts: 9, wantErr: ErrConflict, wantValue: "outside9"},
		{name: "fn error", fnErr: errFn, wantAttempts: 1, wantErr: errFn, wantValue: "init"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openMem(t, Config{})
			ctx := t.Context()
			mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("n"), []byte("init")) })
			attempts := 0
			err := db.Update(ctx, func(tx *Txn) error {
				attempts++
				v, err := tx.Get(ns, []byte("n"))
				if err != nil {
					return err
				}
				if attempts <= tc.conflicts {
					var b Batch
					b.Set(ns, []byte("n"), []byte("outside"+strconv.Itoa(attempts)))
					if err := db.Write(ctx, &b); err != nil {
						return err
					}
				}
				if tc.fnErr != nil {
					return tc.fnErr
				}
				return tx.Set(ns, []byte("n"), append(v, '+'))
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Update = %v, want %v", err, tc.wantErr)
			}
			if attempts != tc.wantAttempts {
				t.Fatalf("Update ran fn %d times, want %d", attempts, tc.wantAttempts)
			}
			if v, err := get(t, db, ns, "n"); err != nil || string(v) != tc.wantValue {
				t.Fatalf("Get(n) = %q, %v; want %q", v, err, tc.wantValue)
			}
		})
	}
}

func TestUpdateConcurrentIncrements(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("u")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := 0
	for range workers {
		wg.Go(func() {
			for range each {
				err := db.Update(context.Background(), func(tx *Txn) error {
					v, err := tx.Get(ns, []byte("n"))
					if err != nil && !errors.Is(err, ErrNotFound) {
						return err
					}
					n, _ := strconv.Atoi(string(v))
					return tx.Set(ns, []byte("n"), []byte(strconv.Itoa(n+1)))
				})
				switch {
				case err == nil:
					mu.Lock()
					committed++
					mu.Unlock()
				case !errors.Is(err, ErrConflict):
					t.Errorf("Update: %v", err)
				}
			}
		})
	}
	wg.Wait()
	v, err := get(t, db, ns, "n")
	if err != nil {
		t.Fatalf("Get(n): %v", err)
	}
	if got, _ := strconv.Atoi(string(v)); got != committed || committed == 0 {
		t.Fatalf("counter = %d after %d committed increments", got, committed)
	}
	t.Logf("%d of %d increments committed", committed, workers*each)
}

// TestOnCommit checks that commit callbacks run after a successful commit only, once per
// successful attempt, and never for a failed or read-only transaction.
func TestOnCommit(t *testing.T) {
	db := openMem(t, Config{})
	ns := MustNamespace("oncommit")
	ran := 0
	if err := db.Update(t.Context(), func(tx *Txn) error {
		tx.OnCommit(func() {
			rtx := db.Badger().NewTransaction(false)
			defer rtx.Discard()
			if _, err := rtx.Get(ns.Key([]byte("k"))); err != nil {
				t.Errorf("callback ran before the write was visible: %v", err)
			}
			ran++
		})
		return tx.Set(ns, []byte("k"), []byte("v"))
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if ran != 1 {
		t.Fatalf("callback ran %d times, want 1", ran)
	}
	if err := db.Update(t.Context(), func(tx *Txn) error {
		tx.OnCommit(func() { ran++ })
		return errors.New("abort")
	}); err == nil {
		t.Fatal("Update with an error succeeded")
	}
	if ran != 1 {
		t.Fatalf("callback of a failed transaction ran")
	}
	if got := db.View(t.Context(), func(tx *Txn) error {
		if tx.Context() == nil {
			t.Error("Context() is nil")
		}
		return nil
	}); got != nil {
		t.Fatalf("View: %v", got)
	}
}
