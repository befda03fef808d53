package vc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/store/storetest"
)

// gzipList returns the encodedList form of n zero bytes: a list of 8n entries, or, for n far
// beyond MaxStatusListSize/8, a decompression bomb.
func gzipList(t testing.TB, n int) string {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatalf("gzip.NewWriterLevel: %v", err)
	}
	zero := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, len(zero))
		if _, err := zw.Write(zero[:k]); err != nil {
			t.Fatalf("gzip Write: %v", err)
		}
		n -= k
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip Close: %v", err)
	}
	return "u" + base64.RawURLEncoding.EncodeToString(buf.Bytes())
}

// statusListSeeds are encodedLists to start from: lists as the package issues them (empty, with
// revocations, of the largest accepted size) and lists wrong in each way DecodeBits knows of. They
// are the same in every process, and small: the fuzzing engine spends its time minimising large
// inputs (TestDecodeBitsBounds has the large ones).
func statusListSeeds(t testing.TB) []string {
	st := NewStatusListState("did:schakel:seed", 1)
	issued := []string{st.Revoked.Encode()}
	for _, i := range []int{0, 7, 8, 4711, StatusListSize - 1} {
		st.Revoked.Set(i)
	}
	issued = append(issued, st.Revoked.Encode())
	largest := NewBits(MaxStatusListSize)
	largest.Set(0)
	largest.Set(MaxStatusListSize - 1)
	return append(issued,
		largest.Encode(),
		NewBits(StatusListSize-8).Encode(),    // one byte short
		NewBits(MaxStatusListSize+8).Encode(), // one byte too long
		gzipList(t, 1<<20),                    // 1 MiB of zeros in about 1 KiB
		"z"+st.Revoked.Encode()[1:],           // another multibase
		"u"+base64.RawURLEncoding.EncodeToString([]byte("not gzip")),
		"u", "",
	)
}

// FuzzDecodeBits: DecodeBits never panics; an encodedList longer than a credential is refused
// with ErrTooLarge before it is decoded; every refusal is ErrMalformed or ErrTooLarge; what
// decodes has between StatusListSize and MaxStatusListSize entries, round-trips
// (decode, encode, decode gives the same bits) and answers Get as the bitstring's definition says
// (§2.2: bit 0 is the most significant bit of the first byte; out of range is unset).
func FuzzDecodeBits(f *testing.F) {
	for i, s := range statusListSeeds(f) {
		f.Add(s, uint32(i*4099))
	}
	f.Fuzz(func(t *testing.T, encoded string, index uint32) {
		bits, err := DecodeBits(encoded)
		if len(encoded) > MaxSize {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodeBits(%d bytes) = %v, want ErrTooLarge", len(encoded), err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodeBits: untyped error %v", err)
			}
			return
		}
		if bits.Len() < StatusListSize || bits.Len() > MaxStatusListSize {
			t.Fatalf("DecodeBits accepted a list of %d entries", bits.Len())
		}
		again, err := DecodeBits(bits.Encode())
		if err != nil {
			t.Fatalf("DecodeBits(Encode(decoded)): %v", err)
		}
		if !bytes.Equal(again, bits) {
			t.Fatal("decode, encode, decode changed the bits")
		}
		if !again.Covers(bits) || !bits.Covers(again) {
			t.Fatal("a list does not cover its own round trip")
		}
		i := int(index % uint32(bits.Len()+64)) // some beyond the end
		want := i < len(bits)*8 && bits[i/8]>>(7-i%8)&1 == 1
		if bits.Get(i) != want {
			t.Fatalf("Get(%d) = %v, want %v", i, bits.Get(i), want)
		}
	})
}

// TestDecodeBitsBounds: an encodedList longer than a credential is refused with ErrTooLarge before
// it is decoded, and a decompression bomb that fits in a credential (24 KiB inflating to 24 MiB) is
// refused with ErrTooLarge after inflating no more than the bound.
func TestDecodeBitsBounds(t *testing.T) {
	if _, err := DecodeBits(NewBits(StatusListSize).Encode() + strings.Repeat("A", MaxSize)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("DecodeBits(longer than a credential) = %v, want ErrTooLarge", err)
	}
	bomb := gzipList(t, 24<<20)
	if len(bomb) > MaxSize {
		t.Fatalf("bomb of %d bytes does not fit in a credential", len(bomb))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := DecodeBits(bomb)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("DecodeBits(bomb) = %v, want ErrTooLarge", err)
	}
	// Reading up to the bound doubles a buffer up to MaxStatusListSize/8 bytes; 2 MiB leaves room
	// for that and the decoder's state, and is a tenth of what the bomb inflates to.
	if got := after.TotalAlloc - before.TotalAlloc; got > 2<<20 {
		t.Fatalf("DecodeBits(bomb) allocated %d bytes, want at most 2 MiB", got)
	}
}

