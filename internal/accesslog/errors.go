package accesslog

import "errors"

// Errors returned by this package, wrapped with context; compare with errors.Is.
var (
	// ErrConfig reports an invalid Config or constructor argument: nothing was opened.
	ErrConfig = errors.New("invalid access log configuration")
	// ErrInvalidEntry reports an entry that Append refused: a bad or missing field, a string or
	// entry over its size limit, a log-assigned field already set, or a time before the previous
	// entry's. The message names the field. Nothing is written for it.
	ErrInvalidEntry = errors.New("invalid access log entry")
	// ErrNotStarted reports an Append before Start.
	ErrNotStarted = errors.New("access log not started")
	// ErrClosed reports an Append after Close (or the Start context's end) began.
	ErrClosed = errors.New("access log closed")
	// ErrFailed reports that a write to storage failed and the log stopped accepting appends: its
	// in-memory state may no longer match the disk. Reopening the log reads the head again.
	ErrFailed = errors.New("access log failed")
	// ErrInUse reports that a log with the same origin is already open on the same store.
	ErrInUse = errors.New("access log already open")
	// ErrRange reports an index, tree size or range outside the log, or a range longer than
	// Config.MaxReadEntries.
	ErrRange = errors.New("out of range")
	// ErrNotFound reports that no checkpoint exists at the size asked for (or none at all).
	ErrNotFound = errors.New("not found")
	// ErrCorrupt reports storage that does not hold what this package wrote: a head in an
	// unknown format, a missing entry or hash, a malformed value.
	ErrCorrupt = errors.New("access log storage corrupt")
	// ErrExportDir reports an export directory that exists and is not empty.
	ErrExportDir = errors.New("export directory not empty")
)
