package store

import (
	"bytes"
	"errors"
	"fmt"
)

// Namespace is a key prefix owned by one subsystem, such as MustNamespace("vc"). A key k in
// namespace n is stored as n + 0x00 + k, so that no namespace's keys are a prefix of another's
// ("a" and "ab" never see each other's keys). Names match [a-z0-9-]{1,32}; "meta" is reserved for
// the store itself.
//
// The zero Namespace is invalid: Txn methods return an error for it and Write refuses a Batch
// that used it.
type Namespace struct {
	// prefix is name + 0x00; a string so that a Namespace is immutable and comparable.
	prefix string
}

const reservedNamespace = "meta"

var errZeroNamespace = errors.New("zero Namespace")

// NewNamespace returns the namespace called name, or an error when name does not match
// [a-z0-9-]{1,32} or is reserved.
func NewNamespace(name string) (Namespace, error) {
	if len(name) == 0 || len(name) > 32 {
		return Namespace{}, fmt.Errorf("store: namespace name %q: want 1 to 32 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return Namespace{}, fmt.Errorf("store: namespace name %q: want only a-z, 0-9 and -", name)
		}
	}
	if name == reservedNamespace {
		return Namespace{}, fmt.Errorf("store: namespace name %q is reserved", name)
	}
	return Namespace{prefix: name + "\x00"}, nil
}

// MustNamespace is NewNamespace for package-level variables; it panics on a bad name.
func MustNamespace(name string) Namespace {
	n, err := NewNamespace(name)
	if err != nil {
		panic(err)
	}
	return n
}

// Name returns the namespace's name, or "" for the zero Namespace.
func (n Namespace) Name() string {
	if n.prefix == "" {
		return ""
	}
	return n.prefix[:len(n.prefix)-1]
}

// Key returns the full badger key of parts in n: the namespace prefix followed by parts joined
// with no separator, so the caller owns the encoding of its keys (fixed width or
// length-prefixed parts keep them unambiguous). The result is a fresh slice.
func (n Namespace) Key(parts ...[]byte) []byte {
	size := len(n.prefix)
	for _, p := range parts {
		size += len(p)
	}
	k := make([]byte, 0, size)
	k = append(k, n.prefix...)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// nsName and userKey split a full key into its namespace's name and the key within it, for
// error messages.
func nsName(fullKey []byte) string {
	if i := bytes.IndexByte(fullKey, 0); i >= 0 {
		return string(fullKey[:i])
	}
	return ""
}

func userKey(fullKey []byte) []byte {
	if i := bytes.IndexByte(fullKey, 0); i >= 0 {
		return fullKey[i+1:]
	}
	return fullKey
}
