package authz

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// introspection is an Introspector and the one token it answers active for.
type introspection struct {
	in    *Introspector
	valid string
	want  Response
}

func newIntrospection(t testing.TB) *introspection {
	t.Helper()
	fx := newFixture(t)
	v, err := loadVectors()
	if err != nil {
		t.Fatalf("read %s: %v", vectorsFile, err)
	}
	x := &introspection{in: fx.introspector(t, IntrospectorConfig{}, &consents{}), valid: v.Token}
	x.want = x.in.Introspect(t.Context(), x.valid)
	if !x.want.Active || x.want.ID != vectorTokenID {
		t.Fatalf("Introspect(vector token) = %+v, want active", x.want)
	}
	return x
}

// check reads an introspection request made of body, content type and query, introspects the
// token it finds, and checks what FuzzIntrospectionRequest says of it.
func (x *introspection) check(t *testing.T, body, contentType, query string) {
	t.Helper()
	const form = "application/x-www-form-urlencoded"
	r := &http.Request{
		Method: http.MethodPost,
		URL:    &url.URL{Path: "/oauth2/introspect", RawQuery: query},
		Header: http.Header{"Content-Type": {contentType}},
		Body:   io.NopCloser(strings.NewReader(body)),
	}
	token, err := ParseIntrospectionRequest(r)
	mt, _, merr := mime.ParseMediaType(contentType)
	isForm := merr == nil && mt == form
	inQuery := r.URL.Query().Has("token")
	if err != nil {
		if !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("ParseIntrospectionRequest: %v does not wrap ErrInvalidRequest", err)
		}
		if isForm && !inQuery && len(body) > MaxIntrospectionRequestSize && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("ParseIntrospectionRequest(%d-byte body) = %v, want ErrTooLarge", len(body), err)
		}
		return
	}
	if !isForm || inQuery || len(body) > MaxIntrospectionRequestSize {
		t.Fatalf("ParseIntrospectionRequest read a token from a request it must refuse (type %q, query %q, %d bytes)", contentType, query, len(body))
	}
	values, perr := url.ParseQuery(body)
	if perr != nil || len(values["token"]) != 1 || values["token"][0] != token || token == "" {
		t.Fatalf("ParseIntrospectionRequest = %q, but the body holds %q (%v)", token, values["token"], perr)
	}

	resp, err := x.in.Check(t.Context(), token)
	if resp.Active {
		if err != nil || token != x.valid || resp != x.want {
			t.Fatalf("token %q active (%v): %+v", token, err, resp)
		}
		return
	}
	if token == x.valid {
		t.Fatalf("the valid token is inactive: %v", err)
	}
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Check of an inactive token: %v does not wrap ErrInvalidToken", err)
	}
	if b, err := json.Marshal(resp); err != nil || string(b) != `{"active":false}` {
		t.Fatalf("inactive token answered %s (%v), want {\"active\":false}", b, err)
	}
}

// FuzzIntrospectionRequest reads arbitrary introspection requests (body, content type and URL
// query) with ParseIntrospectionRequest and introspects the token it finds. The seeds carry the
// vector token, which is valid in every process. Properties: no panic; every refusal wraps
// ErrInvalidRequest; a form body over MaxIntrospectionRequestSize is refused with ErrTooLarge; a
// token is read only from a form body holding exactly that one non-empty token and never when the
// query names one; the valid token is active with its claims, and every other token (forged,
// tampered, unknown) is inactive with nothing but {"active":false} to say and an error wrapping
// ErrInvalidToken for the log.
func FuzzIntrospectionRequest(f *testing.F) {
	x := newIntrospection(f)
	valid := x.valid
	const form = "application/x-www-form-urlencoded"
	f.Add("token="+valid+"&token_type_hint=access_token", form, "")
	f.Add("token="+valid, form+"; charset=UTF-8", "")
	f.Add("token="+string(flip([]byte(valid), 40)), form, "")
	f.Add("token="+valid[:len(valid)-2], form, "")
	f.Add("token="+valid, form, "token="+valid)
	f.Add("token="+valid, "application/json", "")
	f.Add("token=a&token=b", form, "")
	f.Add("token=a&token_type_hint=x&token_type_hint=y", form, "")
	f.Add("token=%zz", form, "")
	f.Add("", form, "")
	f.Fuzz(x.check)
}

// TestIntrospectionRequestTooLarge runs FuzzIntrospectionRequest's check on bodies around
// MaxIntrospectionRequestSize, too large to seed the fuzzing engine with: the valid token padded
// to the bound is read, one byte more is refused with ErrTooLarge.
func TestIntrospectionRequestTooLarge(t *testing.T) {
	x := newIntrospection(t)
	const form = "application/x-www-form-urlencoded"
	at := "token=" + x.valid + "&pad=" + strings.Repeat("a", MaxIntrospectionRequestSize-len(x.valid)-11)
	if len(at) != MaxIntrospectionRequestSize {
		t.Fatalf("padded body of %d bytes, want %d", len(at), MaxIntrospectionRequestSize)
	}
	for _, body := range []string{at, at + "a", "token=" + strings.Repeat("a", 1<<20)} {
		x.check(t, body, form, "")
		r := httptest.NewRequest(http.MethodPost, "/introspect", strings.NewReader(body))
		r.Header.Set("Content-Type", form)
		tok, err := ParseIntrospectionRequest(r)
		if tooLarge := len(body) > MaxIntrospectionRequestSize; tooLarge != errors.Is(err, ErrTooLarge) || !tooLarge && tok != x.valid {
			t.Fatalf("ParseIntrospectionRequest(%d-byte body) = %.20q, %v", len(body), tok, err)
		}
	}
}
