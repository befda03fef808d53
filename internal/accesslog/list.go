package accesslog

import (
	"context"
	"fmt"

	"github.com/schakel-health/schakel/internal/store"
)

// SignedCheckpoint is a checkpoint's tree size with its signed note, exactly as signed.
type SignedCheckpoint struct {
	Size int64
	Note []byte
}

// Checkpoints returns up to limit checkpoints whose size is greater than afterSize, smallest
// first. It is how an exporter or a witness pages through the log's checkpoints.
func (l *Log) Checkpoints(ctx context.Context, afterSize int64, limit int) ([]SignedCheckpoint, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("accesslog: checkpoints of %s: limit %d: %w", l.origin, limit, ErrRange)
	}
	var out []SignedCheckpoint
	seek := l.k.checkpoint(max(afterSize+1, 0))
	err := l.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, l.k.checkpointPrefix(), store.IterOptions{Seek: seek, Limit: limit}, func(key, value []byte) error {
			size, err := sizeFromKey(key)
			if err != nil {
				return err
			}
			out = append(out, SignedCheckpoint{Size: size, Note: value})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("accesslog: checkpoints of %s: %w", l.origin, err)
	}
	return out, nil
}

// CheckpointNow makes a checkpoint of every entry appended so far, unless the latest checkpoint
// already covers them, and returns its size: an export through the API is then fully covered.
func (l *Log) CheckpointNow(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return l.makeCheckpoint(0)
}
