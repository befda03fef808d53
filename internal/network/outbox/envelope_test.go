package outbox

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

var sealNow = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)

// envelopeErrors are the refusals of Open; each refusal wraps exactly one.
var envelopeErrors = []error{
	ErrMalformed, ErrTooLarge, ErrWrongRecipient, ErrTampered, ErrAudience, ErrMismatch,
	ErrExpired, ErrNotYetValid, ErrUnknownKey, ErrForged,
}

func TestSealOpen(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	for _, tc := range []struct {
		name string
		body []byte
		ttl  time.Duration
		want time.Duration
	}{
		{name: "default TTL", body: []byte(`{"patient":"pseudonym","categories":["medication"]}`), want: DefaultTTL},
		{name: "empty body", body: nil, ttl: time.Hour, want: time.Hour},
		{name: "largest body", body: bytes.Repeat([]byte{0xff}, MaxBody), ttl: MaxTTL, want: MaxTTL},
		{name: "fractional TTL rounds up", body: []byte("x"), ttl: 1500 * time.Millisecond, want: 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "consent-request", tc.body, sealNow, tc.ttl)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if m.From != alice.did || m.To != bob.did || m.Kind != "" || checkID(m.ID) != nil {
				t.Fatalf("Seal: metadata %+v", m)
			}
			if len(tc.body) > 0 && bytes.Contains(m.Payload, []byte("consent")) {
				t.Fatalf("Seal: payload shows the kind")
			}
			o, err := Open(t.Context(), m, bob.agr, bob.did, resolverOf(alice), sealNow.Add(time.Second))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if o.ID != m.ID || o.From != alice.did || o.To != bob.did || o.Kind != "consent-request" || o.KeyID != alice.sig.KID() {
				t.Fatalf("Open: %+v", o)
			}
			if !bytes.Equal(o.Body, tc.body) {
				t.Fatalf("Open: body %d bytes, want %d", len(o.Body), len(tc.body))
			}
			if !o.IssuedAt.Equal(sealNow) || o.Expires.Sub(o.IssuedAt) != tc.want {
				t.Fatalf("Open: valid %s to %s, want %v from %s", o.IssuedAt, o.Expires, tc.want, sealNow)
			}
		})
	}
}

func TestSealRefuses(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	for _, tc := range []struct {
		name    string
		from    *crypto.PrivateKey
		to      *crypto.PublicKey
		fromDID string
		toDID   string
		kind    string
		body    []byte
		ttl     time.Duration
		want    error
	}{
		{name: "agreement key signs", from: bob.agr, want: ErrConfig},
		{name: "signing key encrypts", to: bob.sig.Public(), want: ErrConfig},
		{name: "TTL above MaxTTL", ttl: MaxTTL + time.Second, want: ErrConfig},
		{name: "negative TTL", ttl: -time.Second, want: ErrConfig},
		{name: "body too large", body: make([]byte, MaxBody+1), want: ErrTooLarge},
		{name: "not a DID", fromDID: "alice", want: ErrMalformed},
		{name: "DID with a quote", toDID: `did:schakel:b"ob`, want: ErrMalformed},
		{name: "DID too long", toDID: "did:schakel:" + strings.Repeat("b", MaxDIDLen), want: ErrMalformed},
		{name: "punctuation kind", kind: "-", want: nil},
		{name: "kind with upper case", kind: "Consent", want: ErrMalformed},
		{name: "kind too long", kind: strings.Repeat("k", MaxKindLen+1), want: ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to, fromDID, toDID, kind := alice.sig, bob.agr.Public(), alice.did, bob.did, "consent-request"
			if tc.from != nil {
				from = tc.from
			}
			if tc.to != nil {
				to = tc.to
			}
			if tc.fromDID != "" {
				fromDID = tc.fromDID
			}
			if tc.toDID != "" {
				toDID = tc.toDID
			}
			if tc.kind != "" {
				kind = tc.kind
			}
			m, err := Seal(from, fromDID, to, toDID, kind, tc.body, sealNow, tc.ttl)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Seal: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || m != nil {
				t.Fatalf("Seal = %v, %v; want %v", m, err, tc.want)
			}
		})
	}
}

