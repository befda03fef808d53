package crypto

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// storeContract runs the behaviour every KeyStore MUST have.
func storeContract(t *testing.T, newStore func(t *testing.T) KeyStore) {
	t.Run("round trip", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		keys := map[string]*PrivateKey{
			"node-signing":   generate(t, Ed25519, UseSign),
			"es256.sig":      generate(t, P256, UseSign),
			"agreement_2026": generate(t, P256, UseEnc),
		}
		for name, k := range keys {
			if err := s.Put(ctx, name, k); err != nil {
				t.Fatalf("Put(%s): %v", name, err)
			}
		}
		for name, k := range keys {
			got, err := s.Get(ctx, name)
			if err != nil {
				t.Fatalf("Get(%s): %v", name, err)
			}
			if !got.Public().Equal(k.Public()) {
				t.Errorf("Get(%s) returned another key", name)
			}
		}
		names, err := s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if want := []string{"agreement_2026", "es256.sig", "node-signing"}; !slices.Equal(names, want) {
			t.Errorf("List = %q, want %q", names, want)
		}
		// A key read back MUST still work.
		got, err := s.Get(ctx, "node-signing")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		tok, err := Sign(got, []byte("x"), Header{})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		if _, _, err := Verify(tok, keys["node-signing"].Public()); err != nil {
			t.Errorf("Verify: %v", err)
		}
	})
	t.Run("empty list", func(t *testing.T) {
		names, err := newStore(t).List(t.Context())
		if err != nil || len(names) != 0 {
			t.Errorf("List = %q, %v; want none", names, err)
		}
	})
	t.Run("exists", func(t *testing.T) {
		s := newStore(t)
		first := generate(t, Ed25519, UseSign)
		if err := s.Put(t.Context(), "k", first); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if err := s.Put(t.Context(), "k", generate(t, Ed25519, UseSign)); !errors.Is(err, ErrExists) {
			t.Fatalf("Put again: err = %v, want ErrExists", err)
		}
		got, err := s.Get(t.Context(), "k")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !got.Public().Equal(first.Public()) {
			t.Errorf("Get after a refused Put returned the second key")
		}
	})
	t.Run("concurrent puts of one name", func(t *testing.T) {
		s := newStore(t)
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = s.Put(t.Context(), "race", generate(t, Ed25519, UseSign)) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrExists):
				t.Errorf("Put: %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d of %d concurrent Puts succeeded, want 1", ok, n)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := newStore(t).Get(t.Context(), "missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("nil key", func(t *testing.T) {
		if err := newStore(t).Put(t.Context(), "k", nil); !errors.Is(err, ErrKey) {
			t.Errorf("Put(nil): err = %v, want ErrKey", err)
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Put(ctx, "k", generate(t, Ed25519, UseSign)); !errors.Is(err, context.Canceled) {
			t.Errorf("Put: err = %v, want context.Canceled", err)
		}
		if _, err := s.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get: err = %v, want context.Canceled", err)
		}
		if _, err := s.List(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("List: err = %v, want context.Canceled", err)
		}
	})
	t.Run("bad names", func(t *testing.T) {
		s := newStore(t)
		k := generate(t, Ed25519, UseSign)
		for _, name := range []string{
			"", "..", "a..b", "../escape", "a/b", `a\b`, "a b", "naïve", "a\x00b", "a:b",
			strings.Repeat("a", 129),
		} {
			if err := s.Put(t.Context(), name, k); !errors.Is(err, ErrKey) {
				t.Errorf("Put(%q): err = %v, want ErrKey", name, err)
			}
			if _, err := s.Get(t.Context(), name); !errors.Is(err, ErrKey) {
				t.Errorf("Get(%q): err = %v, want ErrKey", name, err)
			}
		}
		if err := s.Put(t.Context(), strings.Repeat("a", 128), k); err != nil {
			t.Errorf("Put(128-byte name): %v", err)
		}
	})
}

func TestMemKeyStore(t *testing.T) {
	storeContract(t, func(t *testing.T) KeyStore { return NewMemKeyStore() })
}

