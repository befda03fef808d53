package reconcile

import (
	"encoding/binary"
	"fmt"
)

// Version is the first byte of every message; ParseMessage refuses any other.
const Version = 1

// Bounds of the protocol. Both sides enforce them, so that neither can make the other allocate
// or work without bound.
const (
	// MaxMessageSize bounds an encoded message. A server answer that would exceed it defers
	// the ranges that do not fit.
	MaxMessageSize = 256 << 10
	// MaxEntries bounds the ranges, skipped ones included, of one message.
	MaxEntries = 1 << 15
	// MaxRanges bounds the ranges in question (not skipped) of one request.
	MaxRanges = 2048
	// MaxListItems bounds the items of one list.
	MaxListItems = 4096
	// MaxSplit bounds the sub-ranges that answer one range.
	MaxSplit = 64
	// MaxRounds bounds the round trips of one Session. A Session that reaches it ends with
	// what it learned so far and Complete reports false; the next session continues.
	MaxRounds = 48
)

// maxBitmap is the largest bitmap of a ListDiff range: one bit per item of the request's list.
const maxBitmap = MaxListItems / 8

// Mode says what a range of a message carries.
type Mode uint8

// Modes. The values are the wire encoding and are append-only.
const (
	// ModeSkip: nothing to reconcile in the range. In a request: settled earlier or not asked
	// this round. In an answer: the server's items equal the client's (or the request skipped
	// it).
	ModeSkip Mode = 0
	// ModeFingerprint carries the fingerprint of the sender's items in the range. In a request:
	// compare. In an answer: one of the sub-ranges the server split a differing range into.
	ModeFingerprint Mode = 1
	// ModeIdList carries the sender's items in the range. In a request: the client's items of a
	// small range. In an answer: the server's items, where it holds few.
	ModeIdList Mode = 2
	// ModeListDiff answers a request's ModeIdList range: Items are the server's items the
	// client's list lacks, Lacks the positions in the client's list of the items the server
	// lacks. Only in answers.
	ModeListDiff Mode = 3
	// ModeDeferred: the server did not answer this range in this round (its size or work
	// budget ran out); ask again. Only in answers.
	ModeDeferred Mode = 4

	maxMode = ModeDeferred
)

func (m Mode) String() string {
	switch m {
	case ModeSkip:
		return "skip"
	case ModeFingerprint:
		return "fingerprint"
	case ModeIdList:
		return "idlist"
	case ModeListDiff:
		return "listdiff"
	case ModeDeferred:
		return "deferred"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Range is one range of a Message. The ranges of a message cover the whole item space in
// order: a range starts just after the previous range's Upper (the first at the least item)
// and ends at its own Upper, inclusive.
type Range struct {
	// Upper is the last item position the range covers.
	Upper Item
	Mode  Mode
	// Fingerprint is set only for ModeFingerprint.
	Fingerprint Fingerprint
	// Items, in increasing order and inside the range, only for ModeIdList and ModeListDiff.
	Items []Item
	// Lacks, increasing, only for ModeListDiff: positions in the request's list.
	Lacks []int
}

// Message is one reconciliation message, a request from the client or an answer from the
// server: the item space cut into ranges, each with a mode.
//
// Encoding (all integers unsigned LEB128 varints in their shortest form):
//
//	message = version:byte range+                    (ends with the range whose Upper is the greatest item)
//	range   = bound mode:byte payload
//	bound   = n:byte tail[n]                         (first range)
//	        | c:byte n:byte tail[n]                  (later ranges)
//
// A bound encodes Upper as its 40-byte key (time big-endian || id) with trailing 0xff bytes
// removed; a later bound gives the length c of the prefix it shares with the previous Upper and
// then the rest, so bounds that split one node cost two or three bytes. The tail never ends in
// 0xff, so every Upper has exactly one encoding. Payloads:
//
//	skip, deferred: none
//	fingerprint:    fingerprint[16]
//	idlist:         k item[k]
//	listdiff:       k item[k] m bitmap[m]            (bitmap trimmed: m = 0 or its last byte is not 0)
//
// An item is its key without the prefix the range's first and last keys share, so an item
// cannot lie outside its range's shared prefix; items MUST increase and lie in the range.
type Message struct {
	Ranges []Range
}

// MarshalBinary returns the encoding of m, after checking every rule ParseMessage enforces.
func (m *Message) MarshalBinary() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 1, m.size())
	b[0] = Version
	var prev *key
	var lo key
	for i := range m.Ranges {
		r := &m.Ranges[i]
		b = appendRange(b, prev, &lo, r)
		hi := r.Upper.key()
		prev = &hi
		if hi != maxKey {
			lo = hi.next()
		}
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("reconcile: marshal: %d bytes exceed %d: %w", len(b), MaxMessageSize, ErrMalformed)
	}
	return b, nil
}