func TestOpenRefuses(t *testing.T) {
	alice, bob, carol := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob"), newOrg(t, "did:schakel:carol")
	mallory := newOrg(t, "did:schakel:mallory")
	resolve := resolverOf(alice, carol, mallory)
	seal := func(t *testing.T) *Message {
		m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "consent-request", []byte("body"), sealNow, time.Hour)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		return m
	}
	good := func(id string) claims {
		return claims{Iss: alice.did, Aud: bob.did, Jti: id, Iat: sealNow.Unix(), Exp: sealNow.Add(time.Hour).Unix(), Kind: "k", Body: "Ym9keQ"}
	}
	expired := sealNow.Add(time.Hour + MaxClockSkew)

	for _, tc := range []struct {
		name string
		make func(t *testing.T) *Message
		key  *crypto.PrivateKey // default bob.agr
		now  time.Time          // default sealNow
		want error
		says string
	}{
		{name: "tampered ciphertext", want: ErrTampered, make: func(t *testing.T) *Message {
			m := seal(t)
			parts := bytes.Split(m.Payload, []byte("."))
			c := parts[3]
			if c[len(c)/2] == 'A' {
				c[len(c)/2] = 'B'
			} else {
				c[len(c)/2] = 'A'
			}
			m.Payload = bytes.Join(parts, []byte("."))
			return m
		}},
		{name: "tampered header", want: ErrTampered, make: func(t *testing.T) *Message {
			m := seal(t)
			parts := bytes.Split(m.Payload, []byte("."))
			hdr, _ := b64.DecodeString(string(parts[0]))
			hdr = bytes.Replace(hdr, []byte(`"enc":"A256GCM"`), []byte(`"enc":"A256GCM","x":1`), 1)
			parts[0] = []byte(b64.EncodeToString(hdr))
			m.Payload = bytes.Join(parts, []byte("."))
			return m
		}},
		{name: "wrong recipient key", key: carol.agr, want: ErrWrongRecipient, says: "encrypted to key", make: seal},
		{name: "addressed to another", want: ErrWrongRecipient, says: "addressed to", make: func(t *testing.T) *Message {
			m := seal(t)
			m.To = carol.did
			return m
		}},
		{name: "wrong audience", want: ErrAudience, make: func(t *testing.T) *Message {
			// Signed by alice for carol, then encrypted to bob.
			m, err := Seal(alice.sig, alice.did, bob.agr.Public(), carol.did, "k", nil, sealNow, time.Hour)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			m.To = bob.did
			return m
		}},
		{name: "expired", now: expired, want: ErrExpired, make: seal},
		{name: "issued in the future", now: sealNow.Add(-MaxClockSkew - time.Second), want: ErrNotYetValid, make: seal},
		{name: "forged signer", want: ErrForged, make: func(t *testing.T) *Message {
			// mallory signs as alice, naming alice's key.
			id := mustID(t)
			return sealRaw(t, good(id), mallory.sig, alice.sig.KID(), TypeMessage, bob.agr.Public(), id, alice.did, bob.did)
		}},
		{name: "unknown signer key", want: ErrUnknownKey, make: func(t *testing.T) *Message {
			// mallory signs as alice, naming her own key, which alice never had.
			id := mustID(t)
			return sealRaw(t, good(id), mallory.sig, mallory.sig.KID(), TypeMessage, bob.agr.Public(), id, alice.did, bob.did)
		}},
		{name: "from mismatch", want: ErrMismatch, says: "from is", make: func(t *testing.T) *Message {
			m := seal(t)
			m.From = carol.did
			return m
		}},
		{name: "id mismatch", want: ErrMismatch, says: "jti", make: func(t *testing.T) *Message {
			m := seal(t)
			m.ID = mustID(t)
			return m
		}},
		{name: "kind mismatch", want: ErrMismatch, says: "kind", make: func(t *testing.T) *Message {
			m := seal(t)
			m.Kind = "referral-grant"
			return m
		}},
		{name: "payload too large", want: ErrTooLarge, make: func(t *testing.T) *Message {
			m := seal(t)
			m.Payload = bytes.Repeat([]byte("A"), MaxPayload+1)
			return m
		}},
		{name: "payload not compact", want: ErrMalformed, make: func(t *testing.T) *Message {
			m := seal(t)
			m.Payload = append(m.Payload, '\n')
			return m
		}},
		{name: "payload garbage", want: ErrMalformed, make: func(t *testing.T) *Message {
			m := seal(t)
			m.Payload = []byte("abc.def")
			return m
		}},
		{name: "bad id", want: ErrMalformed, make: func(t *testing.T) *Message {
			m := seal(t)
			m.ID = m.ID[:21] + "!"
			return m
		}},
		{name: "other token type", want: ErrMalformed, says: "vc+jwt", make: func(t *testing.T) *Message {
			id := mustID(t)
			return sealRaw(t, good(id), alice.sig, "", "vc+jwt", bob.agr.Public(), id, alice.did, bob.did)
		}},
		{name: "unknown claim", want: ErrMalformed, make: func(t *testing.T) *Message {
			id := mustID(t)
			c := struct {
				claims
				Extra string `json:"extra"`
			}{good(id), "x"}
			return sealRaw(t, c, alice.sig, "", TypeMessage, bob.agr.Public(), id, alice.did, bob.did)
		}},
		{name: "lifetime above MaxTTL", want: ErrMalformed, says: "lifetime", make: func(t *testing.T) *Message {
			id := mustID(t)
			c := good(id)
			c.Exp = c.Iat + int64(MaxTTL/time.Second) + 1
			return sealRaw(t, c, alice.sig, "", TypeMessage, bob.agr.Public(), id, alice.did, bob.did)
		}},
		{name: "padded body", want: ErrMalformed, says: "body", make: func(t *testing.T) *Message {
			id := mustID(t)
			c := good(id)
			c.Body = "Ym9keQ=="
			return sealRaw(t, c, alice.sig, "", TypeMessage, bob.agr.Public(), id, alice.did, bob.did)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, now := bob.agr, sealNow
			if tc.key != nil {
				key = tc.key
			}
			if !tc.now.IsZero() {
				now = tc.now
			}
			o, err := Open(t.Context(), tc.make(t), key, bob.did, resolve, now)
			if !errors.Is(err, tc.want) || o != nil {
				t.Fatalf("Open = %+v, %v; want %v", o, err, tc.want)
			}
			for _, other := range envelopeErrors {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("Open: %v also wraps %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Open: %v does not say %q", err, tc.says)
			}
		})
	}
}

