package accesslog

import (
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// cacheLevel is the lowest tree level whose stored hashes hashCache keeps. A hash at level L
// covers 2^L entries, so the levels from 5 up hold two hashes per 32 entries: two bytes of memory
// per entry. An inclusion or consistency proof needs about one hash per level; with the upper
// levels in memory it reads at most about five from storage, and those lie in one or two runs of
// neighbouring rows that badger serves from the same blocks.
const cacheLevel = 5

// hashCache keeps committed stored hashes at levels ≥ cacheLevel in memory, for proofs. The
// committer adds each group's hashes once the group is committed; proofs add what they read from
// storage (entries from before the log was opened). Nothing is replayed at start-up. It is safe
// for concurrent use.
type hashCache struct {
	mu     sync.RWMutex
	levels [][]tlog.Hash // levels[L-cacheLevel][n], the zero hash where not cached
	size   int           // bytes held
	max    int           // bytes allowed; past it no hash is added
}

func newHashCache(maxBytes int) *hashCache {
	return &hashCache{levels: make([][]tlog.Hash, 64-cacheLevel), max: maxBytes}
}

// get returns the cached hash at (level, n).
func (c *hashCache) get(level int, n int64) (tlog.Hash, bool) {
	if level < cacheLevel {
		return tlog.Hash{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	row := c.levels[level-cacheLevel]
	if n >= int64(len(row)) || row[n] == (tlog.Hash{}) {
		return tlog.Hash{}, false
	}
	return row[n], true
}

// put caches the hash at (level, n), which MUST be committed. The all-zero hash marks an empty
// slot; SHA-256 yields it with negligible probability, and a miss only costs a read.
func (c *hashCache) put(level int, n int64, h tlog.Hash) {
	if level < cacheLevel {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(level, n, h)
}

func (c *hashCache) putLocked(level int, n int64, h tlog.Hash) {
	row := &c.levels[level-cacheLevel]
	if n >= int64(len(*row)) {
		grow := int(n+1) - len(*row)
		if c.size+grow*tlog.HashSize > c.max {
			return
		}
		c.size += grow * tlog.HashSize
		*row = append(*row, make([]tlog.Hash, grow)...)
	}
	(*row)[n] = h
}

// cachedHash is a stored hash a group wrote, for the cache once the group is committed.
type cachedHash struct {
	level int
	n     int64
	h     tlog.Hash
}

// putAll caches a committed group's hashes.
func (c *hashCache) putAll(hs []cachedHash) {
	if len(hs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range hs {
		c.putLocked(x.level, x.n, x.h)
	}
}
