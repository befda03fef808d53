package crypto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// KeyStore keeps private keys by name. It is small so that an HSM or Vault backend can implement
// it later. Implementations MUST be safe for concurrent use and MUST NOT overwrite a key.
type KeyStore interface {
	// Put stores k under name. A name already present is ErrExists.
	Put(ctx context.Context, name string, k *PrivateKey) error
	// Get returns the key stored under name, or ErrNotFound.
	Get(ctx context.Context, name string) (*PrivateKey, error)
	// List returns the names of all stored keys in lexical order.
	List(ctx context.Context) ([]string, error)
}

var (
	_ KeyStore = (*FileKeyStore)(nil)
	_ KeyStore = (*MemKeyStore)(nil)
)

// maxKeyName is the longest key name a KeyStore accepts.
const maxKeyName = 128

// keyFileExt is the extension of key files in a FileKeyStore.
const keyFileExt = ".jwk"

// checkName enforces the key-name rule [A-Za-z0-9._-]{1,128} without "..": names become file
// names, so they MUST NOT be able to leave the directory or collide with temporary files.
func checkName(name string) error {
	if len(name) == 0 || len(name) > maxKeyName {
		return fmt.Errorf("%w: key name of %d bytes, want 1 to %d", ErrKey, len(name), maxKeyName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: key name %q: byte 0x%02x not allowed", ErrKey, name, c)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: key name %q contains \"..\"", ErrKey, name)
	}
	return nil
}

// FileKeyStore stores each key as <dir>/<name>.jwk, a private JWK with mode 0600 in a directory
// with mode 0700. Writes are atomic and durable: a key is written to a temporary file, synced,
// linked to its name and the directory synced, so a crash leaves either no key or the whole key.
// Linking rather than renaming means a concurrent Put of the same name, even from another
// process, can never replace a key: the loser gets ErrExists.
type FileKeyStore struct {
	dir string
}

// NewFileKeyStore opens the key store in dir, creating it with mode 0700 if needed. It refuses a
// directory that group or others can access, since every key in it is secret; the error wraps
// fs.ErrPermission.
func NewFileKeyStore(dir string) (*FileKeyStore, error) {
	if dir == "" {
		return nil, errors.New("new file key store: empty directory name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("new file key store: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("new file key store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("new file key store: %s is not a directory", dir)
	}
	if err := checkPrivate(dir, fi.Mode()); err != nil {
		return nil, fmt.Errorf("new file key store: %w", err)
	}
	return &FileKeyStore{dir: dir}, nil
}

// checkPrivate refuses a file mode that grants group or others any access. Windows has no such
// mode bits, so it is not checked there.
func checkPrivate(path string, mode fs.FileMode) error {
	if runtime.GOOS == "windows" || mode.Perm()&0o077 == 0 {
		return nil
	}
	return fmt.Errorf("%s has mode %04o, allowing group or other access: %w", path, mode.Perm(), fs.ErrPermission)
}

func (s *FileKeyStore) path(name string) string {
	return filepath.Join(s.dir, name+keyFileExt)
}

// Put stores k under name. A name already present is ErrExists.
func (s *FileKeyStore) Put(ctx context.Context, name string, k *PrivateKey) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("put key: %w", err)
	}
	if k == nil || k.pub == nil {
		return fmt.Errorf("put key %q: %w: nil key", name, ErrKey)
	}
	data, err := k.MarshalJSON()
	if err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	// The temporary name cannot collide with a key file: it does not end in keyFileExt.
	f, err := os.CreateTemp(s.dir, ".put-*.tmp")
	if err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("put key %q: remove temporary file: %w", name, rerr)
		}
	}()
	if err := writeSynced(f, data); err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	if err := os.Link(tmp, s.path(name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put key %q: %w", name, ErrExists)
		}
		return fmt.Errorf("put key %q: %w", name, err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("put key %q: remove temporary file: %w", name, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	return nil
}

// writeSynced writes data to f with mode 0600, syncs and closes it.
func writeSynced(f *os.File, data []byte) error {
	// CreateTemp already uses 0600 less the umask; set it exactly so the file is never wider and
	// its owner can always read it back.
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Get returns the key stored under name, or ErrNotFound. It refuses a key file that is not a
// regular file (a symlink, say) or whose mode lets group or others read it: such a key may have
// leaked, and an operator MUST look at it. That error wraps fs.ErrPermission.
func (s *FileKeyStore) Get(ctx context.Context, name string) (*PrivateKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("get key: %w", err)
	}
	p := s.path(name)
	lfi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get key %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	if !lfi.Mode().IsRegular() {
		return nil, fmt.Errorf("get key %q: %s is not a regular file: %w", name, p, fs.ErrPermission)
	}
	if err := checkPrivate(p, lfi.Mode()); err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	defer f.Close()
	// The file checked above must be the file opened, not one swapped in between.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	if !os.SameFile(lfi, fi) {
		return nil, fmt.Errorf("get key %q: %s changed while opening: %w", name, p, fs.ErrPermission)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSize+1))
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	return k, nil
}

// List returns the names of all stored keys in lexical order.
func (s *FileKeyStore) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	var names []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), keyFileExt)
		if !ok || !e.Type().IsRegular() || checkName(name) != nil {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// MemKeyStore is an in-memory KeyStore for tests. It applies the same name rules as
// FileKeyStore.
type MemKeyStore struct {
	mu   sync.Mutex
	keys map[string]*PrivateKey
}

// NewMemKeyStore returns an empty MemKeyStore.
func NewMemKeyStore() *MemKeyStore {
	return &MemKeyStore{keys: make(map[string]*PrivateKey)}
}

// Put stores k under name. A name already present is ErrExists.
func (s *MemKeyStore) Put(ctx context.Context, name string, k *PrivateKey) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put key %q: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("put key: %w", err)
	}
	if k == nil || k.pub == nil {
		return fmt.Errorf("put key %q: %w: nil key", name, ErrKey)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[name]; ok {
		return fmt.Errorf("put key %q: %w", name, ErrExists)
	}
	s.keys[name] = k
	return nil
}

// Get returns the key stored under name, or ErrNotFound.
func (s *MemKeyStore) Get(ctx context.Context, name string) (*PrivateKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get key %q: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("get key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[name]
	if !ok {
		return nil, fmt.Errorf("get key %q: %w", name, ErrNotFound)
	}
	return k, nil
}

// List returns the names of all stored keys in lexical order.
func (s *MemKeyStore) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.keys))
	for name := range s.keys {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// WriteSecretFile writes data to path atomically and durably with mode 0600: a temporary file is
// written and synced, renamed over path, and the directory synced. For key material and state that
// lives beside it (a node's identity key, a register's state).
func WriteSecretFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := writeSynced(f, data); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}
