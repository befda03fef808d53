package authz

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/store"
)

func TestAssertionRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		change func(*AssertionClaims)
	}{
		{"plain", func(*AssertionClaims) {}},
		{"referral grant", func(c *AssertionClaims) { c.ReferralGrant = "grant-7" }},
		{"emergency", func(c *AssertionClaims) {
			c.Emergency = &Emergency{Reason: "unconscious", BreakGlass: true}
			c.Purpose = "ETREAT"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			tc.change(&c)
			jwe := f.assertion(c)
			if bytes.Contains(jwe, []byte(testBSN)) {
				t.Fatal("NewAssertion: BSN visible in the JWE")
			}
			got, err := f.verifier.Open(t.Context(), jwe)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !reflect.DeepEqual(*got, c) {
				t.Fatalf("Open = %+v, want %+v", *got, c)
			}
		})
	}
}

func TestNewAssertionDefaults(t *testing.T) {
	f := newFixture(t)
	f.setNow(time.Now())
	c := f.claims()
	c.ID, c.IssuedAt, c.Expiry = "", time.Time{}, time.Time{}
	got, err := f.verifier.Open(t.Context(), f.assertion(c))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if len(got.ID) != 22 || got.Expiry.Sub(got.IssuedAt) != MaxAssertionLifetime {
		t.Fatalf("Open: jti %q, lifetime %v; want a 22-character jti and %v", got.ID, got.Expiry.Sub(got.IssuedAt), MaxAssertionLifetime)
	}
}

// TestOpenRefuses checks each refusal, that it is an invalid_grant with the right reason and no
// BSN, and that it changes nothing: the jti of the refused assertion can still be used.
func TestOpenRefuses(t *testing.T) {
	f := newFixture(t)
	forger := mustKey(t, crypto.Ed25519, crypto.UseSign)
	reqKID := KID(requesterDID, f.reqKey)
	custPub := f.custEnc.Public()
	raw := func(change func(p map[string]any)) func(c AssertionClaims) []byte {
		return func(c AssertionClaims) []byte {
			p := payloadOf(c)
			change(p)
			return f.sealRaw(f.reqKey, AssertionType, reqKID, p, custPub)
		}
	}
	for _, tc := range []struct {
		name string
		make func(c AssertionClaims) []byte
		want error
	}{
		{"tampered ciphertext", func(c AssertionClaims) []byte {
			jwe := f.assertion(c)
			return flip(jwe, bytes.LastIndexByte(jwe, '.')-5)
		}, ErrMalformed},
		{"tampered header", func(c AssertionClaims) []byte { return flip(f.assertion(c), 10) }, ErrMalformed},
		{"forged signature", func(c AssertionClaims) []byte {
			return f.sealRaw(forger, AssertionType, reqKID, payloadOf(c), custPub)
		}, ErrSignature},
		{"signer's own kid for another DID", func(c AssertionClaims) []byte {
			return f.sealRaw(f.reqKey, AssertionType, custodianDID+"#"+f.reqKey.KID(), payloadOf(c), custPub)
		}, ErrUnknownKey},
		{"iss is not the signer", raw(func(p map[string]any) { p["iss"], p["sub"] = custodianDID, custodianDID }), ErrSignature},
		{"sub is not iss", raw(func(p map[string]any) { p["sub"] = otherDID }), ErrMalformed},
		{"wrong audience, hosted elsewhere", raw(func(p map[string]any) { p["aud"] = otherDID }), ErrAudience},
		{"wrong audience, not hosted", raw(func(p map[string]any) { p["aud"] = "did:schakel:nothere" }), ErrAudience},
		{"encrypted to another hosted organisation", func(c AssertionClaims) []byte {
			return f.sealRaw(f.reqKey, AssertionType, reqKID, payloadOf(c), f.otherEn.Public())
		}, ErrAudience},
		{"encrypted to a key not hosted here", func(c AssertionClaims) []byte {
			return f.sealRaw(f.reqKey, AssertionType, reqKID, payloadOf(c), mustKey(t, crypto.P256, crypto.UseEnc).Public())
		}, ErrUnknownKey},
		{"expired", func(c AssertionClaims) []byte {
			c.IssuedAt, c.Expiry = t0.Add(-5*time.Minute), t0.Add(-61*time.Second)
			return f.assertion(c)
		}, ErrExpired},
		{"issued in the future beyond skew", func(c AssertionClaims) []byte {
			c.IssuedAt, c.Expiry = t0.Add(61*time.Second), t0.Add(3*time.Minute)
			return f.assertion(c)
		}, ErrNotYetValid},
		{"lifetime over five minutes", raw(func(p map[string]any) { p["exp"] = t0.Add(5*time.Minute + time.Second).Unix() }), ErrLifetime},
		{"exp before iat", raw(func(p map[string]any) { p["exp"] = t0.Add(-time.Second).Unix() }), ErrLifetime},
		{"BSN fails the 11-proof", raw(func(p map[string]any) { p["bsn"] = badBSN }), crypto.ErrBSN},
		{"BSN as a number", raw(func(p map[string]any) { p["bsn"] = 111222333 }), ErrMalformed},
		{"no jti", raw(func(p map[string]any) { delete(p, "jti") }), ErrMalformed},
		{"no cnf", raw(func(p map[string]any) { delete(p, "cnf") }), ErrMalformed},
		{"no employee assurance", raw(func(p map[string]any) { delete(p["employee"].(map[string]any), "assurance") }), ErrMalformed},
		{"unknown claim", raw(func(p map[string]any) { p["scope"] = "everything" }), ErrMalformed},
		{"aud as array", raw(func(p map[string]any) { p["aud"] = []string{custodianDID} }), ErrMalformed},
		{"wrong typ", func(c AssertionClaims) []byte {
			return f.sealRaw(f.reqKey, "JWT", reqKID, payloadOf(c), custPub)
		}, ErrMalformed},
		{"access token typ", func(c AssertionClaims) []byte {
			return f.sealRaw(f.reqKey, TokenType, reqKID, payloadOf(c), custPub)
		}, ErrMalformed},
		{"oversized", func(c AssertionClaims) []byte {
			return bytes.Repeat([]byte("A"), MaxAssertionSize+1)
		}, ErrTooLarge},
		{"oversized claims", raw(func(p map[string]any) { p["purpose"] = strings.Repeat("x", 10000) }), ErrTooLarge},
		{"plain JWS, not encrypted", func(c AssertionClaims) []byte {
			b, _ := crypto.Sign(f.reqKey, []byte(`{}`), crypto.Header{Type: AssertionType, KID: reqKID})
			return b
		}, ErrMalformed},
		{"empty", func(AssertionClaims) []byte { return nil }, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			_, err := f.verifier.Open(t.Context(), tc.make(c))
			if !errors.Is(err, ErrInvalidGrant) || !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want invalid grant and %v", err, tc.want)
			}
			if strings.Contains(err.Error(), testBSN) || strings.Contains(err.Error(), badBSN) {
				t.Fatalf("Open: error names the BSN: %v", err)
			}
			if oe := ToOAuth(err); oe.Code != CodeInvalidGrant || strings.Contains(oe.Description, testBSN) {
				t.Fatalf("ToOAuth(%v) = %+v", err, oe)
			}
			// Nothing was recorded: the same jti opens once it comes in a valid assertion.
			if _, err := f.verifier.Open(t.Context(), f.assertion(c)); err != nil {
				t.Fatalf("Open of a valid assertion with the refused one's jti: %v", err)
			}
		})
	}
}

