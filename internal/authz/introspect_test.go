package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

// consents is a fake consent store: a set of revoked bases and a generation bumped on revoke.
type consents struct {
	mu      sync.Mutex
	revoked map[string]bool
	gen     atomic.Uint64
	checks  atomic.Int64
}

func (c *consents) active(_ context.Context, basis string) bool {
	c.checks.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.revoked[basis]
}

// revoke records the revocation, then bumps the generation, as the contract requires.
func (c *consents) revoke(basis string, bump bool) {
	c.mu.Lock()
	if c.revoked == nil {
		c.revoked = map[string]bool{}
	}
	c.revoked[basis] = true
	c.mu.Unlock()
	if bump {
		c.gen.Add(1)
	}
}

func (f *fixture) introspector(t testing.TB, cfg IntrospectorConfig, c *consents) *Introspector {
	t.Helper()
	cfg.Now = f.clock
	i, err := NewIntrospector(cfg, f.tokenKeys, c.active, c.gen.Load)
	if err != nil {
		t.Fatalf("NewIntrospector: %v", err)
	}
	return i
}

func TestIntrospectActive(t *testing.T) {
	f := newFixture(t)
	var cs consents
	in := f.introspector(t, IntrospectorConfig{}, &cs)
	c := f.tokenClaims()
	c.BreakGlass = true
	tok := f.token(c)
	for round := range 2 { // the second answer comes from the cache
		r := in.Introspect(t.Context(), tok)
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("json.Unmarshal: %v", err)
		}
		want := map[string]any{
			"active": true, "scope": c.Scope, "client_id": requesterDID, "sub": requesterDID,
			"aud": custodianDID, "iss": custodianDID, "exp": float64(c.Expiry.Unix()),
			"iat": float64(c.IssuedAt.Unix()), "jti": c.ID, "token_type": "DPoP",
			"cnf": map[string]any{"jkt": f.dpopKey.KID()}, "patient": pseudonym,
			"basis": c.Basis, "break_glass": true,
			"employee": map[string]any{"uzi": c.Employee.UZI, "role": c.Employee.Role, "name": c.Employee.Name},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: Introspect = %s\nwant %v", round, b, want)
		}
	}
	if n := cs.checks.Load(); n != 1 {
		t.Fatalf("basis checked %d times, want 1 (the second introspection is cached)", n)
	}
}

func TestIntrospectInactive(t *testing.T) {
	f := newFixture(t)
	other := mustKey(t, crypto.Ed25519, crypto.UseSign)
	f.addKey(otherDID, other.Public(), t0.Add(-time.Hour), time.Time{})
	good := f.tokenClaims()
	for _, tc := range []struct {
		name  string
		token func() string
		now   time.Time
		want  error
	}{
		{"unknown token", func() string { return "eyJhbGciOiJFZERTQSJ9.e30.AAAA" }, t0, ErrInvalidToken},
		{"empty", func() string { return "" }, t0, ErrMalformed},
		{"malformed", func() string { return "%%%" }, t0, ErrMalformed},
		{"bad signature", func() string { tok := f.token(good); return string(flip([]byte(tok), len(tok)-2)) }, t0, ErrSignature},
		{"expired", func() string { return f.token(good) }, t0.Add(10 * time.Minute), ErrExpired},
		{"unknown issuer", func() string { return f.tokenAs(t, otherDID, other) }, t0, ErrUnknownKey},
		{"too large", func() string { return strings.Repeat("a", MaxTokenSize+1) }, t0, ErrTooLarge},
		{"revoked basis", func() string {
			c := good
			c.Basis = "consent-revoked"
			return f.token(c)
		}, t0, ErrBasisRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := &consents{}
			cs.revoke("consent-revoked", true)
			in := f.introspector(t, IntrospectorConfig{}, cs)
			tok := tc.token()
			f.setNow(tc.now)
			defer f.setNow(t0)
			r, err := in.Check(t.Context(), tok)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Check: %v, want %v and %v", err, ErrInvalidToken, tc.want)
			}
			if b, _ := json.Marshal(r); string(b) != `{"active":false}` {
				t.Fatalf("Introspect = %s, want {\"active\":false}", b)
			}
			if n := in.cache.len(); n != 0 {
				t.Fatalf("%d cache entries after an inactive token, want 0", n)
			}
		})
	}
}

