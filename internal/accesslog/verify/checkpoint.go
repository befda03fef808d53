package verify

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Errors of ParseCheckpoint and OpenCheckpoint.
var (
	// ErrCheckpoint marks a checkpoint that is malformed, not signed by the log's key, or
	// about another log. Every checkpoint error wraps it.
	ErrCheckpoint = errors.New("invalid checkpoint")
	// ErrSignature marks a signed note that carries no valid signature by the log's key.
	ErrSignature = errors.New("not signed by the log key")
)

// MaxCheckpointSize bounds a signed checkpoint: the three body lines and the log's signature
// take about 200 bytes, and note.Open accepts at most 100 signature lines (witness cosignatures).
const MaxCheckpointSize = 64 << 10

// Checkpoint is a log's signed tree head: C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint).
type Checkpoint struct {
	Origin string    // the log's origin line, also the name of its note key
	Size   int64     // number of entries covered
	Root   tlog.Hash // RFC 6962 root of the first Size entries
}

// String returns the checkpoint body, as FormatCheckpoint writes it.
func (c Checkpoint) String() string { return string(FormatCheckpoint(c.Origin, c.Size, c.Root)) }

// FormatCheckpoint returns the checkpoint body (the note text that the log signs): origin line,
// decimal tree size, base64 root hash, each ending in a newline (C2SP tlog-checkpoint, "Note
// text"). It writes no extension lines.
func FormatCheckpoint(origin string, size int64, root tlog.Hash) []byte {
	b := make([]byte, 0, len(origin)+66)
	b = append(b, origin...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, size, 10)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, root[:])
	return append(b, '\n')
}

// ParseCheckpoint parses a checkpoint body as FormatCheckpoint writes it: exactly three lines,
// each ending in a newline. The origin MUST be usable as a note key name (non-empty UTF-8
// without Unicode spaces or '+'), the size a non-negative decimal without leading zeros that
// fits an int64, the root a padded standard base64 encoding of 32 bytes. Extension lines are
// refused: C2SP tlog-checkpoint marks them optional and not recommended, schakel logs write
// none, and a verifier that skipped signed lines it cannot audit would let them carry anything.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	var c Checkpoint
	lines := strings.SplitAfter(string(text), "\n")
	switch {
	case len(lines) >= 4 && lines[3] != "":
		return c, fmt.Errorf("%w: extension lines are not accepted", ErrCheckpoint)
	case len(lines) != 4:
		return c, fmt.Errorf("%w: want three lines, each ending in a newline", ErrCheckpoint)
	}
	origin, size, root := strings.TrimSuffix(lines[0], "\n"), strings.TrimSuffix(lines[1], "\n"), strings.TrimSuffix(lines[2], "\n")
	if !validName(origin) {
		return c, fmt.Errorf("%w: origin %q: empty, not UTF-8, or contains a space or '+'", ErrCheckpoint, origin)
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != size {
		return c, fmt.Errorf("%w: tree size %q is not a decimal number without leading zeros", ErrCheckpoint, size)
	}
	var h [32]byte
	if !decodeHash([]byte(root), &h) {
		return c, fmt.Errorf("%w: root hash %q is not base64 of 32 bytes", ErrCheckpoint, root)
	}
	return Checkpoint{Origin: origin, Size: n, Root: h}, nil
}

// validName reports whether s can be a note key name: non-empty UTF-8 without Unicode spaces,
// control characters or '+' (golang.org/x/mod/sumdb/note).
func validName(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r == '+' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// OpenCheckpoint verifies a signed checkpoint (C2SP signed-note) with the log's verifier and
// parses its body. The note MUST carry a valid signature by verifier; signature lines by other
// keys, such as witness cosignatures (C2SP tlog-cosignature), are allowed and not checked here.
// The checkpoint's origin MUST equal the verifier's name, as docs/ACCESSLOG.md requires.
// Errors wrap ErrCheckpoint, and ErrSignature when the log's signature is missing or invalid.
func OpenCheckpoint(signedNote []byte, verifier note.Verifier) (Checkpoint, error) {
	c, _, err := OpenCheckpointNote(signedNote, verifier)
	return c, err
}

// OpenCheckpointNote is OpenCheckpoint that also returns the opened note: its Sigs hold the
// log's signature, its UnverifiedSigs every other line, such as cosignatures for a caller to
// check (Witnesses.Count) or to drop.
func OpenCheckpointNote(signedNote []byte, verifier note.Verifier) (Checkpoint, *note.Note, error) {
	if len(signedNote) > MaxCheckpointSize {
		return Checkpoint{}, nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrCheckpoint, len(signedNote), MaxCheckpointSize)
	}
	n, err := note.Open(signedNote, note.VerifierList(verifier))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, nil, fmt.Errorf("%w: %w: no signature by %s+%08x", ErrCheckpoint, ErrSignature, verifier.Name(), verifier.KeyHash())
		case errors.As(err, &invalid):
			return Checkpoint{}, nil, fmt.Errorf("%w: %w: %v", ErrCheckpoint, ErrSignature, err)
		}
		return Checkpoint{}, nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != verifier.Name() {
		return Checkpoint{}, nil, fmt.Errorf("%w: origin %q is not the log key's name %q", ErrCheckpoint, c.Origin, verifier.Name())
	}
	return c, n, nil
}

// trimKey trims the one optional newline that ends a vkey file.
func trimKey(b []byte) string {
	return string(bytes.TrimSuffix(b, []byte("\n")))
}
