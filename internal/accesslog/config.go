package accesslog

import (
	"fmt"
	"time"
)

// Defaults for Config.
const (
	defaultCheckpointEvery    = 1000
	defaultCheckpointInterval = 10 * time.Second
	defaultMaxQueue           = 4096
	defaultMaxReadEntries     = 1000
	defaultProofCacheBytes    = 32 << 20
)

// Config configures a Log. The zero value of every field means its default; DefaultConfig spells
// the defaults out.
type Config struct {
	// CheckpointEvery is how many entries may be appended before a new checkpoint is signed. The
	// checkpoint is written in the transaction of the group that reaches the count, so it costs
	// one Ed25519 signature (~25 µs) and no fsync of its own. Smaller: witnesses see new entries
	// sooner and receipts can be proven against a checkpoint sooner, at the cost of more
	// checkpoints stored, gossiped and cosigned. 0 means 1000.
	CheckpointEvery int

	// CheckpointInterval bounds how long an entry stays uncovered by a signed checkpoint when
	// fewer than CheckpointEvery entries arrive: every interval, if entries were appended since the
	// last checkpoint, one is made. Each costs a signature and an fsync of its own. Shorter: a
	// fresher view for witnesses and patients; longer: fewer checkpoints on a quiet log. 0 means
	// 10s.
	CheckpointInterval time.Duration

	// MaxQueue is how many appends may wait for the committer; beyond it Append blocks until the
	// committer takes a group or the caller's context ends. It also bounds one group. Larger
	// absorbs bursts, at the cost of memory (up to 8 KiB per queued entry) and of the latency of
	// whoever waits behind the queue. 0 means 4096.
	MaxQueue int

	// MaxReadEntries is the most entries one Entries call returns, so one request cannot make the
	// node read an unbounded range. Larger: fewer round trips for an auditor or witness; smaller:
	// less memory per call. 0 means 1000.
	MaxReadEntries int

	// ProofCacheBytes bounds the memory that keeps the upper levels of the tree (two bytes per
	// entry) for inclusion and consistency proofs, so that a proof reads about five hashes from
	// storage instead of about twenty (at a million entries on disk, 33–50 µs instead of 300–370 µs).
	// The cache fills as entries are appended and as proofs read older hashes; nothing is read
	// at start-up. Past the bound no hash is added, and proofs read the hashes not cached from
	// storage. 0 means 32 MiB: 16 million entries.
	ProofCacheBytes int

	// Now is the clock that dates entries appended without a time. nil means time.Now. Tests set
	// it; a clock that goes backwards never makes times go backwards in the log (the previous
	// entry's time is used instead).
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		CheckpointEvery:    defaultCheckpointEvery,
		CheckpointInterval: defaultCheckpointInterval,
		MaxQueue:           defaultMaxQueue,
		MaxReadEntries:     defaultMaxReadEntries,
		ProofCacheBytes:    defaultProofCacheBytes,
		Now:                time.Now,
	}
}

// resolve validates c and fills in defaults. It has no side effects.
func (c Config) resolve() (Config, error) {
	d := DefaultConfig()
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"CheckpointEvery", &c.CheckpointEvery, d.CheckpointEvery},
		{"MaxQueue", &c.MaxQueue, d.MaxQueue},
		{"MaxReadEntries", &c.MaxReadEntries, d.MaxReadEntries},
		{"ProofCacheBytes", &c.ProofCacheBytes, d.ProofCacheBytes},
	} {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("accesslog: config: %w: %s %d is negative", ErrConfig, f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	switch {
	case c.CheckpointInterval < 0:
		return c, fmt.Errorf("accesslog: config: %w: CheckpointInterval %v is negative", ErrConfig, c.CheckpointInterval)
	case c.CheckpointInterval == 0:
		c.CheckpointInterval = d.CheckpointInterval
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c, nil
}
