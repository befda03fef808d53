package accesslog

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/store"
)

// ns holds every log on the node. Key layout, where <log> is the log's id (the first 8 bytes of
// SHA-256 of "schakel access log", a zero byte and the origin), <u64> an 8-byte big-endian number
// and <patient> the patient's id (the first 16 bytes of SHA-256 of the pseudonym):
//
//	<log> h                     → head: format, size, hash and time of the last entry, origin
//	<log> e <index u64>         → entry bytes
//	<log> t <stored index u64>  → the tlog stored hashes written with one entry, 32 bytes each
//	<log> p <patient>           → the patient's last sequence number (u64)
//	<log> p <patient> <seq u64> → the index of the patient's entry with that sequence number (u64)
//	<log> c <size u64>          → the checkpoint of that size, as signed
//
// Entries, hashes, counters, patient rows and head of one group are written in one transaction.
// A patient's counter key is the prefix of its rows, so one prefix scan finds the patient's
// entries and the counter is skipped by its length.
//
// tlog.StoredHashes returns, for entry n, the hashes to store at tlog.StoredHashIndex(0, n) and
// the indexes after it: the leaf hash and one hash per subtree the entry completes. They are kept
// in one row under the first index, so an entry costs one hash row rather than two on average;
// the hash with stored index i is the L'th of its row, where L is its level
// (tlog.SplitStoredHashIndex), so its row is at i−L.
//
// Ids keep keys short, since every byte of every key is written to the WAL and fsynced: with the
// origin and pseudonym in the keys, a log's keys would be two to three times longer. The head
// holds the origin, so a collision of two origins' ids is detected when the log opens; two
// pseudonyms share a 128-bit id with negligible probability.
var ns = store.MustNamespace("accesslog")

const (
	kindHead       = 'h'
	kindEntry      = 'e'
	kindHash       = 't'
	kindPatient    = 'p'
	kindCheckpoint = 'c'
)

// headFormat is the version of the head value and of the key layout above. A head in another
// format is refused when the log opens.
const headFormat = 1

// maxOriginSize bounds an origin.
const maxOriginSize = 255

// Sizes of the ids in keys.
const (
	logIDSize     = 8
	patientIDSize = 16
)

// keys builds one log's keys, each a fresh slice: <log> and what follows, after the namespace
// prefix when log starts with it.
type keys struct {
	log []byte // <log>, possibly after the namespace prefix
}

func newKeys(origin string) keys {
	h := sha256.Sum256([]byte("schakel access log\x00" + origin))
	return keys{log: h[:logIDSize:logIDSize]}
}

// patientID is the key part for a patient pseudonym.
func patientID(patient string) []byte {
	h := sha256.Sum256([]byte(patient))
	return h[:patientIDSize]
}

func (k keys) kind(c byte, extra int) []byte {
	b := make([]byte, 0, len(k.log)+1+extra)
	b = append(b, k.log...)
	return append(b, c)
}

func (k keys) u64(c byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(k.kind(c, 8), n)
}

func (k keys) head() []byte                 { return k.kind(kindHead, 0) }
func (k keys) entry(index int64) []byte     { return k.u64(kindEntry, uint64(index)) }
func (k keys) hashes(stored int64) []byte   { return k.u64(kindHash, uint64(stored)) }
func (k keys) checkpoint(size int64) []byte { return k.u64(kindCheckpoint, uint64(size)) }
func (k keys) entryPrefix() []byte          { return k.kind(kindEntry, 0) }
func (k keys) checkpointPrefix() []byte     { return k.kind(kindCheckpoint, 0) }

// counter is the key of a patient's counter, which is also the prefix of the patient's rows;
// patientRow is the key of one row.
func (k keys) counter(pid []byte) []byte {
	return append(k.kind(kindPatient, patientIDSize+8), pid...)
}

func (k keys) patientRow(pid []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(k.counter(pid), seq)
}

// head is the materialised state a log opens from: the tree size, the SHA-256 of the last entry's
// bytes (the next entry's prev), the last entry's time and the log's origin.
type head struct {
	size     int64
	last     [sha256.Size]byte
	lastTime string
	origin   string
}

// headFixed is the size of a head's fixed part: format, size, last.
const headFixed = 1 + 8 + sha256.Size

// encode returns format (1 byte) ‖ size (u64) ‖ last (32 bytes) ‖ len(origin) (1 byte) ‖ origin
// ‖ lastTime.
func (h head) encode() []byte {
	b := make([]byte, 0, headFixed+1+len(h.origin)+len(h.lastTime))
	b = append(b, headFormat)
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	b = append(b, h.last[:]...)
	b = append(b, byte(len(h.origin)))
	b = append(b, h.origin...)
	return append(b, h.lastTime...)
}

func decodeHead(b []byte) (head, error) {
	var h head
	if len(b) < 1 || b[0] != headFormat {
		return h, fmt.Errorf("%w: head in format %v, this build reads %d", ErrCorrupt, b[:min(len(b), 1)], headFormat)
	}
	if len(b) < headFixed+1 || len(b) < headFixed+1+int(b[headFixed]) {
		return h, fmt.Errorf("%w: head of %d bytes is truncated", ErrCorrupt, len(b))
	}
	size := binary.BigEndian.Uint64(b[1:])
	if size > 1<<62 {
		return h, fmt.Errorf("%w: head size %d", ErrCorrupt, size)
	}
	h.size = int64(size)
	copy(h.last[:], b[9:])
	n := int(b[headFixed])
	h.origin = string(b[headFixed+1 : headFixed+1+n])
	h.lastTime = string(b[headFixed+1+n:])
	if h.size > 0 {
		if _, err := parseTime(h.lastTime); err != nil {
			return h, fmt.Errorf("%w: head time: %v", ErrCorrupt, err)
		}
	}
	return h, nil
}

// timeLayout is the entry time format: RFC 3339 in UTC with exactly nine fractional digits, so
// that every time has one spelling.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// formatTime returns t in timeLayout.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// parseTime parses a time in timeLayout and refuses any other spelling.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is not RFC 3339 UTC with nanoseconds: %v", s, err)
	}
	if formatTime(t) != s {
		return time.Time{}, fmt.Errorf("time %q is not in canonical form %q", s, formatTime(t))
	}
	return t, nil
}

// hashRow returns the key of the row holding the stored hash with index idx and the hash's
// offset in that row.
func (k keys) hashRow(idx int64) ([]byte, int) {
	level, _ := tlog.SplitStoredHashIndex(idx)
	return k.hashes(idx - int64(level)), level * tlog.HashSize
}

// hashAt returns the hash at offset off of a hash row.
func hashAt(row []byte, off int, idx int64) (tlog.Hash, error) {
	if len(row)%tlog.HashSize != 0 || off+tlog.HashSize > len(row) {
		return tlog.Hash{}, fmt.Errorf("%w: stored hash %d: row of %d bytes", ErrCorrupt, idx, len(row))
	}
	return tlog.Hash(row[off : off+tlog.HashSize]), nil
}
