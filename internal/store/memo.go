package store

import "sync"

// Memo remembers values read from the store, for lookups on a hot path whose data rarely
// changes (an organisation's predecessors, a peer's organisations). Writers call Invalidate once
// their change is committed; a value loaded while a change committed is not kept, so a Memo never
// serves a value older than the last Invalidate. It holds at most max values and forgets them all
// when full. The zero value is not usable: use NewMemo.
type Memo[K comparable, V any] struct {
	mu  sync.Mutex
	gen uint64
	m   map[K]V
	max int
}

// NewMemo returns a Memo holding up to max values.
func NewMemo[K comparable, V any](max int) *Memo[K, V] {
	return &Memo[K, V]{m: make(map[K]V), max: max}
}

// Get returns the value for k, calling load when it is not remembered. An error is returned and
// not remembered. Callers MUST NOT change a returned value (a slice or map is shared).
func (c *Memo[K, V]) Get(k K, load func() (V, error)) (V, error) {
	c.mu.Lock()
	if v, ok := c.m[k]; ok {
		c.mu.Unlock()
		return v, nil
	}
	gen := c.gen
	c.mu.Unlock()
	v, err := load()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.m) >= c.max {
			clear(c.m)
		}
		c.m[k] = v
	}
	c.mu.Unlock()
	return v, nil
}

// Invalidate forgets every value, and any load in progress is not remembered.
func (c *Memo[K, V]) Invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}
