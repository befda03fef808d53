// Package reconcile finds the difference between this node's set of public documents and a
// peer's by range-based set reconciliation (Meyer 2022, the idea behind the Negentropy
// protocol): a node that was offline learns exactly which documents it misses, and two nodes in
// sync find that out in one round trip of a few dozen bytes.
//
// It owns the reconciliation index, the store namespace "recon", and the protocol's message
// format. Its entry points are [NewIndex] with [Index.Add] and [Index.Remove], which run inside
// the transaction that stores or deletes the document so that the index never disagrees with
// the documents; [Index.Respond] on the server; and [Session] on the client. Only
// internal/network and node import it; it imports only internal/store.
//
// # Items and the index
//
// An [Item] is a document's time (Unix seconds) and id (SHA-256 of the document), ordered by
// (time, id), with a 40-byte key: time big-endian || id. The index keeps, besides one row per
// item, a fixed hierarchy of summary nodes over the key space. A level-L node is named by a
// prefix of the key:
//
//	level  prefix  node covers
//	0       0 B    everything (the root)
//	1       5 B    time/2^24: about 194 days
//	2       6 B    time/2^16: about 18 hours
//	3       7 B    time/2^8: 256 seconds
//	4       8 B    one second
//	5       9 B    one second and the first id byte (a leaf: its children are items)
//
// Rows, keys within the namespace:
//
//	level byte (0..5) || prefix  →  count (8 bytes big-endian) || sum of ids mod 2^256 (32 bytes big-endian)
//	6 || item key                →  empty
//	"version"                    →  layout version (1)
//
// A row exists only while its node holds items, so iterating a level visits non-empty nodes
// only. Add and Remove are idempotent and touch one row per level. Time levels come first
// because peers differ mostly in recent documents; the id byte at the leaf keeps a bulk publish
// (many documents in one second) from making one huge leaf.
//
// # Fingerprints
//
// The fingerprint of a set of items is the first 16 bytes of SHA-256(sum || count), sum the ids
// added mod 2^256 and count 8 bytes big-endian: Negentropy's construction, but for byte order
// and the encoding of the count. Addition, not XOR: XOR cancels (an item counted twice
// vanishes, so a corrupted summary can look right, as happened with the XOR/IBLT state of Nuts)
// and is linear over GF(2), so whoever can publish a few hundred documents can solve for a
// subset with any XOR they want by Gaussian elimination. A sum mod 2^256 has neither property:
// matching a chosen sum takes a generalised-birthday (k-sum) search, practical only with tens
// of thousands of chosen documents, each ground from many candidates, all of them signed and
// published by the attacker. The count binds the size of the set, and the hash hides the sum,
// so fingerprints of ranges cannot be added up into the fingerprint of another. The sums inside
// the index do add up, so a node's summary is the sum of its children's and any run of siblings
// is summarised from their rows alone.
//
// # Protocol
//
// The client drives; the server keeps no state between messages. A [Message] cuts the whole key
// space into consecutive ranges, each with a mode. The client's first request carries the
// fingerprint of its whole set (or its items, when it holds at most 4). For each range in
// question the server answers:
//
//   - skip: its items equal the client's;
//   - its own items, when it holds at most 4 there;
//   - the exact difference (items the client lacks, positions in the client's list of those it
//     lacks), when the client sent its items and the server holds at most 1024;
//   - otherwise a split into sub-ranges of about an eighth of its items each, with their
//     fingerprints (or an empty list where it holds nothing).
//
// The client compares each sub-range with its own summary, keeps those that differ for the next
// request, and learns Missing (server has, client lacks) and Extra (client has, server lacks)
// from lists. Every range in a request or a split MUST be aligned with the hierarchy: a run of
// whole children of one node, or a run of items within one leaf. So either side summarises any
// range from at most one node's children (at most 256 rows, or a leaf's items), and the server
// splits by grouping consecutive children and descending into a child that holds more than two
// shares. In sync this is one round trip (19 bytes out, 3 back); d differences among n items
// cost O(d·log n) bytes: measured on 100,000 items, about 850 bytes a difference for d = 10 and
// 400 for d = 1000 (upper levels are shared), in 6 or 7 round trips.
//
// # Bounds
//
// Messages are at most [MaxMessageSize] bytes and [MaxEntries] ranges; a request asks about at
// most [MaxRanges] ranges, a list holds at most [MaxListItems] items, a split at most [MaxSplit]
// sub-ranges. [ParseMessage] accepts only the one canonical encoding of a valid message. The
// server answers ranges in order until its answer would exceed MaxMessageSize or its read
// budget is spent, and defers the rest (the client asks again). The client checks that every
// answer fits its question: the same ranges, splits that make progress and stay aligned, lists
// that agree with what it sent; anything else fails with [ErrInconsistent]. A session ends after
// [MaxRounds] round trips or when what it keeps grows past its limits, reporting what it
// learned with [Session.Complete] false; the next session goes on from there. So a lying peer
// can waste a bounded amount of work and hide differences, never make the other side loop or
// allocate without bound.
package reconcile