// size returns the encoded size of m, which MUST be valid.
func (m *Message) size() int {
	n := 1
	var prev *key
	var lo key
	for i := range m.Ranges {
		r := &m.Ranges[i]
		n += rangeSize(prev, &lo, r)
		hi := r.Upper.key()
		prev = &hi
		if hi != maxKey {
			lo = hi.next()
		}
	}
	return n
}

// boundSize returns the encoded size of the bound hi after prev (nil for the first range).
func boundSize(prev, hi *key) int {
	kl := strippedLen(hi)
	if prev == nil {
		return 1 + kl
	}
	return 2 + max(kl-commonPrefix(prev, hi), 0)
}

// strippedLen is the length of k without its trailing 0xff bytes.
func strippedLen(k *key) int {
	n := keySize
	for n > 0 && k[n-1] == 0xff {
		n--
	}
	return n
}

// rangeSize returns the encoded size of r, which starts at lo and follows prev.
func rangeSize(prev, lo *key, r *Range) int {
	hi := r.Upper.key()
	n := boundSize(prev, &hi) + 1
	switch r.Mode {
	case ModeFingerprint:
		n += FingerprintSize
	case ModeIdList, ModeListDiff:
		n += uvarintLen(uint64(len(r.Items))) + len(r.Items)*(keySize-commonPrefix(lo, &hi))
		if r.Mode == ModeListDiff {
			m := bitmapLen(r.Lacks)
			n += uvarintLen(uint64(m)) + m
		}
	}
	return n
}

func appendRange(b []byte, prev, lo *key, r *Range) []byte {
	hi := r.Upper.key()
	kl := strippedLen(&hi)
	if prev == nil {
		b = append(b, byte(kl))
		b = append(b, hi[:kl]...)
	} else {
		c := commonPrefix(prev, &hi)
		n := max(kl-c, 0)
		b = append(b, byte(c), byte(n))
		b = append(b, hi[c:c+n]...)
	}
	b = append(b, byte(r.Mode))
	switch r.Mode {
	case ModeFingerprint:
		b = append(b, r.Fingerprint[:]...)
	case ModeIdList, ModeListDiff:
		cp := commonPrefix(lo, &hi)
		b = binary.AppendUvarint(b, uint64(len(r.Items)))
		for _, it := range r.Items {
			k := it.key()
			b = append(b, k[cp:]...)
		}
		if r.Mode == ModeListDiff {
			bm := make([]byte, bitmapLen(r.Lacks))
			for _, i := range r.Lacks {
				bm[i/8] |= 1 << (i % 8)
			}
			b = binary.AppendUvarint(b, uint64(len(bm)))
			b = append(b, bm...)
		}
	}
	return b
}

