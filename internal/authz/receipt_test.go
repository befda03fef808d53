package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
)

func (f *fixture) receipt(index uint64, leaf tlog.Hash) Receipt {
	return Receipt{
		Issuer: custodianDID, Subject: requesterDID, RequestID: "req-1", TokenID: "tok-1",
		Origin: "schakel.example/log/custodian", Index: index, LeafHash: leaf,
		Time: t0.Add(1234567 * time.Nanosecond), Outcome: OutcomeGranted,
	}
}

func TestReceiptRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		change func(*Receipt)
	}{
		{"grant", func(*Receipt) {}},
		{"refusal", func(r *Receipt) { r.Outcome, r.TokenID = OutcomeRefused, "" }},
		{"index 0", func(r *Receipt) { r.Index = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.receipt(41, tlog.RecordHash([]byte("entry")))
			tc.change(&r)
			compact, err := NewReceipt(f.custKey, "", r)
			if err != nil {
				t.Fatalf("NewReceipt: %v", err)
			}
			got, err := VerifyReceipt(t.Context(), compact, f.resolve)
			if err != nil {
				t.Fatalf("VerifyReceipt: %v", err)
			}
			if !reflect.DeepEqual(*got, r) {
				t.Fatalf("VerifyReceipt = %+v, want %+v", *got, r)
			}
		})
	}
}

func TestReceiptRefused(t *testing.T) {
	f := newFixture(t)
	good, err := NewReceipt(f.custKey, "", f.receipt(7, tlog.RecordHash([]byte("e"))))
	if err != nil {
		t.Fatalf("NewReceipt: %v", err)
	}
	kid := KID(custodianDID, f.custKey)
	signRaw := func(k *crypto.PrivateKey, typ string, change func(map[string]any)) string {
		var p map[string]any
		payload, _, _ := crypto.ParseUnverified([]byte(good))
		json.Unmarshal(payload, &p)
		change(p)
		body, _ := json.Marshal(p)
		b, err := crypto.Sign(k, body, crypto.Header{Type: typ, KID: kid})
		if err != nil {
			t.Fatalf("crypto.Sign: %v", err)
		}
		return string(b)
	}
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name, compact string
		resolve       KeyResolver
		want          error
	}{
		{"tampered outcome", signRawSplice(parts, func(p map[string]any) { p["outcome"] = OutcomeRefused; delete(p, "token_id") }), f.resolve, ErrSignature},
		{"tampered index", signRawSplice(parts, func(p map[string]any) { p["index"] = 8 }), f.resolve, ErrSignature},
		{"tampered signature", string(flip([]byte(good), len(good)-4)), f.resolve, ErrSignature},
		{"forged", signRaw(mustKey(t, crypto.Ed25519, crypto.UseSign), ReceiptType, func(map[string]any) {}), f.resolve, ErrSignature},
		{"access token typ", signRaw(f.custKey, TokenType, func(map[string]any) {}), f.resolve, ErrMalformed},
		{"unknown outcome", signRaw(f.custKey, ReceiptType, func(p map[string]any) { p["outcome"] = "maybe" }), f.resolve, ErrMalformed},
		{"local time", signRaw(f.custKey, ReceiptType, func(p map[string]any) { p["time"] = "2026-03-14T10:26:53+01:00" }), f.resolve, ErrMalformed},
		{"no leaf hash", signRaw(f.custKey, ReceiptType, func(p map[string]any) { delete(p, "leaf_hash") }), f.resolve, ErrMalformed},
		{"key not valid at the receipt's time", good, func(ctx context.Context, kid string, at time.Time) (*crypto.PublicKey, error) {
			return nil, fmt.Errorf("not valid at %s", at)
		}, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyReceipt(t.Context(), tc.compact, tc.resolve)
			if !errors.Is(err, ErrReceipt) || !errors.Is(err, tc.want) {
				t.Fatalf("VerifyReceipt: %v, want %v and %v", err, ErrReceipt, tc.want)
			}
		})
	}
}

// signRawSplice replaces the payload of a compact JWS, keeping its header and signature.
func signRawSplice(parts []string, change func(map[string]any)) string {
	raw, _ := b64.DecodeString(parts[1])
	var p map[string]any
	json.Unmarshal(raw, &p)
	change(p)
	body, _ := json.Marshal(p)
	return parts[0] + "." + b64.EncodeToString(body) + "." + parts[2]
}

// TestReceiptAfterRotation: a receipt is verified with the key valid at its time, so it stays
// verifiable after the custodian rotates.
func TestReceiptAfterRotation(t *testing.T) {
	f := newFixture(t)
	compact, err := NewReceipt(f.custKey, "", f.receipt(1, tlog.RecordHash([]byte("e"))))
	if err != nil {
		t.Fatalf("NewReceipt: %v", err)
	}
	f.addKey(custodianDID, f.custKey.Public(), t0.Add(-24*time.Hour), t0.Add(time.Hour))
	f.setNow(t0.Add(48 * time.Hour))
	if _, err := VerifyReceipt(t.Context(), compact, f.resolve); err != nil {
		t.Fatalf("VerifyReceipt after rotation: %v", err)
	}
}

// TestReceiptInclusion follows the procedure Receipt documents: check the promised leaf against
// a tree head with tlog.CheckRecord.
func TestReceiptInclusion(t *testing.T) {
	f := newFixture(t)
	var hashes []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	const n = 11
	for i := range int64(n) {
		h, err := tlog.StoredHashes(i, fmt.Appendf(nil, `{"index":%d}`, i), reader)
		if err != nil {
			t.Fatalf("StoredHashes: %v", err)
		}
		hashes = append(hashes, h...)
	}
	const index = 6
	compact, err := NewReceipt(f.custKey, "", f.receipt(index, tlog.RecordHash(fmt.Appendf(nil, `{"index":%d}`, index))))
	if err != nil {
		t.Fatalf("NewReceipt: %v", err)
	}
	r, err := VerifyReceipt(t.Context(), compact, f.resolve)
	if err != nil {
		t.Fatalf("VerifyReceipt: %v", err)
	}
	root, err := tlog.TreeHash(n, reader)
	if err != nil {
		t.Fatalf("TreeHash: %v", err)
	}
	proof, err := tlog.ProveRecord(n, int64(r.Index), reader)
	if err != nil {
		t.Fatalf("ProveRecord: %v", err)
	}
	if err := tlog.CheckRecord(proof, n, root, int64(r.Index), r.LeafHash); err != nil {
		t.Fatalf("CheckRecord: %v", err)
	}
	if err := tlog.CheckRecord(proof, n, root, int64(r.Index)+1, r.LeafHash); err == nil {
		t.Fatal("CheckRecord for another index: no error")
	}
}

func TestNewReceiptRefuses(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		change func(*Receipt)
	}{
		{"no time", func(r *Receipt) { r.Time = time.Time{} }},
		{"no request id", func(r *Receipt) { r.RequestID = "" }},
		{"refusal with token", func(r *Receipt) { r.Outcome = OutcomeRefused }},
		{"no origin", func(r *Receipt) { r.Origin = "" }},
		{"no leaf hash", func(r *Receipt) { r.LeafHash = tlog.Hash{} }},
		{"index beyond int64", func(r *Receipt) { r.Index = 1 << 63 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.receipt(1, tlog.RecordHash([]byte("e")))
			tc.change(&r)
			if _, err := NewReceipt(f.custKey, "", r); !errors.Is(err, ErrMalformed) {
				t.Fatalf("NewReceipt: %v, want %v", err, ErrMalformed)
			}
		})
	}
}