func TestIntrospectExpiresWhileCached(t *testing.T) {
	f := newFixture(t)
	in := f.introspector(t, IntrospectorConfig{}, &consents{})
	c := f.tokenClaims()
	tok := f.token(c)
	if r := in.Introspect(t.Context(), tok); !r.Active {
		t.Fatal("Introspect: inactive, want active")
	}
	f.setNow(c.Expiry.Add(-time.Nanosecond))
	if r := in.Introspect(t.Context(), tok); !r.Active {
		t.Fatal("Introspect just before exp: inactive, want active")
	}
	f.setNow(c.Expiry)
	if r, err := in.Check(t.Context(), tok); r.Active || !errors.Is(err, ErrExpired) {
		t.Fatalf("Check at exp: active=%v, %v; want inactive and %v", r.Active, err, ErrExpired)
	}
}

func TestIntrospectRevokedWhileCached(t *testing.T) {
	f := newFixture(t)
	cs := &consents{}
	in := f.introspector(t, IntrospectorConfig{}, cs)
	c := f.tokenClaims()
	tok := f.token(c)
	other := f.tokenClaims()
	other.Basis = "consent-43"
	tokOther := f.token(other)
	for _, tk := range []string{tok, tokOther} {
		if r := in.Introspect(t.Context(), tk); !r.Active {
			t.Fatal("Introspect: inactive, want active")
		}
	}
	// Without a generation bump the cache answers: this shows the bump is what makes a
	// revocation take effect, and that the cached path is the one being tested.
	cs.revoke(c.Basis, false)
	if r := in.Introspect(t.Context(), tok); !r.Active {
		t.Fatal("Introspect after a revocation without generation bump: inactive; the cache was not used")
	}
	cs.gen.Add(1)
	if r, err := in.Check(t.Context(), tok); r.Active || !errors.Is(err, ErrBasisRevoked) {
		t.Fatalf("Check after revocation and generation bump: active=%v, %v; want inactive and %v", r.Active, err, ErrBasisRevoked)
	}
	if r := in.Introspect(t.Context(), tok); r.Active {
		t.Fatal("Introspect again after revocation: active")
	}
	// Tokens on another basis stay active, re-checked once for the new generation.
	before := cs.checks.Load()
	for range 3 {
		if r := in.Introspect(t.Context(), tokOther); !r.Active {
			t.Fatal("Introspect of a token on another basis: inactive")
		}
	}
	if n := cs.checks.Load() - before; n != 1 {
		t.Fatalf("%d basis checks for three introspections in one generation, want 1", n)
	}
}

func TestIntrospectWithoutGeneration(t *testing.T) {
	f := newFixture(t)
	cs := &consents{}
	in, err := NewIntrospector(IntrospectorConfig{Now: f.clock}, f.tokenKeys, cs.active, nil)
	if err != nil {
		t.Fatalf("NewIntrospector: %v", err)
	}
	c := f.tokenClaims()
	tok := f.token(c)
	if r := in.Introspect(t.Context(), tok); !r.Active {
		t.Fatal("Introspect: inactive, want active")
	}
	cs.revoke(c.Basis, false)
	if r := in.Introspect(t.Context(), tok); r.Active {
		t.Fatal("Introspect after revocation with no generation: active")
	}
}

func TestIntrospectUncached(t *testing.T) {
	f := newFixture(t)
	cs := &consents{}
	in := f.introspector(t, IntrospectorConfig{CacheSize: -1}, cs)
	tok := f.token(f.tokenClaims())
	for range 3 {
		if r := in.Introspect(t.Context(), tok); !r.Active {
			t.Fatal("Introspect: inactive, want active")
		}
	}
	if n := cs.checks.Load(); n != 3 {
		t.Fatalf("%d basis checks, want 3 without a cache", n)
	}
}

func TestIntrospectCacheBounded(t *testing.T) {
	f := newFixture(t)
	in := f.introspector(t, IntrospectorConfig{CacheSize: 64}, &consents{})
	for range 500 {
		if r := in.Introspect(t.Context(), f.token(f.tokenClaims())); !r.Active {
			t.Fatal("Introspect: inactive, want active")
		}
	}
	if n := in.cache.len(); n > 64 || n < 32 {
		t.Fatalf("%d cache entries, want between 32 and the bound 64", n)
	}
}

