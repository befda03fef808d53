package vc

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// StatusListSize is the number of entries in every status list schakel issues: the minimum the
// Bitstring Status List recommendation sets (§6.4, herd privacy), so that a flipped bit says nothing
// about whom it concerns. Indexes are drawn at random for the same reason.
const StatusListSize = 131072

// MaxStatusListSize bounds the decompressed size of a status list accepted from outside, against
// decompression bombs.
const MaxStatusListSize = 8 * StatusListSize

// Bits is a decoded bitstring; bit 0 is the most significant bit of the first byte (§2.2).
type Bits []byte

// NewBits returns an all-zero bitstring of n entries.
func NewBits(n int) Bits { return make(Bits, (n+7)/8) }

// Len is the number of entries.
func (b Bits) Len() int { return len(b) * 8 }

// Get reports whether entry i is set; out-of-range entries are unset.
func (b Bits) Get(i int) bool {
	if i < 0 || i >= b.Len() {
		return false
	}
	return b[i/8]&(0x80>>(i%8)) != 0
}

// Set sets entry i.
func (b Bits) Set(i int) { b[i/8] |= 0x80 >> (i % 8) }

// Covers reports whether every entry set in o is set in b as well.
func (b Bits) Covers(o Bits) bool {
	if len(o) > len(b) {
		return false
	}
	for i := range o {
		if o[i]&^b[i] != 0 {
			return false
		}
	}
	return true
}

// Encode returns the encodedList form: multibase base64url (prefix "u") of the GZIP-compressed
// bitstring (§2.2).
func (b Bits) Encode() string {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return "u" + base64.RawURLEncoding.EncodeToString(buf.Bytes())
}

// DecodeBits parses an encodedList, refusing lists shorter than StatusListSize or longer than
// MaxStatusListSize entries. It inflates at most MaxStatusListSize/8+1 bytes, whatever the input.
func DecodeBits(encoded string) (Bits, error) {
	// An encodedList travels inside a credential: one longer than a credential may be is refused
	// before it is decoded.
	if len(encoded) > MaxSize {
		return nil, fmt.Errorf("%w: encodedList of %d bytes exceeds %d", ErrTooLarge, len(encoded), MaxSize)
	}
	if len(encoded) < 2 || encoded[0] != 'u' {
		return nil, fmt.Errorf("%w: encodedList must be multibase base64url", ErrMalformed)
	}
	z, err := base64.RawURLEncoding.DecodeString(encoded[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: encodedList: %w", ErrMalformed, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, fmt.Errorf("%w: encodedList: %w", ErrMalformed, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxStatusListSize/8+1))
	if err != nil {
		return nil, fmt.Errorf("%w: encodedList: %w", ErrMalformed, err)
	}
	if len(raw)*8 > MaxStatusListSize {
		return nil, fmt.Errorf("%w: status list larger than %d entries", ErrTooLarge, MaxStatusListSize)
	}
	if len(raw)*8 < StatusListSize {
		return nil, fmt.Errorf("%w: status list of %d entries, at least %d required", ErrMalformed, len(raw)*8, StatusListSize)
	}
	return Bits(raw), nil
}

// StatusListState is the issuer's side of one status list: which indexes are handed out and which are
// revoked. Revocation is permanent: a set bit is never cleared, and verifiers refuse a list that
// clears one (ErrRollback).
type StatusListState struct {
	ListID    string `json:"listId"`
	Issuer    string `json:"issuer"`
	Allocated Bits   `json:"allocated"`
	Revoked   Bits   `json:"revoked"`
	Count     int    `json:"count"`
}

// NewStatusListState starts list number n of an issuer.
func NewStatusListState(issuer string, n int) *StatusListState {
	return &StatusListState{
		ListID:    StatusListID(issuer, n),
		Issuer:    issuer,
		Allocated: NewBits(StatusListSize),
		Revoked:   NewBits(StatusListSize),
	}
}

// StatusListID is the id of list n of an issuer.
func StatusListID(issuer string, n int) string { return issuer + "/status/" + strconv.Itoa(n) }

// Allocate hands out an unused index at random and returns the credentialStatus entry for it.
func (s *StatusListState) Allocate() (*StatusEntry, error) {
	if s.Count >= StatusListSize {
		return nil, fmt.Errorf("status list %s is full", s.ListID)
	}
	for {
		n, err := rand.Int(rand.Reader, big.NewInt(StatusListSize))
		if err != nil {
			return nil, err
		}
		i := int(n.Int64())
		if s.Allocated.Get(i) {
			continue
		}
		s.Allocated.Set(i)
		s.Count++
		idx := strconv.Itoa(i)
		return &StatusEntry{
			ID:                   s.ListID + "#" + idx,
			Type:                 "BitstringStatusListEntry",
			StatusPurpose:        "revocation",
			StatusListIndex:      idx,
			StatusListCredential: s.ListID,
		}, nil
	}
}

// Revoke sets the entry's bit. Revoking an index never handed out is an error.
func (s *StatusListState) Revoke(e *StatusEntry) error {
	if e == nil || e.StatusListCredential != s.ListID {
		return fmt.Errorf("credential status is not in list %s", s.ListID)
	}
	i := e.Index()
	if !s.Allocated.Get(i) {
		return fmt.Errorf("%w: index %d of %s was never issued", ErrNotFound, i, s.ListID)
	}
	s.Revoked.Set(i)
	return nil
}

// Issue signs the current list as a BitstringStatusListCredential with id ListID. Lists of one id are
// ordered by iat and by their bits: a later list sets every bit an earlier one set.
func (s *StatusListState) Issue(k *crypto.PrivateKey, t time.Time) ([]byte, *Credential, error) {
	return Issue(k, Request{
		Kind:       StatusListCredential,
		ID:         s.ListID,
		Issuer:     s.Issuer,
		IssuedAt:   t,
		StatusList: &StatusListSubject{ID: s.ListID + "#list", Type: "BitstringStatusList", StatusPurpose: "revocation", EncodedList: s.Revoked.Encode()},
	})
}

// NewID returns a fresh credential id: a random (version 4) UUID URN.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("urn:uuid:%08x-%04x-%04x-%04x-%012x",
		binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint16(b[6:8]),
		binary.BigEndian.Uint16(b[8:10]), b[10:16])
}
