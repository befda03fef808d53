// Package accesslog owns each hosted organisation's access log: an append-only hash chain of
// entries (docs/ACCESSLOG.md) that are also the leaves of an RFC 6962 Merkle tree, with signed
// checkpoints (C2SP tlog-checkpoint in a C2SP signed note), inclusion and consistency proofs, the
// per-patient view and the export an auditor verifies with `schakel log verify`.
//
// [New] opens one organisation's [Log] over the node's shared store; several logs share one
// store.DB, each under its own key prefix in the "accesslog" namespace. [Log.Start] starts the
// committer, [Log.Append] records an entry and returns once it is durable (invariant 4), and
// [Log.Close] drains the queue and makes a final checkpoint. Reads — [Log.Entries],
// [Log.PatientEntries], [Log.InclusionProof], [Log.ConsistencyProof], [Log.LatestCheckpoint],
// [Log.Checkpoint] and [Log.Export] — work whether or not the log is started.
//
// Appends are group-committed by the log itself, not by store.DB.Write, because each entry's
// place depends on the one before it: one committer goroutine takes every append queued while the
// previous group was being written (there is no timer), assigns their indexes, chain links, times
// and per-patient sequence numbers, computes the tree's stored hashes with
// golang.org/x/mod/sumdb/tlog, and writes the entries, hashes, per-patient rows and counters and
// the log head in one fsynced badger transaction, then acknowledges each append. Validation and
// JSON encoding happen before an append is queued, in the caller's goroutine, so the committer's
// work per entry is small (see encode.go). State is materialised in storage: opening a log reads
// its head and its latest checkpoint's key, whatever its length (invariant 7). Proofs read the
// upper tree levels from a cache filled as the log grows (see cache.go).
//
// The format itself is checked by internal/accesslog/verify, of which this package uses the Entry
// type. Imported by node; nothing else below node imports it.
package accesslog
