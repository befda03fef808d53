package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// openMem opens an in-memory DB closed at the end of the test.
func openMem(t testing.TB, cfg Config) *DB {
	t.Helper()
	cfg.InMemory = true
	db, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openDir opens a DB in dir; the caller closes it.
func openDir(t testing.TB, dir string) *DB {
	t.Helper()
	db, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return db
}

func mustWrite(t testing.TB, db *DB, fill func(b *Batch)) {
	t.Helper()
	var b Batch
	fill(&b)
	if err := db.Write(t.Context(), &b); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

// get reads one key in its own View.
func get(t testing.TB, db *DB, ns Namespace, key string) ([]byte, error) {
	t.Helper()
	var v []byte
	err := db.View(t.Context(), func(tx *Txn) error {
		var err error
		v, err = tx.Get(ns, []byte(key))
		return err
	})
	return v, err
}

func TestOpenConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // empty: Open succeeds
	}{
		{name: "no dir", cfg: Config{}, wantErr: "Dir is required"},
		{name: "negative MaxValueSize", cfg: Config{InMemory: true, MaxValueSize: -1}, wantErr: "MaxValueSize"},
		{name: "huge MaxValueSize", cfg: Config{InMemory: true, MaxValueSize: 1 << 30}, wantErr: "MaxValueSize"},
		{name: "negative MemTableSize", cfg: Config{InMemory: true, MemTableSize: -1}, wantErr: "MemTableSize"},
		{name: "tiny MemTableSize", cfg: Config{InMemory: true, MemTableSize: 64 << 10}, wantErr: "MemTableSize"},
		{name: "in memory table too small for values", cfg: Config{InMemory: true, MemTableSize: 2 << 20, MaxValueSize: 1 << 20}, wantErr: "cannot hold"},
		{name: "in memory values too large", cfg: Config{InMemory: true, MaxValueSize: 1<<20 + 1}, wantErr: "in memory"},
		{name: "in memory ignores Dir", cfg: Config{InMemory: true, Dir: "/nonexistent/schakel"}},
		{name: "in memory small table for small values", cfg: Config{InMemory: true, MemTableSize: 1 << 20, MaxValueSize: 64 << 10}},
		{name: "on disk large values", cfg: Config{Dir: "(temp)", MaxValueSize: 4 << 20}},
		{name: "on disk small table", cfg: Config{Dir: "(temp)", MemTableSize: 1 << 20}},
		{name: "defaults in memory", cfg: func() Config { c := DefaultConfig(); c.InMemory = true; return c }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Dir == "(temp)" {
				tc.cfg.Dir = t.TempDir()
			}
			db, err := Open(tc.cfg)
			if tc.wantErr != "" {
				if err == nil {
					db.Close()
					t.Fatalf("Open(%+v) succeeded, want error containing %q", tc.cfg, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Open(%+v) = %v, want error containing %q", tc.cfg, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%+v): %v", tc.cfg, err)
			}
			defer db.Close()
			ns := MustNamespace("cfg")
			value := make([]byte, db.maxValueSize)
			mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("max"), value) })
			if got, err := get(t, db, ns, "max"); err != nil || len(got) != len(value) {
				t.Fatalf("Get(max) = %d bytes, %v; want %d bytes", len(got), err, len(value))
			}
			var b Batch
			b.Set(ns, []byte("over"), make([]byte, db.maxValueSize+1))
			if err := db.Write(t.Context(), &b); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Write(%d bytes) = %v, want ErrTooLarge", db.maxValueSize+1, err)
			}
		})
	}
}

func TestOpenValidatesBeforeSideEffects(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	if _, err := Open(Config{Dir: dir, MaxValueSize: -1}); err == nil {
		t.Fatalf("Open(MaxValueSize -1) succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat(%s) after a refused Open = %v, want not exist", dir, err)
	}
}

