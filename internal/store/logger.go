package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// slogLogger adapts slog to badger.Logger. badger's Info lines (table flushes, compactions,
// replay progress) are routine for a node, so they go to Debug; Warning and Error keep their
// level. Each record carries component=badger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Errorf(format string, args ...any)   { s.log(slog.LevelError, format, args) }
func (s slogLogger) Warningf(format string, args ...any) { s.log(slog.LevelWarn, format, args) }
func (s slogLogger) Infof(format string, args ...any)    { s.log(slog.LevelDebug, format, args) }
func (s slogLogger) Debugf(format string, args ...any)   { s.log(slog.LevelDebug, format, args) }

func (s slogLogger) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), " \n")
	s.l.LogAttrs(ctx, level, msg, slog.String("component", "badger"))
}