func TestOpenSkew(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name     string
		iat, exp time.Time
	}{
		{"iat 59 s ahead", t0.Add(59 * time.Second), t0.Add(2 * time.Minute)},
		{"exp 59 s ago", t0.Add(-4 * time.Minute), t0.Add(-59 * time.Second)},
		{"exactly five minutes", t0, t0.Add(5 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			c.IssuedAt, c.Expiry = tc.iat, tc.exp
			if _, err := f.verifier.Open(t.Context(), f.assertion(c)); err != nil {
				t.Fatalf("Open: %v", err)
			}
		})
	}
}

func TestOpenKeyRotatedOut(t *testing.T) {
	f := newFixture(t)
	c := f.claims()
	jwe := f.assertion(c)
	// The requester rotated its key a second before now: the signature was made in time, but
	// the key is no longer valid now.
	f.addKey(requesterDID, f.reqKey.Public(), t0.Add(-24*time.Hour), t0.Add(-time.Second))
	_, err := f.verifier.Open(t.Context(), jwe)
	if !errors.Is(err, ErrInvalidGrant) || !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open after rotation: %v, want invalid grant and %v", err, ErrUnknownKey)
	}
}

func TestOpenReplay(t *testing.T) {
	f := newFixture(t)
	c := f.claims()
	jwe := f.assertion(c)
	if _, err := f.verifier.Open(t.Context(), jwe); err != nil {
		t.Fatalf("Open: %v", err)
	}
	for _, tc := range []struct {
		name string
		jwe  []byte
	}{
		{"same JWE", jwe},
		{"same jti, new JWE", f.assertion(c)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.verifier.Open(t.Context(), tc.jwe); !errors.Is(err, ErrReplay) || !errors.Is(err, ErrInvalidGrant) {
				t.Fatalf("Open replayed: %v, want %v", err, ErrReplay)
			}
		})
	}
	// A jti is unique per issuer: another issuer may use the same one.
	other := mustKey(t, crypto.Ed25519, crypto.UseSign)
	f.addKey(otherDID, other.Public(), t0.Add(-time.Hour), time.Time{})
	c.Issuer = otherDID
	jwe, err := NewAssertion(other, "", c, f.custEnc.Public())
	if err != nil {
		t.Fatalf("NewAssertion: %v", err)
	}
	if _, err := f.verifier.Open(t.Context(), jwe); err != nil {
		t.Fatalf("Open of another issuer's assertion with the same jti: %v", err)
	}
}

