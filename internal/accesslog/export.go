package accesslog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/store"
)

// Export writes the log to dir for `schakel log verify`: entries.jsonl with every entry's bytes
// and a newline, checkpoints/<size> with each checkpoint exactly as signed, and vkey with the
// verifier key and a newline. It first makes a checkpoint of the committed size, if the latest
// does not have it, and exports exactly that many entries, so the export is covered by a
// checkpoint whatever is appended meanwhile. dir MUST be absent or empty (ErrExportDir); it is
// created with its parents.
func (l *Log) Export(ctx context.Context, dir string) error {
	if err := exportDir(dir); err != nil {
		return fmt.Errorf("accesslog: export %s: %w", l.origin, err)
	}
	size, err := l.makeCheckpoint(0)
	if err != nil {
		return fmt.Errorf("accesslog: export %s: %w", l.origin, err)
	}
	if err := l.export(ctx, dir, size); err != nil {
		return fmt.Errorf("accesslog: export %s to %s: %w", l.origin, dir, err)
	}
	return nil
}

// exportDir creates dir and its checkpoints directory, refusing a dir that holds anything.
func exportDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%w: %s", ErrExportDir, dir)
	}
	return os.MkdirAll(filepath.Join(dir, verify.CheckpointsDir), 0o750)
}

func (l *Log) export(ctx context.Context, dir string, size int64) error {
	f, err := os.OpenFile(filepath.Join(dir, verify.EntriesFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<16)
	err = l.db.View(ctx, func(tx *store.Txn) error {
		var n int64
		if size > 0 {
			err := tx.Iterate(ns, l.k.entryPrefix(), store.IterOptions{Limit: int(size)}, func(key, value []byte) error {
				if got, err := sizeFromKey(key); err != nil || got != n {
					return fmt.Errorf("%w: entry %d missing", ErrCorrupt, n)
				}
				n++
				w.Write(value)
				return w.WriteByte('\n')
			})
			if err != nil {
				return err
			}
		}
		if n != size {
			return fmt.Errorf("%w: entry %d missing", ErrCorrupt, n)
		}
		return tx.Iterate(ns, l.k.checkpointPrefix(), store.IterOptions{}, func(key, value []byte) error {
			s, err := sizeFromKey(key)
			if err != nil || s > size {
				return err
			}
			name := filepath.Join(dir, verify.CheckpointsDir, strconv.FormatInt(s, 10))
			return os.WriteFile(name, value, 0o640)
		})
	})
	if err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, verify.VerifierKeyFile), []byte(l.vkey+"\n"), 0o640)
}