// staticLists serves one encodedList as every status list.
type staticLists struct{ encoded string }

func (s *staticLists) StatusBits(context.Context, string) (Bits, error) { return DecodeBits(s.encoded) }

// FuzzStatusCheck checks a credential's status entry against an arbitrary list, and offers that
// list, signed by the credential's issuer, to the store. Properties: no panic; an index beyond
// MaxStatusListSize never passes StatusEntry validation; the check answers ErrStatusUnavailable
// for a list that does not decode, ErrRevoked exactly when the entry's bit is set, and nil
// otherwise; a signed list the store refuses (undecodable, or clearing a revocation the held list
// has: ErrRollback) leaves the store unchanged. Lists the store would take are not offered, so
// that every input meets the same store.
func FuzzStatusCheck(f *testing.F) {
	ctx := context.Background()
	fx := newFixture(f)
	cred, err := Parse(fx.orgCredential(fx.reg, fx.rogue.id, "Huisartsenpraktijk Jansen", t0, time.Hour))
	if err != nil {
		f.Fatalf("Parse: %v", err)
	}
	// The held list revokes two entries, so that a list forgetting them is a rollback.
	for range 2 {
		e, err := fx.reg.list.Allocate()
		if err != nil {
			f.Fatalf("Allocate: %v", err)
		}
		if err := fx.reg.list.Revoke(e); err != nil {
			f.Fatalf("Revoke: %v", err)
		}
	}
	fx.publishList(fx.reg, t0.Add(time.Second))
	held, err := fx.s.StatusBits(ctx, fx.reg.list.ListID)
	if err != nil {
		f.Fatalf("StatusBits: %v", err)
	}
	state := storetest.Watch(f, fx.db)
	lists := &staticLists{}
	v := NewVerifier(VerifierConfig{Anchors: TrustAnchors{OrganizationCredential: {fx.reg.id}}, Now: func() time.Time { return t0.Add(time.Minute) }}, fx.dids, lists)

	f.Add(held.Encode(), uint32(cred.Status.Index()))
	for i, s := range statusListSeeds(f) {
		f.Add(s, uint32(i*4099))
	}
	f.Add(NewBits(StatusListSize).Encode(), uint32(MaxStatusListSize))
	f.Fuzz(func(t *testing.T, encoded string, index uint32) {
		idx := strconv.FormatUint(uint64(index), 10)
		e := &StatusEntry{
			ID: cred.Status.StatusListCredential + "#" + idx, Type: "BitstringStatusListEntry", StatusPurpose: "revocation",
			StatusListIndex: idx, StatusListCredential: cred.Status.StatusListCredential,
		}
		if err := e.validate(); err != nil {
			if index < MaxStatusListSize {
				t.Fatalf("validate(index %d): %v", index, err)
			}
			return
		}
		if index >= MaxStatusListSize {
			t.Fatalf("validate accepted index %d beyond %d", index, MaxStatusListSize)
		}
		c := *cred
		c.Status = e
		lists.encoded = encoded
		err := v.Check(ctx, &c)
		bits, derr := DecodeBits(encoded)
		switch {
		case derr != nil:
			if !errors.Is(err, ErrStatusUnavailable) {
				t.Fatalf("Check against an undecodable list = %v, want ErrStatusUnavailable", err)
			}
		case bits.Get(int(index)):
			if !errors.Is(err, ErrRevoked) {
				t.Fatalf("Check with bit %d set = %v, want ErrRevoked", index, err)
			}
		case err != nil:
			t.Fatalf("Check with bit %d unset: %v", index, err)
		}

		list, issued, err := Issue(fx.reg.sig, Request{
			Kind: StatusListCredential, ID: fx.reg.list.ListID, Issuer: fx.reg.id, IssuedAt: t0.Add(2 * time.Second),
			StatusList: &StatusListSubject{ID: fx.reg.list.ListID + "#list", Type: "BitstringStatusList", StatusPurpose: "revocation", EncodedList: encoded},
		})
		if err != nil {
			return // no credential can carry it
		}
		// JSON encoding replaces invalid UTF-8: the list signed is the one to judge.
		bits, derr = DecodeBits(issued.StatusList.EncodedList)
		if derr == nil && bits.Covers(held) {
			return // the store would take it
		}
		if _, _, err := fx.s.Add(ctx, list); err == nil {
			t.Fatal("the store took a list that does not decode or clears a revocation")
		} else if derr == nil && !errors.Is(err, ErrRollback) {
			t.Fatalf("Add(list clearing a revocation) = %v, want ErrRollback", err)
		}
		if !state.Unchanged(t) {
			t.Fatal("a refused status list changed the store")
		}
		if got, err := fx.s.StatusBits(ctx, fx.reg.list.ListID); err != nil || !bytes.Equal(got, held) {
			t.Fatalf("StatusBits after a refused list: %v", err)
		}
	})
}