func bitmapLen(lacks []int) int {
	if len(lacks) == 0 {
		return 0
	}
	return lacks[len(lacks)-1]/8 + 1
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// check enforces the rules every message follows, whatever its direction.
func (m *Message) check() error {
	if m == nil || len(m.Ranges) == 0 {
		return fmt.Errorf("reconcile: empty message: %w", ErrMalformed)
	}
	if len(m.Ranges) > MaxEntries {
		return fmt.Errorf("reconcile: %d ranges exceed %d: %w", len(m.Ranges), MaxEntries, ErrMalformed)
	}
	var lo key
	for i := range m.Ranges {
		r := &m.Ranges[i]
		hi := r.Upper.key()
		if hi.less(lo) {
			return fmt.Errorf("reconcile: range %d: upper bound not increasing: %w", i, ErrMalformed)
		}
		if err := r.checkPayload(&lo, &hi); err != nil {
			return fmt.Errorf("reconcile: range %d: %w", i, err)
		}
		if hi == maxKey {
			if i != len(m.Ranges)-1 {
				return fmt.Errorf("reconcile: range %d ends the item space but more follow: %w", i, ErrMalformed)
			}
			return nil
		}
		lo = hi.next()
	}
	return fmt.Errorf("reconcile: ranges do not reach the end of the item space: %w", ErrMalformed)
}

// checkPayload checks that r, covering [lo, hi], carries exactly the fields of its mode.
func (r *Range) checkPayload(lo, hi *key) error {
	if r.Mode > maxMode {
		return fmt.Errorf("unknown mode %d: %w", r.Mode, ErrMalformed)
	}
	if r.Mode != ModeFingerprint && r.Fingerprint != (Fingerprint{}) {
		return fmt.Errorf("fingerprint in a %s range: %w", r.Mode, ErrMalformed)
	}
	if r.Mode != ModeIdList && r.Mode != ModeListDiff && r.Items != nil {
		return fmt.Errorf("items in a %s range: %w", r.Mode, ErrMalformed)
	}
	if r.Mode != ModeListDiff && r.Lacks != nil {
		return fmt.Errorf("lacks in a %s range: %w", r.Mode, ErrMalformed)
	}
	if len(r.Items) > MaxListItems {
		return fmt.Errorf("%d items exceed %d: %w", len(r.Items), MaxListItems, ErrMalformed)
	}
	for i := range r.Items {
		k := r.Items[i].key()
		if k.less(*lo) || hi.less(k) {
			return fmt.Errorf("item %d outside its range: %w", i, ErrMalformed)
		}
		if i > 0 && r.Items[i-1].Compare(r.Items[i]) >= 0 {
			return fmt.Errorf("items not increasing at %d: %w", i, ErrMalformed)
		}
	}
	for i, x := range r.Lacks {
		if x < 0 || x >= MaxListItems || (i > 0 && x <= r.Lacks[i-1]) {
			return fmt.Errorf("lacks not increasing positions below %d: %w", MaxListItems, ErrMalformed)
		}
	}
	if r.Mode == ModeListDiff && len(r.Items) == 0 && len(r.Lacks) == 0 {
		return fmt.Errorf("empty listdiff (a skip): %w", ErrMalformed)
	}
	return nil
}

// ParseMessage decodes b, refusing anything that is not the one encoding of a valid message
// within the bounds: oversize input, an unknown version or mode, non-minimal varints or bounds,
// items out of order or outside their range, a trailing bitmap zero byte, trailing bytes.
func ParseMessage(b []byte) (*Message, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("reconcile: parse: %d bytes exceed %d: %w", len(b), MaxMessageSize, ErrMalformed)
	}
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != Version {
		return nil, fmt.Errorf("reconcile: parse: version %d, want %d: %w", v, Version, ErrMalformed)
	}
	m := &Message{}
	var prev *key
	var hi, lo key
	for d.err == nil && len(d.b) > 0 {
		if len(m.Ranges) == MaxEntries {
			d.fail("more than %d ranges", MaxEntries)
			break
		}
		hi = d.bound(prev)
		r := Range{Upper: hi.item(), Mode: Mode(d.byte())}
		d.payload(&r, &lo, &hi)
		if d.err != nil {
			break
		}
		m.Ranges = append(m.Ranges, r)
		if hi == maxKey {
			if len(d.b) > 0 {
				d.fail("%d trailing bytes", len(d.b))
			}
			break
		}
		prev = &hi
		lo = hi.next()
	}
	if d.err != nil {
		return nil, fmt.Errorf("reconcile: parse: at byte %d: %w", len(b)-len(d.b), d.err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("reconcile: parse: %w", err)
	}
	return m, nil
}

// decoder reads a message; after the first error every read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format+": %w", append(args, ErrMalformed)...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b) {
		d.fail("truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) byte() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

// uvarint reads a varint of at most limit, in its shortest form.
func (d *decoder) uvarint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if n != uvarintLen(v) {
		d.fail("varint not in its shortest form")
		return 0
	}
	if v > limit {
		d.fail("count %d exceeds %d", v, limit)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bound reads an Upper bound after prev (nil for the first range).
func (d *decoder) bound(prev *key) key {
	k := maxKey
	c := 0
	if prev != nil {
		c = int(d.byte())
		if c >= keySize {
			d.fail("shared prefix %d", c)
			return k
		}
		copy(k[:c], prev[:c])
	}
	n := int(d.byte())
	if c+n > keySize {
		d.fail("bound of %d bytes", c+n)
		return k
	}
	tail := d.take(n)
	if d.err != nil {
		return k
	}
	copy(k[c:], tail)
	switch {
	case n > 0 && tail[n-1] == 0xff:
		d.fail("bound not in its shortest form")
	case prev != nil && k[c] <= prev[c]:
		// Also refuses a c shorter than the shared prefix, so that c has one value.
		d.fail("bound not above the previous one, or shared prefix not %d", c)
	}
	return k
}

// payload reads the payload of r, which covers [lo, hi].
func (d *decoder) payload(r *Range, lo, hi *key) {
	switch r.Mode {
	case ModeSkip, ModeDeferred:
	case ModeFingerprint:
		copy(r.Fingerprint[:], d.take(FingerprintSize))
	case ModeIdList, ModeListDiff:
		cp := commonPrefix(lo, hi)
		n := int(d.uvarint(MaxListItems))
		// An item costs keySize-cp bytes, so the input bounds the allocation, except in a
		// range of one key, where items cost nothing and only one can be distinct.
		if n*(keySize-cp) > len(d.b) || (cp == keySize && n > 1) {
			d.fail("list of %d items in %d bytes", n, len(d.b))
			return
		}
		if n > 0 {
			r.Items = make([]Item, n)
		}
		for i := range r.Items {
			k := *lo
			copy(k[cp:], d.take(keySize-cp))
			r.Items[i] = k.item()
		}
		if r.Mode == ModeIdList {
			return
		}
		bm := d.take(int(d.uvarint(maxBitmap)))
		if len(bm) > 0 && bm[len(bm)-1] == 0 {
			d.fail("bitmap not trimmed")
		}
		for i, x := range bm {
			for j := range 8 {
				if x&(1<<j) != 0 {
					r.Lacks = append(r.Lacks, i*8+j)
				}
			}
		}
	default:
		d.fail("unknown mode %d", r.Mode)
	}
}