func TestFormatVersion(t *testing.T) {
	tests := []struct {
		name string
		// tamper changes the closed database through raw badger.
		tamper   func(txn *badger.Txn) error
		wantErr  error
		wantText []string
	}{
		{
			name:   "same version",
			tamper: func(*badger.Txn) error { return nil },
		},
		{
			name:     "version 2",
			tamper:   func(txn *badger.Txn) error { return txn.Set(formatVersionKey, []byte("2")) },
			wantErr:  ErrFormatVersion,
			wantText: []string{"version 2 on disk", "reads version 1"},
		},
		{
			name:     "not a number",
			tamper:   func(txn *badger.Txn) error { return txn.Set(formatVersionKey, []byte("x")) },
			wantErr:  ErrFormatVersion,
			wantText: []string{`"x"`, "reads version 1"},
		},
		{
			name:     "data without version",
			tamper:   func(txn *badger.Txn) error { return txn.Delete(formatVersionKey) },
			wantErr:  ErrFormatVersion,
			wantText: []string{"no format version"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDir(t, dir)
			mustWrite(t, db, func(b *Batch) { b.Set(MustNamespace("p"), []byte("kept"), []byte("yes")) })
			if err := db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			raw, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatalf("badger.Open: %v", err)
			}
			if err := raw.Update(tc.tamper); err != nil {
				t.Fatalf("badger Update: %v", err)
			}
			if err := raw.Close(); err != nil {
				t.Fatalf("badger Close: %v", err)
			}
			db, err = Open(Config{Dir: dir})
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				defer db.Close()
				if v, err := get(t, db, MustNamespace("p"), "kept"); err != nil || string(v) != "yes" {
					t.Fatalf("Get(kept) after reopen = %q, %v; want yes", v, err)
				}
				return
			}
			if err == nil {
				db.Close()
				t.Fatalf("reopen succeeded, want %v", tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("reopen = %v, want %v", err, tc.wantErr)
			}
			for _, s := range append(tc.wantText, dir) {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("reopen = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestClose(t *testing.T) {
	db := openDir(t, t.TempDir())
	ns := MustNamespace("c")
	mustWrite(t, db, func(b *Batch) { b.Set(ns, []byte("k"), []byte("v")) })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := db.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatalf("Close again: %v", err)
	}
	if !db.Badger().IsClosed() {
		t.Fatalf("Badger().IsClosed() = false after Close")
	}
	ctx := t.Context()
	noop := func(*Txn) error { return nil }
	calls := []struct {
		name string
		call func() error
	}{
		{"Write", func() error { var b Batch; b.Set(ns, []byte("k"), nil); return db.Write(ctx, &b) }},
		{"Write empty", func() error { return db.Write(ctx, &Batch{}) }},
		{"View", func() error { return db.View(ctx, noop) }},
		{"Update", func() error { return db.Update(ctx, noop) }},
		{"Sync", db.Sync},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrClosed) {
				t.Fatalf("%s after Close = %v, want ErrClosed", tc.name, err)
			}
		})
	}
}

func TestSync(t *testing.T) {
	off := false
	db, err := Open(Config{Dir: t.TempDir(), SyncWrites: &off})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	mustWrite(t, db, func(b *Batch) { b.Set(MustNamespace("s"), []byte("k"), []byte("v")) })
	if err := db.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// recordHandler keeps the records it is given at or above level.
type recordHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestBadgerLogger(t *testing.T) {
	tests := []struct {
		name      string
		handler   slog.Level
		log       func(l slogLogger)
		wantLevel slog.Level
		wantMsg   string // empty: nothing logged
	}{
		{"error", slog.LevelDebug, func(l slogLogger) { l.Errorf("disk %s\n", "full") }, slog.LevelError, "disk full"},
		{"warning", slog.LevelDebug, func(l slogLogger) { l.Warningf("slow %d", 3) }, slog.LevelWarn, "slow 3"},
		{"info as debug", slog.LevelDebug, func(l slogLogger) { l.Infof("flushed\n") }, slog.LevelDebug, "flushed"},
		{"debug", slog.LevelDebug, func(l slogLogger) { l.Debugf("x=%v", 1) }, slog.LevelDebug, "x=1"},
		{"info dropped at info level", slog.LevelInfo, func(l slogLogger) { l.Infof("flushed") }, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordHandler{level: tc.handler}
			tc.log(slogLogger{l: slog.New(h)})
			if tc.wantMsg == "" {
				if len(h.recs) != 0 {
					t.Fatalf("logged %d records, want none", len(h.recs))
				}
				return
			}
			if len(h.recs) != 1 {
				t.Fatalf("logged %d records, want 1", len(h.recs))
			}
			r := h.recs[0]
			if r.Level != tc.wantLevel || r.Message != tc.wantMsg {
				t.Fatalf("record = %v %q, want %v %q", r.Level, r.Message, tc.wantLevel, tc.wantMsg)
			}
			var component string
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "component" {
					component = a.Value.String()
				}
				return true
			})
			if component != "badger" {
				t.Fatalf("record component = %q, want badger", component)
			}
		})
	}
}

func TestOpenLogsThroughSlog(t *testing.T) {
	h := &recordHandler{level: slog.LevelDebug}
	db, err := Open(Config{Dir: t.TempDir(), Logger: slog.New(h)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.recs) == 0 {
		t.Fatalf("Open and Close logged nothing through the configured slog.Logger")
	}
}
