package authz

import (
	"sync"
	"sync/atomic"
)

// cacheShards is the number of independently locked parts of the introspection cache; a power of
// two, so the shard is picked by masking the key's first byte.
const cacheShards = 32

// cacheSweep is the least time between two sweeps of a shard's expired entries, in nanoseconds.
const cacheSweep = int64(30e9)

// tokenCache maps SHA-256(token) to the introspection result of an active token, until the
// token's exp. Each shard drops its expired entries at an insert at most every cacheSweep, so
// that memory follows the tokens still valid rather than the bound. It is bounded: a full shard
// first drops its expired entries, then arbitrary ones (Go's map iteration order), down to seven
// eighths of its share. Only tokens whose signature
// verified are inserted, so an attacker cannot fill it with garbage, only with tokens the node
// itself issued.
type tokenCache struct {
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]*cacheEntry
	// nextSweep is when, in Unix nanoseconds, an insert next drops the expired entries.
	nextSweep int64
	// pad keeps two shards' locks off one cache line.
	_ [64 - 32]byte
}

// cacheEntry is one cached active token. resp and expNano never change after insertion; gen is
// the basis-check generation at which the basis was last found in force.
type cacheEntry struct {
	resp    Response
	expNano int64
	gen     atomic.Uint64
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{perShard: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]*cacheEntry)
	}
	return c
}

func (c *tokenCache) shard(k *[32]byte) *cacheShard { return &c.shards[k[0]&(cacheShards-1)] }

func (c *tokenCache) get(k *[32]byte) *cacheEntry {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[*k]
	s.mu.RUnlock()
	return e
}

// remove deletes k if it still maps to e (a concurrent introspection may have replaced it).
func (c *tokenCache) remove(k *[32]byte, e *cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	if s.m[*k] == e {
		delete(s.m, *k)
	}
	s.mu.Unlock()
}

func (c *tokenCache) put(k *[32]byte, e *cacheEntry, nowNano int64) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if nowNano >= s.nextSweep {
		s.dropExpired(nowNano)
		s.nextSweep = nowNano + cacheSweep
	}
	if _, ok := s.m[*k]; !ok && len(s.m) >= c.perShard {
		s.dropExpired(nowNano)
		target := c.perShard * 7 / 8 // < perShard for every perShard ≥ 1
		for key := range s.m {
			if len(s.m) <= target {
				break
			}
			delete(s.m, key)
		}
	}
	s.m[*k] = e
}

// dropExpired deletes the entries whose token has expired at nowNano; s.mu is held.
func (s *cacheShard) dropExpired(nowNano int64) {
	for key, old := range s.m {
		if nowNano >= old.expNano {
			delete(s.m, key)
		}
	}
}

// len returns the number of cached entries, for tests.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