func TestOpenReplayAfterRestart(t *testing.T) {
	f := newFixture(t)
	f.setNow(time.Now()) // badger's TTLs run on the real clock
	dir := t.TempDir()
	open := func() *store.DB {
		db, err := store.Open(store.Config{Dir: dir})
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		return db
	}
	db := open()
	jwe := f.assertion(f.claims())
	if _, err := f.newVerifier(f.newReplay(db)).Open(t.Context(), jwe); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db = open()
	defer db.Close()
	if _, err := f.newVerifier(f.newReplay(db)).Open(t.Context(), jwe); !errors.Is(err, ErrReplay) {
		t.Fatalf("Open after restart: %v, want %v", err, ErrReplay)
	}
}

func TestOpenReplayConcurrent(t *testing.T) {
	f := newFixture(t)
	jwe := f.assertion(f.claims())
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = f.verifier.Open(t.Context(), jwe) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrReplay):
			t.Fatalf("Open: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent Opens of one assertion succeeded, want 1", ok, n)
	}
}

func TestOpenReplayStoreFailure(t *testing.T) {
	f := newFixture(t)
	if err := f.db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := f.verifier.Open(t.Context(), f.assertion(f.claims()))
	if err == nil || errors.Is(err, ErrInvalidGrant) {
		t.Fatalf("Open with a closed store: %v, want a storage error", err)
	}
	if oe := ToOAuth(err); oe.Code != CodeServerError || oe.Description != "internal error" {
		t.Fatalf("ToOAuth(%v) = %+v, want server_error", err, oe)
	}
}

func TestNewAssertionRefuses(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name   string
		kid    string
		change func(*AssertionClaims)
		want   error
	}{
		{"BSN fails the 11-proof", "", func(c *AssertionClaims) { c.BSN = badBSN }, crypto.ErrBSN},
		{"no BSN", "", func(c *AssertionClaims) { c.BSN = "" }, crypto.ErrBSN},
		{"lifetime", "", func(c *AssertionClaims) { c.Expiry = c.IssuedAt.Add(6 * time.Minute) }, ErrLifetime},
		{"no purpose", "", func(c *AssertionClaims) { c.Purpose = "" }, ErrMalformed},
		{"no employee", "", func(c *AssertionClaims) { c.Employee = Employee{} }, ErrMalformed},
		{"bad jkt", "", func(c *AssertionClaims) { c.DPoPJKT = "abc" }, ErrMalformed},
		{"emergency without reason", "", func(c *AssertionClaims) { c.Emergency = &Emergency{} }, ErrMalformed},
		{"issuer not a DID", "", func(c *AssertionClaims) { c.Issuer = "requester" }, ErrMalformed},
		{"kid of another DID", otherDID + "#x", func(*AssertionClaims) {}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.claims()
			tc.change(&c)
			_, err := NewAssertion(f.reqKey, tc.kid, c, f.custEnc.Public())
			if !errors.Is(err, tc.want) {
				t.Fatalf("NewAssertion: %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), badBSN) || strings.Contains(err.Error(), testBSN) {
				t.Fatalf("NewAssertion: error names the BSN: %v", err)
			}
		})
	}
}

func TestNewVerifierConfig(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		cfg  VerifierConfig
		ok   bool
	}{
		{"zero", VerifierConfig{}, true},
		{"defaults", DefaultVerifierConfig(), true},
		{"lifetime too long", VerifierConfig{MaxLifetime: 10 * time.Minute}, false},
		{"negative skew", VerifierConfig{MaxSkew: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.cfg, f.recipient, f.resolve, f.replay)
			if (err == nil) != tc.ok {
				t.Fatalf("NewVerifier: %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := NewVerifier(VerifierConfig{}, nil, f.resolve, f.replay); err == nil {
		t.Fatal("NewVerifier without recipient: no error")
	}
}

func TestOpenReserved(t *testing.T) {
	f := newFixture(t)
	jwe := f.assertion(f.claims())
	c, r, err := f.verifier.OpenReserved(t.Context(), jwe)
	if err != nil || c == nil || r == nil {
		t.Fatalf("OpenReserved: %v", err)
	}
	// Held: a concurrent use of the jti is a replay even before the record is written.
	if _, _, err := f.verifier.OpenReserved(t.Context(), jwe); !errors.Is(err, ErrReplay) {
		t.Fatalf("OpenReserved while reserved: %v, want %v", err, ErrReplay)
	}
	// Released without its record durable (the caller's transaction failed): not spent.
	r.Release()
	r.Release() // idempotent
	_, r, err = f.verifier.OpenReserved(t.Context(), jwe)
	if err != nil {
		t.Fatalf("OpenReserved after a release without record: %v", err)
	}
	var b store.Batch
	r.Record(&b)
	if err := f.db.Write(t.Context(), &b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	r.Release()
	// Recorded and released: spent.
	if _, _, err := f.verifier.OpenReserved(t.Context(), jwe); !errors.Is(err, ErrReplay) {
		t.Fatalf("OpenReserved after the record: %v, want %v", err, ErrReplay)
	}
	var none *Reservation
	none.Release() // the nil reservation of a failed open
}