func TestFileKeyStore(t *testing.T) {
	storeContract(t, func(t *testing.T) KeyStore {
		s, err := NewFileKeyStore(filepath.Join(t.TempDir(), "keys"))
		if err != nil {
			t.Fatalf("NewFileKeyStore: %v", err)
		}
		return s
	})
}

func skipWithoutModes(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("no Unix file modes")
	}
}

func TestFileKeyStorePermissions(t *testing.T) {
	skipWithoutModes(t)
	dir := filepath.Join(t.TempDir(), "a", "keys")
	s, err := NewFileKeyStore(dir)
	if err != nil {
		t.Fatalf("NewFileKeyStore: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode = %04o, want 0700", fi.Mode().Perm())
	}
	if err := s.Put(t.Context(), "k", generate(t, Ed25519, UseSign)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	fi, err = os.Stat(filepath.Join(dir, "k.jwk"))
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only k.jwk (no temporary files left)", len(entries))
	}
}

func TestFileKeyStoreRefusesWideModes(t *testing.T) {
	skipWithoutModes(t)
	t.Run("key file 0644", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		s, err := NewFileKeyStore(dir)
		if err != nil {
			t.Fatalf("NewFileKeyStore: %v", err)
		}
		if err := s.Put(t.Context(), "k", generate(t, Ed25519, UseSign)); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if err := os.Chmod(filepath.Join(dir, "k.jwk"), 0o644); err != nil {
			t.Fatalf("Chmod: %v", err)
		}
		if _, err := s.Get(t.Context(), "k"); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Get: err = %v, want fs.ErrPermission", err)
		}
	})
	t.Run("directory 0755", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("Mkdir: %v", err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // independent of the umask
			t.Fatalf("Chmod: %v", err)
		}
		if _, err := NewFileKeyStore(dir); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("NewFileKeyStore: err = %v, want fs.ErrPermission", err)
		}
	})
	t.Run("symlinked key file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		s, err := NewFileKeyStore(dir)
		if err != nil {
			t.Fatalf("NewFileKeyStore: %v", err)
		}
		if err := s.Put(t.Context(), "real", generate(t, Ed25519, UseSign)); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if err := os.Symlink(filepath.Join(dir, "real.jwk"), filepath.Join(dir, "link.jwk")); err != nil {
			t.Fatalf("Symlink: %v", err)
		}
		if _, err := s.Get(t.Context(), "link"); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("Get: err = %v, want fs.ErrPermission", err)
		}
		names, err := s.List(t.Context())
		if err != nil || !slices.Equal(names, []string{"real"}) {
			t.Errorf("List = %q, %v; want [real]", names, err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		if _, err := NewFileKeyStore(file); err == nil {
			t.Errorf("NewFileKeyStore(file): no error")
		}
	})
	t.Run("corrupt key file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		s, err := NewFileKeyStore(dir)
		if err != nil {
			t.Fatalf("NewFileKeyStore: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bad.jwk"), []byte(`{"kty":"OKP"}`), 0o600); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		if _, err := s.Get(t.Context(), "bad"); !errors.Is(err, ErrKey) {
			t.Errorf("Get: err = %v, want ErrKey", err)
		}
	})
}

// TestFileKeyStoreReopen checks that keys survive reopening the directory.
func TestFileKeyStoreReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	s, err := NewFileKeyStore(dir)
	if err != nil {
		t.Fatalf("NewFileKeyStore: %v", err)
	}
	k := generate(t, P256, UseEnc)
	if err := s.Put(t.Context(), "agreement", k); err != nil {
		t.Fatalf("Put: %v", err)
	}
	s2, err := NewFileKeyStore(dir)
	if err != nil {
		t.Fatalf("NewFileKeyStore again: %v", err)
	}
	got, err := s2.Get(t.Context(), "agreement")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	tok, err := Encrypt([]byte("x"), k.Public())
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := Decrypt(tok, got); err != nil {
		t.Errorf("Decrypt with the reloaded key: %v", err)
	}
}
