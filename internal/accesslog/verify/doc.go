// Package verify checks a schakel access log offline: it owns the log's formats (the canonical
// entry, the C2SP checkpoint body, the export directory; docs/ACCESSLOG.md) and their
// verification. Its entry points are ParseEntry for one entry, ParseCheckpoint, OpenCheckpoint
// and FormatCheckpoint for checkpoints, NewCosignatureVerifier and Witnesses for witness
// cosignatures (C2SP tlog-cosignature), and VerifyExport for a whole exported log, which
// `schakel log verify` runs.
//
// Anyone may import it: the node's access log writes what this package reads, and an auditor's
// binary links it alone. It MUST stay free of storage, network and generated protocol code (a
// test enforces this); it imports only the standard library, golang.org/x/mod/sumdb/tlog for
// RFC 6962 hashing and golang.org/x/mod/sumdb/note for signed notes.
package verify
