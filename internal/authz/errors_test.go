package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/crypto"
)

func TestToOAuth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   string
		status int
		desc   string // "" means: the error's message
	}{
		{"nil", nil, "", 0, ""},
		{"grant", fmt.Errorf("open: %w: %w", ErrInvalidGrant, ErrReplay), CodeInvalidGrant, 400, ""},
		{"request", fmt.Errorf("x: %w", ErrInvalidRequest), CodeInvalidRequest, 400, ""},
		{"client", fmt.Errorf("x: %w", ErrInvalidClient), CodeInvalidClient, 401, ""},
		{"unauthorized client", fmt.Errorf("x: %w", ErrUnauthorizedClient), CodeUnauthorizedClient, 400, ""},
		{"denied", fmt.Errorf("no consent: %w", ErrAccessDenied), CodeAccessDenied, 403, ""},
		{"token", fmt.Errorf("x: %w: %w", ErrInvalidToken, ErrExpired), CodeInvalidToken, 401, ""},
		{"dpop", fmt.Errorf("x: %w: %w", ErrInvalidDPoPProof, ErrReplay), CodeInvalidDPoPProof, 401, ""},
		{"storage", errors.New("badger: disk on fire at /var/lib/schakel"), CodeServerError, 500, "internal error"},
		{"context", context.DeadlineExceeded, CodeServerError, 500, "internal error"},
		{"reason without class", ErrReplay, CodeServerError, 500, "internal error"},
		{"quotes and control characters", fmt.Errorf("%w: kid \"a\\b\"\n", ErrInvalidGrant), CodeInvalidGrant, 400,
			"kid 'a?b'? ... "},
		{"already an OAuthError", fmt.Errorf("wrapped: %w", &OAuthError{Code: CodeAccessDenied, Description: "no consent"}),
			CodeAccessDenied, 403, "no consent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ToOAuth(tc.err)
			if tc.err == nil {
				if got != nil {
					t.Fatalf("ToOAuth(nil) = %+v", got)
				}
				return
			}
			if got.Code != tc.code || got.StatusCode() != tc.status {
				t.Fatalf("ToOAuth(%v) = %+v (status %d), want %s (%d)", tc.err, got, got.StatusCode(), tc.code, tc.status)
			}
			want := tc.desc
			switch {
			case want == "":
				want = tc.err.Error()
			case strings.HasSuffix(want, " ... "):
				want = strings.TrimSuffix(want, " ... ")
				if !strings.Contains(got.Description, want) {
					t.Fatalf("ToOAuth(%v).Description = %q, want it to contain %q", tc.err, got.Description, want)
				}
				return
			}
			if got.Description != want {
				t.Fatalf("ToOAuth(%v).Description = %q, want %q", tc.err, got.Description, want)
			}
		})
	}
}

func TestOAuthErrorJSON(t *testing.T) {
	b, err := json.Marshal(ToOAuth(fmt.Errorf("%w: %w", ErrInvalidGrant, ErrExpired)))
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	if want := `{"error":"invalid_grant","error_description":"invalid grant: expired"}`; string(b) != want {
		t.Fatalf("json.Marshal = %s, want %s", b, want)
	}
	if got := (&OAuthError{Code: CodeServerError}).StatusCode(); got != http.StatusInternalServerError {
		t.Fatalf("StatusCode = %d", got)
	}
}

func TestDescriptionBounded(t *testing.T) {
	d := ToOAuth(fmt.Errorf("%w: %s", ErrInvalidGrant, strings.Repeat("é", 400))).Description
	if len(d) > maxDescription {
		t.Fatalf("description of %d bytes, limit %d", len(d), maxDescription)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			t.Fatalf("description byte 0x%02x at %d not allowed by RFC 6749 §5.2", c, i)
		}
	}
}

func TestRedactDigits(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"json: cannot unmarshal number 111222333 into", "json: cannot unmarshal number # into"},
		{"iat 12345 ok", "iat 12345 ok"},
		{"111222333", "#"},
		{"a1234567b12", "a#b12"},
	} {
		if got := redactDigits(tc.in); got != tc.want {
			t.Errorf("redactDigits(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestUniqueMembers(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"a":{"x":1,"x":2}}`, false},
		{`{"a":[{"x":1,"x":2}]}`, false},
		{`{"a":"\u0061","\u0061":1}`, false},
		{`{"a":1`, false},
		{`[1,2]`, true},
	} {
		if err := uniqueMembers([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("uniqueMembers(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestDuplicateClaimRefused(t *testing.T) {
	f := newFixture(t)
	kid := KID(custodianDID, f.custKey)
	tok := f.token(f.tokenClaims())
	payload, _, err := crypto.ParseUnverified([]byte(tok))
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	dup := append([]byte(`{"basis":"consent-other",`), payload[1:]...)
	b, err := crypto.Sign(f.custKey, dup, crypto.Header{Type: TokenType, KID: kid})
	if err != nil {
		t.Fatalf("crypto.Sign: %v", err)
	}
	if _, err := ParseToken(string(b), f.tokenKeys, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ParseToken with a duplicate claim: %v, want %v", err, ErrMalformed)
	}
}

func TestRegistryResolver(t *testing.T) {
	f := newFixture(t)
	reg := registryFunc(func(_ context.Context, did, kid string, at time.Time) (*crypto.PublicKey, error) {
		return f.resolve(context.Background(), did+"#"+kid, at)
	})
	r := RegistryResolver(reg)
	if k, err := r(t.Context(), KID(requesterDID, f.reqKey), t0); err != nil || !k.Equal(f.reqKey.Public()) {
		t.Fatalf("RegistryResolver = %v, %v", k, err)
	}
	if _, err := r(t.Context(), "no-hash", t0); err == nil {
		t.Fatal("RegistryResolver of a kid without '#': no error")
	}
}

type registryFunc func(ctx context.Context, did, kid string, t time.Time) (*crypto.PublicKey, error)

func (f registryFunc) KeyByID(ctx context.Context, did, kid string, t time.Time) (*crypto.PublicKey, error) {
	return f(ctx, did, kid, t)
}
