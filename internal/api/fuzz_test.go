package api

import (
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/authz"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// introspectBackend answers Introspect as the node does: an authz.Introspector over the keys of
// the organisations it hosts, its Response as JSON. It records the tokens it is asked about.
type introspectBackend struct {
	*fakeBackend
	in *authz.Introspector

	mu     sync.Mutex
	tokens []string
}

func (b *introspectBackend) Introspect(ctx context.Context, req *schakelv1.IntrospectRequest) (*schakelv1.IntrospectResponse, error) {
	b.mu.Lock()
	b.tokens = append(b.tokens, req.GetToken())
	b.mu.Unlock()
	r := b.in.Introspect(ctx, req.GetToken())
	j, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return &schakelv1.IntrospectResponse{Json: string(j), Active: r.Active}, nil
}

func (b *introspectBackend) asked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.tokens
	b.tokens = nil
	return t
}

// introspectAPIToken is the API token of the server under test.
const introspectAPIToken = "api-secret"

// introspectEndpoint is the server's handler, with a backend that introspects for real for one
// hosted organisation, and the one token it issued.
type introspectEndpoint struct {
	h     http.Handler
	b     *introspectBackend
	valid string
	want  string // the answer for valid
}

func newIntrospectEndpoint(t testing.TB) *introspectEndpoint {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	custodian := "did:schakel:9Kp2custodian"
	key, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	kid := authz.KID(custodian, key)
	keys := func(k string) (*crypto.PublicKey, error) {
		if k != kid {
			return nil, authz.ErrInvalidToken
		}
		return key.Public(), nil
	}
	in, err := authz.NewIntrospector(authz.IntrospectorConfig{Now: func() time.Time { return t0.Add(time.Minute) }},
		keys, func(context.Context, string) bool { return true }, nil)
	if err != nil {
		t.Fatalf("NewIntrospector: %v", err)
	}
	dpop, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	valid, err := authz.IssueToken(key, kid, authz.TokenClaims{
		Issuer: custodian, Subject: "did:schakel:7Hq3requester", IssuedAt: t0, Expiry: t0.Add(10 * time.Minute),
		Scope:    authz.Scope{DataCategory: "medication", Purpose: "TREAT", Patient: "v1.YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNA"}.String(),
		Patient:  "v1.YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNA",
		Employee: authz.Employee{UZI: "900012345", Role: "01.015", Name: "dr. A. de Vries"},
		JKT:      dpop.KID(), Basis: "consent-42",
	})
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	want, err := json.Marshal(in.Introspect(context.Background(), valid))
	if err != nil || !strings.Contains(string(want), `"active":true`) {
		t.Fatalf("Introspect(valid token) = %s, %v; want active", want, err)
	}
	b := &introspectBackend{fakeBackend: &fakeBackend{}, in: in}
	s, err := New(Config{Token: introspectAPIToken, Registry: prometheus.NewRegistry()}, b, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &introspectEndpoint{h: s.srv.Handler, b: b, valid: valid, want: string(want)}
}

// check posts an introspection request and checks what FuzzIntrospectEndpoint says of it.
func (x *introspectEndpoint) check(t *testing.T, contentType, body, query string, authorized bool) {
	t.Helper()
	const form = "application/x-www-form-urlencoded"
	r := httptest.NewRequest(http.MethodPost, "/oauth2/introspect", strings.NewReader(body))
	r.URL.RawQuery = query
	r.Header.Set("Content-Type", contentType)
	if authorized {
		r.Header.Set("Authorization", "Bearer "+introspectAPIToken)
	}
	w := httptest.NewRecorder()
	x.h.ServeHTTP(w, r)
	asked := x.b.asked()
	status, out := w.Code, w.Body.String()

	if !authorized {
		if status != http.StatusUnauthorized || len(asked) != 0 {
			t.Fatalf("without the API token: %d, backend asked %d times", status, len(asked))
		}
		return
	}
	mt, _, merr := mime.ParseMediaType(contentType)
	values, perr := url.ParseQuery(body)
	_, qerr := url.ParseQuery(query) // the form includes the query: a malformed one is a bad request
	ok := merr == nil && mt == form && len(body) <= maxIntrospectionBody && perr == nil && qerr == nil &&
		len(values["token"]) == 1 && values["token"][0] != ""
	if !ok {
		if status != http.StatusBadRequest || len(asked) != 0 || !strings.Contains(out, `"error":"invalid_request"`) {
			t.Fatalf("request to refuse (type %q, %d bytes, form error %v): %d %s, backend asked %d times", contentType, len(body), perr, status, out, len(asked))
		}
		return
	}
	if status != http.StatusOK || len(asked) != 1 || asked[0] != values["token"][0] {
		t.Fatalf("introspection of %q: %d %s, backend asked %q", values["token"][0], status, out, asked)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("introspection answer without Cache-Control: no-store")
	}
	switch {
	case asked[0] == x.valid:
		if out != x.want {
			t.Fatalf("the valid token answered %s, want %s", out, x.want)
		}
	case out != `{"active":false}`:
		t.Fatalf("token %q answered %s, want {\"active\":false}", asked[0], out)
	}
}

// FuzzIntrospectEndpoint posts arbitrary introspection requests (content type, body, URL query,
// with or without the API token) to the server's /oauth2/introspect handler, whose backend
// introspects for real. Properties: no panic, and no answer but 200, 400 or 401; without the API
// token, 401 and the backend is not asked; a body that is not a form, is over
// maxIntrospectionBody or does not hold exactly one token (or comes with a malformed query) gets
// 400 invalid_request and the backend is not asked; a 200 answers for the body's one token (never
// the query's), and is active only for the token the hosted organisation issued, with its claims,
// and exactly {"active":false} for every other.
func FuzzIntrospectEndpoint(f *testing.F) {
	x := newIntrospectEndpoint(f)
	valid := x.valid
	const form = "application/x-www-form-urlencoded"
	f.Add(form, "token="+valid+"&token_type_hint=access_token", "", true)
	f.Add(form, "token="+valid, "", false)
	f.Add(form, "token="+valid[:len(valid)-1]+"x", "", true)
	f.Add(form, "token=other", "token="+valid, true)
	f.Add(form+"; charset=UTF-8", "token=a&token=b", "", true)
	f.Add("application/json", `{"token":"`+valid+`"}`, "", true)
	f.Add(form, "token=%zz", "", true)
	f.Add(form, "token=a", "x=%zz", true)
	f.Add(form, "", "", true)
	f.Fuzz(x.check)
}

// TestIntrospectEndpointTooLarge runs FuzzIntrospectEndpoint's check on bodies around
// maxIntrospectionBody, too large to seed the fuzzing engine with: the valid token padded to the
// bound is answered, one byte more is refused without asking the backend.
func TestIntrospectEndpointTooLarge(t *testing.T) {
	x := newIntrospectEndpoint(t)
	at := "token=" + x.valid + "&pad=" + strings.Repeat("a", maxIntrospectionBody-len(x.valid)-11)
	if len(at) != maxIntrospectionBody {
		t.Fatalf("padded body of %d bytes, want %d", len(at), maxIntrospectionBody)
	}
	for _, body := range []string{at, at + "a", "token=" + strings.Repeat("a", 2<<20)} {
		x.check(t, "application/x-www-form-urlencoded", body, "", true)
	}
}