func TestParseIntrospectionRequest(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	for _, tc := range []struct {
		name, method, target, ctype, body string
		want                              string // token; "" means refused
	}{
		{"ok", "POST", "/introspect", form, "token=abc.def.ghi", "abc.def.ghi"},
		{"ok with hint and charset", "POST", "/introspect", form + "; charset=UTF-8", "token=abc&token_type_hint=access_token", "abc"},
		{"GET", "GET", "/introspect?token=abc", form, "", ""},
		{"JSON", "POST", "/introspect", "application/json", `{"token":"abc"}`, ""},
		{"no content type", "POST", "/introspect", "", "token=abc", ""},
		{"token in query", "POST", "/introspect?token=abc", form, "token=abc", ""},
		{"no token", "POST", "/introspect", form, "token_type_hint=access_token", ""},
		{"empty token", "POST", "/introspect", form, "token=", ""},
		{"two tokens", "POST", "/introspect", form, "token=a&token=b", ""},
		{"two hints", "POST", "/introspect", form, "token=a&token_type_hint=x&token_type_hint=y", ""},
		{"bad encoding", "POST", "/introspect", form, "token=%zz", ""},
		{"body over 8 KiB", "POST", "/introspect", form, "token=" + strings.Repeat("a", 8<<10), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			got, err := ParseIntrospectionRequest(r)
			if tc.want == "" {
				if !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("ParseIntrospectionRequest: %q, %v; want %v", got, err, ErrInvalidRequest)
				}
				if oe := ToOAuth(err); oe.Code != CodeInvalidRequest || oe.StatusCode() != http.StatusBadRequest {
					t.Fatalf("ToOAuth(%v) = %+v", err, oe)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseIntrospectionRequest = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestIntrospectionEndToEnd runs the documented wiring: an endpoint that reads the request with
// ParseIntrospectionRequest and writes the Response.
func TestIntrospectionEndToEnd(t *testing.T) {
	f := newFixture(t)
	in := f.introspector(t, IntrospectorConfig{}, &consents{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := ParseIntrospectionRequest(r)
		if err != nil {
			oe := ToOAuth(err)
			w.WriteHeader(oe.StatusCode())
			json.NewEncoder(w).Encode(oe)
			return
		}
		json.NewEncoder(w).Encode(in.Introspect(r.Context(), tok))
	}))
	defer srv.Close()
	tok := f.token(f.tokenClaims())
	for _, tc := range []struct {
		name, token string
		active      bool
	}{{"valid", tok, true}, {"garbage", "x", false}} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.PostForm(srv.URL, url.Values{"token": {tc.token}})
			if err != nil {
				t.Fatalf("PostForm: %v", err)
			}
			defer resp.Body.Close()
			var r Response
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if r.Active != tc.active || (tc.active && r.Patient != pseudonym) {
				t.Fatalf("introspection response %+v, want active=%v", r, tc.active)
			}
		})
	}
}

// TestTokenCacheSweepsExpired checks that expired tokens leave the cache at a later insert, well
// before the cache is full: its memory follows the tokens still valid.
func TestTokenCacheSweepsExpired(t *testing.T) {
	c := newTokenCache(1 << 16)
	const now = int64(1e18)
	var k [32]byte
	for i := range 1000 {
		k[0], k[1], k[2] = byte(i), byte(i>>8), 1
		c.put(&k, &cacheEntry{expNano: now + 10e9}, now) // valid for 10 s
	}
	if got := c.len(); got != 1000 {
		t.Fatalf("len = %d, want 1000", got)
	}
	// Within the sweep interval nothing is swept, even once expired.
	k[2] = 2
	c.put(&k, &cacheEntry{expNano: now + 3600e9}, now+cacheSweep/2)
	if got := c.len(); got != 1001 {
		t.Fatalf("len before the sweep interval = %d, want 1001", got)
	}
	// After it, an insert into each shard drops that shard's expired entries.
	later := now + cacheSweep + 1
	for i := range cacheShards {
		k[0], k[1], k[2] = byte(i), 0, 3
		c.put(&k, &cacheEntry{expNano: later + 3600e9}, later)
	}
	if got := c.len(); got != 1+cacheShards {
		t.Fatalf("len after the sweep = %d, want %d (the unexpired entries)", got, 1+cacheShards)
	}
}
