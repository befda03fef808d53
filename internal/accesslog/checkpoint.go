package accesslog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// signCheckpoint returns the signed note of the tree of the given size, whose hashes r reads.
func (l *Log) signCheckpoint(size int64, r tlog.HashReader) ([]byte, error) {
	root, err := tlog.TreeHash(size, r)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: root: %w", size, err)
	}
	msg, err := note.Sign(&note.Note{Text: string(verify.FormatCheckpoint(l.origin, size, root))}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: sign: %w", size, err)
	}
	return msg, nil
}

// makeCheckpoint signs and stores a checkpoint of the committed size, in a transaction of its
// own, unless the latest checkpoint has that size or the size is below minSize. It returns the
// committed size.
func (l *Log) makeCheckpoint(minSize int64) (int64, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	size := l.st.size
	if l.st.ckptSize == size || size < minSize {
		return size, nil
	}
	if l.failed.Load() {
		return size, fmt.Errorf("%w: %w", ErrFailed, l.failErr)
	}
	r := frontierReader{l: l, st: &l.st}
	defer r.close()
	msg, err := l.signCheckpoint(size, &r)
	if err != nil {
		return size, err
	}
	if err := l.db.CheckSpace(); err != nil {
		return size, fmt.Errorf("checkpoint %d: %w", size, err)
	}
	txn := l.bdb.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(l.fk.checkpoint(size), msg); err != nil {
		return size, fmt.Errorf("checkpoint %d: %w", size, err)
	}
	if err := txn.Commit(); err != nil {
		return size, fmt.Errorf("checkpoint %d: commit: %w", size, err)
	}
	l.st.ckptSize = size
	l.logger.Debug("checkpoint", slog.Int64("size", size))
	return size, nil
}

// LatestCheckpoint returns the latest checkpoint, as the signed note, and its tree size. It
// returns ErrNotFound before the first checkpoint.
func (l *Log) LatestCheckpoint(ctx context.Context) ([]byte, int64, error) {
	var msg []byte
	size := int64(-1)
	err := l.db.View(ctx, func(tx *store.Txn) error {
		return tx.Iterate(ns, l.k.checkpointPrefix(), store.IterOptions{Reverse: true, Limit: 1},
			func(key, value []byte) error {
				var err error
				size, err = sizeFromKey(key)
				msg = value
				return err
			})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("accesslog: latest checkpoint of %s: %w", l.origin, err)
	}
	if size < 0 {
		return nil, 0, fmt.Errorf("accesslog: latest checkpoint of %s: %w", l.origin, ErrNotFound)
	}
	return msg, size, nil
}

// Checkpoint returns the checkpoint of the given tree size, as the signed note, or ErrNotFound
// if none was made at that size.
func (l *Log) Checkpoint(ctx context.Context, size int64) ([]byte, error) {
	if size < 0 {
		return nil, fmt.Errorf("accesslog: checkpoint %d of %s: %w", size, l.origin, ErrRange)
	}
	var msg []byte
	err := l.db.View(ctx, func(tx *store.Txn) error {
		var err error
		msg, err = tx.Get(ns, l.k.checkpoint(size))
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("accesslog: checkpoint %d of %s: %w", size, l.origin, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("accesslog: checkpoint %d of %s: %w", size, l.origin, err)
	}
	return msg, nil
}
