package verify

import (
	"crypto/sha256"

	"golang.org/x/mod/sumdb/tlog"
)

// node is a perfect subtree of the log's RFC 6962 Merkle tree: 2^level leaves starting at leaf
// index<<level.
type node struct {
	level int
	index int64
	hash  tlog.Hash
}

// rangeHasher computes the compact range of leaves [begin, end): the fewest perfect subtrees
// that cover it, left to right. Each leaf is appended as its RFC 6962 leaf hash and merged
// with its left sibling whenever that sibling lies inside the range, so a range of n leaves
// costs n−1 node hashes at most and holds O(log n) nodes. Workers build ranges for disjoint
// parts of the log in parallel; frontier joins them.
type rangeHasher struct {
	end   int64
	nodes []node
}

func (r *rangeHasher) reset(begin int64) {
	r.end = begin
	r.nodes = r.nodes[:0]
}

// appendLeaf appends the leaf hash of entry r.end.
func (r *rangeHasher) appendLeaf(h tlog.Hash) {
	n := node{level: 0, index: r.end, hash: h}
	r.end++
	for n.index&1 == 1 && len(r.nodes) > 0 {
		top := r.nodes[len(r.nodes)-1]
		if top.level != n.level {
			break
		}
		// top is n's left sibling: same level, adjacent, and n is a right child.
		n = node{level: n.level + 1, index: n.index >> 1, hash: tlog.NodeHash(top.hash, n.hash)}
		r.nodes = r.nodes[:len(r.nodes)-1]
	}
	r.nodes = append(r.nodes, n)
}

// frontier is the compact range [0, size) of the log: one perfect subtree per set bit of size,
// largest first. It yields the RFC 6962 root of the first size entries with O(log size) hashes.
type frontier struct {
	size  int64
	nodes []node
}

// appendNode appends a perfect subtree that starts at leaf f.size; it MUST be aligned, that is
// f.size is a multiple of 2^n.level, which holds for the nodes of a rangeHasher that began at
// f.size.
func (f *frontier) appendNode(n node) {
	if n.index<<n.level != f.size {
		panic("verify: subtree appended out of place")
	}
	f.size += 1 << n.level
	for len(f.nodes) > 0 {
		top := f.nodes[len(f.nodes)-1]
		if top.level != n.level {
			break
		}
		n = node{level: n.level + 1, index: top.index >> 1, hash: tlog.NodeHash(top.hash, n.hash)}
		f.nodes = f.nodes[:len(f.nodes)-1]
	}
	f.nodes = append(f.nodes, n)
}

// root returns the RFC 6962 Merkle tree hash of the first f.size entries (RFC 6962 §2.1: the
// largest perfect subtree on the left, the rest on the right, recursively; the empty tree's hash
// is SHA-256 of nothing).
func (f *frontier) root() tlog.Hash {
	if len(f.nodes) == 0 {
		return sha256.Sum256(nil)
	}
	h := f.nodes[len(f.nodes)-1].hash
	for i := len(f.nodes) - 2; i >= 0; i-- {
		h = tlog.NodeHash(f.nodes[i].hash, h)
	}
	return h
}
