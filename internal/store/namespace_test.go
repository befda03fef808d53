package store

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNewNamespace(t *testing.T) {
	tests := []struct {
		name   string
		nsName string
		ok     bool
	}{
		{"short", "vc", true},
		{"dash", "access-log", true},
		{"digits", "a1", true},
		{"32 characters", strings.Repeat("a", 32), true},
		{"empty", "", false},
		{"upper case", "UPPER", false},
		{"slash", "a/b", false},
		{"nul", "a\x00", false},
		{"33 characters", strings.Repeat("a", 33), false},
		{"reserved", "meta", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := NewNamespace(tc.nsName)
			if (err == nil) != tc.ok {
				t.Fatalf("NewNamespace(%q) = %v, want ok=%v", tc.nsName, err, tc.ok)
			}
			if tc.ok && ns.Name() != tc.nsName {
				t.Fatalf("NewNamespace(%q).Name() = %q", tc.nsName, ns.Name())
			}
		})
	}
}

func TestMustNamespacePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatalf("MustNamespace(%q) did not panic", "Bad")
		}
	}()
	MustNamespace("Bad")
}

func TestNamespaceKey(t *testing.T) {
	ns := MustNamespace("vc")
	tests := []struct {
		name  string
		parts [][]byte
		want  []byte
	}{
		{"no parts", nil, []byte("vc\x00")},
		{"one part", [][]byte{[]byte("k")}, []byte("vc\x00k")},
		{"parts joined", [][]byte{[]byte("a/"), {0xff, 0}, []byte("b")}, []byte("vc\x00a/\xff\x00b")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ns.Key(tc.parts...)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Key(%q) = %q, want %q", tc.parts, got, tc.want)
			}
			got2 := ns.Key(tc.parts...)
			got2 = append(got2[:len(got2):len(got2)], 'x')
			if len(got2) > 0 && &got[0] == &got2[0] {
				t.Fatalf("Key returned a shared slice")
			}
		})
	}
}

func TestNamespacesIsolated(t *testing.T) {
	db := openMem(t, Config{})
	a, ab := MustNamespace("a"), MustNamespace("ab")
	mustWrite(t, db, func(b *Batch) {
		b.Set(a, []byte("bx"), []byte("in a"))
		b.Set(ab, []byte("x"), []byte("in ab"))
	})
	tests := []struct {
		name string
		ns   Namespace
		want string // key=value pairs seen by a full Iterate, forward then reverse
	}{
		{"a", a, "bx=in a"},
		{"ab", ab, "x=in ab"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, reverse := range []bool{false, true} {
				var seen []string
				err := db.View(t.Context(), func(tx *Txn) error {
					return tx.Iterate(tc.ns, nil, IterOptions{Reverse: reverse}, func(k, v []byte) error {
						seen = append(seen, string(k)+"="+string(v))
						return nil
					})
				})
				if err != nil {
					t.Fatalf("Iterate(reverse=%v): %v", reverse, err)
				}
				if got := strings.Join(seen, ","); got != tc.want {
					t.Fatalf("Iterate(%s, reverse=%v) = %q, want %q", tc.ns.Name(), reverse, got, tc.want)
				}
			}
		})
	}
	if _, err := get(t, db, ab, "bx"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(ab, bx) = %v, want ErrNotFound", err)
	}
	if _, err := get(t, db, a, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(a, b) = %v, want ErrNotFound", err)
	}
}

func TestZeroNamespace(t *testing.T) {
	db := openMem(t, Config{})
	var zero Namespace
	var b Batch
	b.Set(zero, []byte("k"), []byte("v"))
	if err := db.Write(t.Context(), &b); !errors.Is(err, errZeroNamespace) {
		t.Fatalf("Write(zero namespace) = %v, want errZeroNamespace", err)
	}
	err := db.Update(t.Context(), func(tx *Txn) error { return tx.Set(zero, []byte("k"), []byte("v")) })
	if !errors.Is(err, errZeroNamespace) {
		t.Fatalf("Txn.Set(zero namespace) = %v, want errZeroNamespace", err)
	}
}