// TestOpenValidity checks the edges of the validity window, MaxClockSkew either side.
func TestOpenValidity(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "k", nil, sealNow, time.Hour)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	for _, tc := range []struct {
		name string
		now  time.Time
		want error
	}{
		{"earliest", sealNow.Add(-MaxClockSkew), nil},
		{"too early", sealNow.Add(-MaxClockSkew - time.Second), ErrNotYetValid},
		{"latest", sealNow.Add(time.Hour + MaxClockSkew - time.Nanosecond), nil},
		{"too late", sealNow.Add(time.Hour + MaxClockSkew), ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(t.Context(), m, bob.agr, bob.did, resolverOf(alice), tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("Open at %s: %v, want %v", tc.now, err, tc.want)
			}
		})
	}
}

func TestOpenResolverKey(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "k", nil, sealNow, 0)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	var gotDID, gotKID string
	var gotAt time.Time
	_, err = Open(t.Context(), m, bob.agr, bob.did, func(_ context.Context, did, kid string, at time.Time) (*crypto.PublicKey, error) {
		gotDID, gotKID, gotAt = did, kid, at
		return bob.agr.Public(), nil // an agreement key cannot verify a signature
	}, sealNow)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open with an agreement key as signing key: %v, want ErrUnknownKey", err)
	}
	if gotDID != alice.did || gotKID != alice.sig.KID() || !gotAt.Equal(sealNow) {
		t.Fatalf("resolver asked for %s %s at %s", gotDID, gotKID, gotAt)
	}
	_, err = Open(t.Context(), m, bob.agr, bob.did, func(_ context.Context, _, _ string, _ time.Time) (*crypto.PublicKey, error) {
		return nil, nil
	}, sealNow)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open with a resolver returning nil: %v, want ErrUnknownKey", err)
	}
	if _, err := Open(t.Context(), m, bob.agr, bob.did, nil, sealNow); !errors.Is(err, ErrConfig) {
		t.Fatalf("Open without resolver: %v, want ErrConfig", err)
	}
	if _, err := Open(t.Context(), m, bob.sig, bob.did, resolverOf(alice), sealNow); !errors.Is(err, ErrConfig) {
		t.Fatalf("Open with a signing key: %v, want ErrConfig", err)
	}
}

func TestRecipientKeyID(t *testing.T) {
	alice, bob := newOrg(t, "did:schakel:alice"), newOrg(t, "did:schakel:bob")
	m, err := Seal(alice.sig, alice.did, bob.agr.Public(), bob.did, "k", nil, sealNow, 0)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	kid, err := RecipientKeyID(m)
	if err != nil || kid != bob.agr.KID() {
		t.Fatalf("RecipientKeyID = %q, %v; want %q", kid, err, bob.agr.KID())
	}
	m.Payload = []byte("e30.a.b.c.d") // {} as header
	if _, err := RecipientKeyID(m); !errors.Is(err, ErrMalformed) {
		t.Fatalf("RecipientKeyID without kid: %v, want ErrMalformed", err)
	}
}
