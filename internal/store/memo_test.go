package store

import (
	"errors"
	"testing"
)

func TestMemo(t *testing.T) {
	m := NewMemo[string, int](2)
	loads := 0
	load := func(v int) func() (int, error) {
		return func() (int, error) { loads++; return v, nil }
	}
	if v, _ := m.Get("a", load(1)); v != 1 || loads != 1 {
		t.Fatalf("first Get = %d after %d loads", v, loads)
	}
	if v, _ := m.Get("a", load(2)); v != 1 || loads != 1 {
		t.Fatalf("remembered Get = %d after %d loads, want 1 after 1", v, loads)
	}
	m.Invalidate()
	if v, _ := m.Get("a", load(2)); v != 2 || loads != 2 {
		t.Fatalf("Get after Invalidate = %d after %d loads, want 2 after 2", v, loads)
	}
	// An error is not remembered.
	if _, err := m.Get("b", func() (int, error) { return 0, errors.New("x") }); err == nil {
		t.Fatal("Get did not return the load's error")
	}
	if v, _ := m.Get("b", load(3)); v != 3 {
		t.Fatalf("Get after a failed load = %d, want 3", v)
	}
	// A load that overlaps an Invalidate is returned but not kept.
	v, _ := m.Get("c", func() (int, error) { m.Invalidate(); return 4, nil })
	if v != 4 {
		t.Fatalf("Get = %d, want 4", v)
	}
	if v, _ := m.Get("c", load(5)); v != 5 {
		t.Fatalf("value loaded across an Invalidate was kept: %d, want 5", v)
	}
	// Full: forgets everything, stays bounded.
	for i, k := range []string{"d", "e", "f"} {
		m.Get(k, load(i))
	}
	if len(m.m) > 2 {
		t.Fatalf("memo holds %d values, max 2", len(m.m))
	}
}
