package reconcile

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Item is one element of the reconciled set: a document identified by its SHA-256 (ID) at the
// time it carries (Time, Unix seconds). Items are ordered by (Time, ID).
type Item struct {
	Time uint64
	ID   [32]byte
}

// Compare orders items by Time, then ID. It returns -1, 0 or +1.
func (a Item) Compare(b Item) int {
	if c := cmp.Compare(a.Time, b.Time); c != 0 {
		return c
	}
	return bytes.Compare(a.ID[:], b.ID[:])
}

// keySize is the length of an item's key: 8-byte big-endian time, then the 32-byte id, so that
// byte order is item order.
const keySize = 40

type key [keySize]byte

// maxKey is the greatest key; every message's last range ends at it.
var maxKey = func() (k key) {
	for i := range k {
		k[i] = 0xff
	}
	return k
}()

func (a Item) key() key {
	var k key
	binary.BigEndian.PutUint64(k[:8], a.Time)
	copy(k[8:], a.ID[:])
	return k
}

func (k key) item() Item {
	it := Item{Time: binary.BigEndian.Uint64(k[:8])}
	copy(it.ID[:], k[8:])
	return it
}

func (k key) less(o key) bool { return bytes.Compare(k[:], o[:]) < 0 }

// next returns k+1. The caller MUST NOT call it on maxKey.
func (k key) next() key {
	for i := keySize - 1; i >= 0; i-- {
		k[i]++
		if k[i] != 0 {
			break
		}
	}
	return k
}

// prev returns k-1. The caller MUST NOT call it on the zero key.
func (k key) prev() key {
	for i := keySize - 1; i >= 0; i-- {
		k[i]--
		if k[i] != 0xff {
			break
		}
	}
	return k
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b *key) int {
	for i := range keySize {
		if a[i] != b[i] {
			return i
		}
	}
	return keySize
}

// allBytes reports whether every byte of b equals c.
func allBytes(b []byte, c byte) bool {
	for _, x := range b {
		if x != c {
			return false
		}
	}
	return true
}

// sum is a sum of ids modulo 2^256, big-endian.
type sum [32]byte

// add sets s to s+id mod 2^256.
func (s *sum) add(id *[32]byte) {
	var carry uint64
	for i := 24; i >= 0; i -= 8 {
		var v uint64
		v, carry = bits.Add64(binary.BigEndian.Uint64(s[i:]), binary.BigEndian.Uint64(id[i:]), carry)
		binary.BigEndian.PutUint64(s[i:], v)
	}
}

// sub sets s to s-id mod 2^256, by adding the two's complement of id.
func (s *sum) sub(id *[32]byte) {
	var neg sum
	for i := range neg {
		neg[i] = ^id[i]
	}
	neg.add(&[32]byte{31: 1})
	s.add((*[32]byte)(&neg))
}

// FingerprintSize is the length of a range fingerprint.
const FingerprintSize = 16

// Fingerprint summarises the items of a range: see fingerprint.
type Fingerprint [FingerprintSize]byte

// acc is the summary of a set of items: how many, and the sum of their ids.
type acc struct {
	count uint64
	sum   sum
}

func (a *acc) addItem(id *[32]byte) {
	a.count++
	a.sum.add(id)
}

func (a *acc) merge(b *acc) {
	a.count += b.count
	id := [32]byte(b.sum)
	a.sum.add(&id)
}

// fingerprint is the first 16 bytes of SHA-256(sum || count as 8 bytes big-endian). The hash
// hides the additive structure of the sum from anyone comparing fingerprints, and the count
// binds the size of the set: see the package documentation.
func (a *acc) fingerprint() Fingerprint {
	var buf [40]byte
	copy(buf[:32], a.sum[:])
	binary.BigEndian.PutUint64(buf[32:], a.count)
	h := sha256.Sum256(buf[:])
	return Fingerprint(h[:FingerprintSize])
}

// accOf summarises items.
func accOf(items []Item) acc {
	var a acc
	for i := range items {
		a.addItem(&items[i].ID)
	}
	return a
}
