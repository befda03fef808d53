package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/network/outbox"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// The bad-input tables (DESIGN §2 invariant 6): for each external interface of a node, input
// that is malformed, oversized, of the wrong type, expired, replayed or forged gets a clear
// error — the right status code and a message naming the problem — and changes nothing: the
// digest of every affected node's storage is the same before and after, and no key is written
// again. The one allowed trace is the access log's record of a refused token request that
// reached a decision (invariant 4), which the case names.

// badCase is one row of a bad-input table.
type badCase struct {
	name string
	// run sends the input; it returns the answer, summarised as text, or the error.
	run func(t *testing.T) (answer string, err error)
	// How the call must end: with an error of this connect code, or wrapping this error (any
	// error for errSome); with neither set, with an answer. want is part of the error's message,
	// or of the answer.
	code connect.Code
	is   error
	want string
	// logged, when set, is part of the reason of the one refused access decision the custodian
	// logs for this input; its storage may change by that entry only (and, with spends, by the
	// record of the assertion's jti as used, which a decision on an opened assertion carries).
	logged string
	spends bool
	// cutOff allows the answer to be lost with the connection: a node closes the connection of a
	// newcomer it refuses in Hello while the refusal is being written, so the newcomer may see its
	// stream fail instead.
	cutOff bool
}

// connectionLost reports whether err is a call whose stream or connection failed under it.
func connectionLost(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeCanceled:
		msg := err.Error()
		return strings.Contains(msg, "EOF") || strings.Contains(msg, "reset") || strings.Contains(msg, "closed")
	}
	return false
}

// errSome matches any error: for refusals that wrap no sentinel of their own.
var errSome = errors.New("any error")

// runBadCases runs cases against custodian, the node the input is for, and checks that the
// storage of custodian and of every node in others is unchanged by each (but for a logged
// refusal). At the end, once every node has settled, their storage must still be as the last
// case left it: no refused input sets off a later write.
func runBadCases(t *testing.T, custodian *netNode, others []*Node, cases []badCase) {
	t.Helper()
	all := append([]*Node{custodian.Node}, others...)
	states := settle(t, all...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hl, err := custodian.logOf(custodian.org)
			if err != nil {
				t.Fatalf("logOf: %v", err)
			}
			size := hl.log.Size()
			answer, err := tc.run(t)
			t.Logf("answer %q, error %v", answer, err)
			switch {
			case tc.cutOff && connectionLost(err):
				t.Logf("the answer was lost with the connection: %v", err)
			case tc.code != 0:
				if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v (answer %q); want a %v error naming %q", err, answer, tc.code, tc.want)
				}
			case tc.is != nil:
				if err == nil || (tc.is != errSome && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v (answer %q); want an error wrapping %v naming %q", err, answer, tc.is, tc.want)
				}
			default:
				if err != nil || !strings.Contains(answer, tc.want) {
					t.Fatalf("got answer %q, error %v; want an answer naming %q", answer, err, tc.want)
				}
			}
			if tc.logged != "" {
				requireOneRefusal(t, tc.name, custodian.Node, custodian.org, states[0], size, tc.logged, tc.spends)
			} else {
				requireUnchanged(t, tc.name, custodian.Node, states[0])
			}
			for i, n := range others {
				requireUnchanged(t, tc.name, n, states[i+1])
			}
		})
		// Each case is judged from where the one before left the storage.
		for i, n := range all {
			states[i] = stateOf(t, n)
		}
	}
	for i, s := range settle(t, all...) {
		if cs := states[i].snap.Diff(s.snap); len(cs) != 0 {
			t.Fatalf("after the last case the storage of %s changed on its own:%s", all[i].PeerID(), describeChanges(cs))
		}
	}
}

// badNetNode starts a quiet node hosting one organisation the register admits.
func badNetNode(t *testing.T, reg *register.Register, name string, opts ...func(*Config)) *netNode {
	t.Helper()
	n := startNetNode(t, reg, "", name, append([]func(*Config){quietNode}, opts...)...)
	n.org = hostOrganization(t, n.Node, reg, name, true)
	return n
}

// orgCredentialOf returns an organisation credential n holds for org.
func orgCredentialOf(t *testing.T, n *Node, org string) *vc.Credential {
	t.Helper()
	cs, err := n.creds.List(t.Context(), vc.Filter{Party: org, Kind: vc.OrganizationCredential})
	if err != nil || len(cs) == 0 {
		t.Fatalf("List organisation credentials of %s: %d, %v", org, len(cs), err)
	}
	return cs[0]
}

// flipSignature changes one bit in the middle of a compact JWS's signature, keeping it canonical
// base64url.
func flipSignature(jws []byte) []byte {
	out := bytes.Clone(jws)
	i := bytes.LastIndexByte(out, '.') + (len(out)-bytes.LastIndexByte(out, '.'))/2
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

// resigned returns jws with its payload changed by edit (nil: unchanged) and signed again by a
// key that is not the signer's, under the signer's kid.
func resigned(t *testing.T, jws []byte, edit func([]byte) []byte) []byte {
	t.Helper()
	payload, h, err := crypto.ParseUnverified(jws)
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if edit != nil {
		payload = edit(payload)
	}
	k, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	out, err := crypto.Sign(k, payload, crypto.Header{Type: h.Type, KID: h.KID})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return out
}

// withPayload returns jws with its payload changed by edit and the original signature.
func withPayload(t *testing.T, jws []byte, edit func([]byte) []byte) []byte {
	t.Helper()
	payload, _, err := crypto.ParseUnverified(jws)
	if err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	parts := bytes.Split(jws, []byte("."))
	parts[1] = []byte(base64.RawURLEncoding.EncodeToString(edit(payload)))
	return bytes.Join(parts, []byte("."))
}

// accessToken mints an access token as org, hosted on n, with the given times and basis.
func accessToken(t *testing.T, n *Node, org string, sig *crypto.PrivateKey, iat, exp time.Time, basis string) string {
	t.Helper()
	hl, err := n.logOf(org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	patient, err := hl.pseud.Pseudonym(accessBSN)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	scope := authz.Scope{DataCategory: "medication", Purpose: "TREAT", Patient: patient}
	tok, err := authz.IssueToken(sig, "", authz.TokenClaims{
		Issuer: org, Subject: org, IssuedAt: iat, Expiry: exp, Scope: scope.String(), Patient: patient,
		Employee: authz.Employee{UZI: "900012345", Role: "01.015", Name: "A. de Vries"},
		JKT:      dpopJKT(t), Basis: basis,
	})
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	return tok
}

// bearer adds the API token to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// connectPost posts body to a Connect unary procedure and returns the error the answer carries,
// as a *connect.Error, or nil for a 200.
func connectPost(t *testing.T, hc *http.Client, base, procedure, contentType string, body []byte) error {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+procedure, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Code    connect.Code `json:"code"`
		Message string       `json:"message"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("HTTP %d, body %q: %w", resp.StatusCode, raw, err)
	}
	if resp.StatusCode < 400 || resp.StatusCode > 499 {
		return fmt.Errorf("HTTP %d for %v: %s", resp.StatusCode, e.Code, e.Message)
	}
	return connect.NewError(e.Code, errors.New(e.Message))
}

// TestBadInputInternalAPI sends bad input to the internal API over HTTP, as Connect clients
// (protobuf and JSON) and as raw requests, with the API token the node requires.
func TestBadInputInternalAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	ctx := t.Context()
	reg := newRegister(t)
	const apiToken = "an-api-token"
	n := badNetNode(t, reg, "Huisartsenpraktijk Jansen", func(c *Config) { c.APIToken = apiToken })
	base := "http://" + n.APIAddr().String()
	hc := &http.Client{Transport: bearer{apiToken}}
	docs := schakelv1connect.NewDocumentServiceClient(hc, base)
	orgsAPI := schakelv1connect.NewOrganizationServiceClient(hc, base)
	access := schakelv1connect.NewAccessServiceClient(hc, base)

	// Setup, all of it accepted: an older status list and DID document, superseded by a
	// revocation and a key rotation; an untrusted register whose documents the node holds.
	regDocs := reg.Documents()
	oldList := regDocs[len(regDocs)-1]
	spare, err := reg.Issue(ctx, vc.Organization{ID: n.org, Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"}, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatalf("register Issue: %v", err)
	}
	newList, err := reg.Revoke(ctx, spare.ID, time.Now())
	if err != nil {
		t.Fatalf("register Revoke: %v", err)
	}
	_, oldDoc, err := n.dids.Document(ctx, n.org)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	if _, err := n.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: n.org}); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	untrusted := newRegister(t)
	if _, err := n.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: append([]string{string(newList)}, untrusted.Documents()...)}); err != nil {
		t.Fatalf("SubmitDocuments: %v", err)
	}
	oc := orgCredentialOf(t, n.Node, n.org)
	_, sig, err := n.orgs.signingKey(ctx, n.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	now := time.Now()
	expired, err := reg.Issue(ctx, vc.Organization{ID: n.org, Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"},
		30*time.Minute, now.Add(-50*time.Minute))
	if err != nil {
		t.Fatalf("register Issue: %v", err)
	}
	fromUntrusted, err := untrusted.Issue(ctx, vc.Organization{ID: n.org, Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"}, 24*time.Hour, now)
	if err != nil {
		t.Fatalf("untrusted Issue: %v", err)
	}
	hl, err := n.logOf(n.org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	patient, err := hl.pseud.Pseudonym(accessBSN)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	grant, _, err := vc.Issue(sig, vc.Request{Kind: vc.ReferralGrantCredential, Issuer: n.org, IssuedAt: now, ValidUntil: now.Add(time.Hour),
		ReferralGrant: &vc.ReferralGrant{ID: reg.DID(), Patient: patient, DataCategories: []string{"medication"}, Purpose: "TREAT"}})
	if err != nil {
		t.Fatalf("vc.Issue: %v", err)
	}
	token := accessToken(t, n.Node, n.org, sig, now, now.Add(5*time.Minute), breakGlassBasis+"x")

	submit := func(ds ...string) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			resp, err := docs.SubmitDocuments(t.Context(), connect.NewRequest(&schakelv1.SubmitDocumentsRequest{Documents: ds}))
			if err != nil {
				return "", err
			}
			var out []string
			for _, r := range resp.Msg.GetResults() {
				state := "stored"
				if r.GetDuplicate() {
					state = "duplicate"
				}
				out = append(out, r.GetKind()+" "+state)
			}
			return strings.Join(out, ", "), nil
		}
	}
	post := func(procedure, contentType string, body []byte) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			return "", connectPost(t, hc, base, procedure, contentType, body)
		}
	}
	get := func(path string) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
			if err != nil {
				t.Fatalf("NewRequest: %v", err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(raw)), nil
		}
	}
	consentReq := func(edit func(*schakelv1.Consent)) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			c := &schakelv1.Consent{Custodian: n.org, Decision: "permit", GranteeAny: true, DataCategories: []string{"medication"},
				Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}
			edit(c)
			_, err := access.RecordConsent(t.Context(), connect.NewRequest(&schakelv1.RecordConsentRequest{Consent: c, Bsn: accessBSN}))
			return "", err
		}
	}
	// oversized is a request whose protobuf encoding is one byte above the API's 1 MiB limit: one
	// document field (a tag byte and a three-byte length) around 2^20 − 3 bytes.
	oversized := strings.Repeat("A", 1<<20-3)
	if s := proto.Size(&schakelv1.SubmitDocumentsRequest{Documents: []string{oversized}}); s != 1<<20+1 {
		t.Fatalf("oversized request is %d bytes, want %d", s, 1<<20+1)
	}
	ocJWT := string(oc.JWT)
	sub := schakelv1connect.DocumentServiceSubmitDocumentsProcedure

	cases := []badCase{
		// Malformed.
		{name: "malformed: garbage document", run: submit("hello"), code: connect.CodeInvalidArgument, want: "document 0: parse header: malformed input"},
		{name: "malformed: truncated credential", run: submit(ocJWT[:len(ocJWT)/2]), code: connect.CodeInvalidArgument, want: "malformed input"},
		{name: "malformed: garbage protobuf", run: post(sub, "application/proto", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}), code: connect.CodeInvalidArgument, want: "unmarshal"},
		{name: "malformed: truncated JSON", run: post(sub, "application/json", []byte(`{"documents": ["`)), code: connect.CodeInvalidArgument, want: "unmarshal"},
		// Connect ignores unknown JSON fields (forward compatibility): what is missing is refused.
		{name: "malformed: JSON without the documents", run: post(sub, "application/json", []byte(`{"docs": ["x"]}`)), code: connect.CodeInvalidArgument, want: "submit 1 to 64 documents, not 0"},
		{name: "malformed: date of birth", run: consentReq(func(c *schakelv1.Consent) { c.PatientBirthDate = "31-12-1980" }), code: connect.CodeInvalidArgument, want: "patient_birth_date"},
		{name: "malformed: DPoP key thumbprint", run: func(t *testing.T) (string, error) {
			_, err := access.RequestToken(t.Context(), connect.NewRequest(tokenRequest(n.org, n.org, "medication", "01.015", "not-a-thumbprint")))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "cnf.jkt"},
		{name: "malformed: DID in the JWKS path", run: get("/orgs/not-a-did/jwks.json"), want: `400 {"code":"invalid_argument","message":"\"not-a-did\" is not a DID`},
		{name: "wrong type: JWKS of an organisation not hosted here", run: get("/orgs/" + reg.DID() + "/jwks.json"), want: `404 {"code":"not_found"`},
		{name: "malformed: BSN failing the 11-proof", run: func(t *testing.T) (string, error) {
			req := tokenRequest(n.org, reg.DID(), "medication", "01.015", dpopJKT(t))
			req.Bsn = "123456789"
			_, err := access.RequestToken(t.Context(), connect.NewRequest(req))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "11-proof"},
		// Oversized.
		{name: "oversized: request one byte above 1 MiB", run: submit(oversized), code: connect.CodeResourceExhausted, want: "larger than configured max"},
		{name: "oversized: 65 documents", run: submit(make([]string, maxSubmit+1)...), code: connect.CodeInvalidArgument, want: "submit 1 to 64 documents, not 65"},
		{name: "oversized: document one byte above 64 KiB", run: submit(ocJWT + strings.Repeat("A", crypto.MaxJWSSize+1-len(ocJWT))), code: connect.CodeInvalidArgument, want: "limit 65536"},
		// Wrong type.
		{name: "wrong type: access token as a document", run: submit(token), code: connect.CodeInvalidArgument, want: `unknown document type "at+jwt"`},
		{name: "wrong type: referral grant as a public document", run: submit(string(grant)), code: connect.CodeInvalidArgument, want: "not public"},
		{name: "wrong type: JSON number for the documents", run: post(sub, "application/json", []byte(`{"documents": 5}`)), code: connect.CodeInvalidArgument, want: "unmarshal"},
		{name: "wrong type: organisation credential from an untrusted register", run: submit(string(fromUntrusted.JWT)), code: connect.CodePermissionDenied, want: "not a trusted register"},
		// Expired.
		{name: "expired: organisation credential", run: submit(string(expired.JWT)), code: connect.CodeFailedPrecondition, want: "credential expired"},
		{name: "expired: consent ending in the past", run: consentReq(func(c *schakelv1.Consent) { c.ValidUntilUnix = now.Add(-time.Hour).Unix() }), code: connect.CodeInvalidArgument, want: "validUntil"},
		// Replayed: idempotent, or refused when superseded.
		{name: "replayed: stored credential", run: submit(ocJWT), want: "OrganizationCredential duplicate"},
		{name: "replayed: register's documents", run: submit(append(regDocs[:len(regDocs)-1:len(regDocs)-1], string(newList))...), want: "key-event duplicate"},
		{name: "replayed: superseded status list", run: submit(oldList), code: connect.CodeFailedPrecondition, want: "status list older than the one held"},
		{name: "replayed: DID document superseded by a key rotation", run: submit(string(oldDoc)), code: connect.CodeFailedPrecondition, want: "superseded by a key rotation"},
		// Forged.
		{name: "forged: changed signature byte", run: submit(string(flipSignature(oc.JWT))), code: connect.CodeInvalidArgument, want: "signature does not verify"},
		{name: "forged: changed payload", run: submit(string(withPayload(t, oc.JWT, func(p []byte) []byte { return bytes.Replace(p, []byte("Jansen"), []byte("Janzen"), 1) }))),
			code: connect.CodeInvalidArgument, want: "signature does not verify"},
		{name: "forged: signed by another key under the register's kid", run: submit(string(resigned(t, oc.JWT, nil))), code: connect.CodeInvalidArgument, want: "signature does not verify"},
		{name: "forged: no API token", run: func(t *testing.T) (string, error) {
			_, err := schakelv1connect.NewOrganizationServiceClient(http.DefaultClient, base).CreateOrganization(t.Context(),
				connect.NewRequest(&schakelv1.CreateOrganizationRequest{Name: "Indringer"}))
			return "", err
		}, code: connect.CodeUnauthenticated, want: "missing or invalid API token"},
		{name: "forged: wrong API token", run: func(t *testing.T) (string, error) {
			_, err := schakelv1connect.NewOrganizationServiceClient(&http.Client{Transport: bearer{apiToken + "x"}}, base).CreateOrganization(t.Context(),
				connect.NewRequest(&schakelv1.CreateOrganizationRequest{Name: "Indringer"}))
			return "", err
		}, code: connect.CodeUnauthenticated, want: "missing or invalid API token"},
		{name: "malformed: blank organisation name", run: func(t *testing.T) (string, error) {
			_, err := orgsAPI.CreateOrganization(t.Context(), connect.NewRequest(&schakelv1.CreateOrganizationRequest{Name: " "}))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "organisation name must be 1"},
	}
	runBadCases(t, n, nil, cases)
}

// TestBadInputOAuth sends bad input to the OAuth 2.0 endpoint of the internal API, RFC 7662
// token introspection. A request it cannot read is answered with an OAuth error; a token that
// is not in force is answered {"active":false} (RFC 7662 §2.2), with nothing said about why.
// Introspection writes nothing, so every case leaves the storage as it was.
func TestBadInputOAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	const apiToken = "an-api-token"
	n := badNetNode(t, reg, "Huisartsenpraktijk Jansen", func(c *Config) { c.APIToken = apiToken })
	other := badNetNode(t, reg, "Stadsziekenhuis")
	endpoint := "http://" + n.APIAddr().String() + "/oauth2/introspect"
	_, sig, err := n.orgs.signingKey(ctx, n.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	_, otherSig, err := other.orgs.signingKey(ctx, other.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	now := time.Now()
	basis := breakGlassBasis + "x"
	good := accessToken(t, n.Node, n.org, sig, now, now.Add(5*time.Minute), basis)
	expired := accessToken(t, n.Node, n.org, sig, now.Add(-20*time.Minute), now.Add(-10*time.Minute), basis)
	foreign := accessToken(t, other.Node, other.org, otherSig, now, now.Add(5*time.Minute), basis)
	revoked := accessToken(t, n.Node, n.org, sig, now, now.Add(5*time.Minute), "urn:uuid:00000000-0000-4000-8000-000000000000")

	send := func(method, contentType, auth, body string) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			req, err := http.NewRequestWithContext(t.Context(), method, endpoint, strings.NewReader(body))
			if err != nil {
				t.Fatalf("NewRequest: %v", err)
			}
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			return fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(raw)), nil
		}
	}
	const form = "application/x-www-form-urlencoded"
	auth := "Bearer " + apiToken
	introspect := func(token string) func(*testing.T) (string, error) {
		return send(http.MethodPost, form, auth, url.Values{"token": {token}}.Encode())
	}
	const inactive = `200 {"active":false}`
	const invalidRequest = `400 {"error":"invalid_request","error_description":`

	cases := []badCase{
		// The endpoint answers a token in force: the inactive answers below are refusals.
		{name: "control: a token in force", run: introspect(good), want: `200 {"active":true,`},
		// Malformed.
		{name: "malformed: JSON body", run: send(http.MethodPost, "application/json", auth, `{"token":"x"}`), want: invalidRequest + `"the body must be application/x-www-form-urlencoded"}`},
		{name: "malformed: form", run: send(http.MethodPost, form, auth, "token=%zz"), want: invalidRequest + `"the form could not be read"}`},
		{name: "malformed: no token", run: send(http.MethodPost, form, auth, "token_type_hint=access_token"), want: invalidRequest + `"exactly one token parameter is required"}`},
		{name: "malformed: two tokens", run: send(http.MethodPost, form, auth, url.Values{"token": {good, good}}.Encode()), want: invalidRequest + `"exactly one token parameter is required"}`},
		{name: "malformed: method GET", run: send(http.MethodGet, "", auth, ""), want: "405 "},
		{name: "malformed: garbage token", run: introspect("hello"), want: inactive},
		{name: "malformed: truncated token", run: introspect(good[:len(good)/2]), want: inactive},
		// Oversized.
		{name: "oversized: body one byte above 8 KiB", run: send(http.MethodPost, form, auth, "token="+strings.Repeat("A", 8<<10+1-len("token="))),
			want: invalidRequest + `"the form could not be read"}`},
		{name: "oversized: token one byte above 8 KiB", run: introspect(strings.Repeat("A", authz.MaxTokenSize+1)),
			want: invalidRequest + `"the form could not be read"}`},
		{name: "oversized: token one byte above 8 KiB, over RPC", run: func(t *testing.T) (string, error) {
			access := schakelv1connect.NewAccessServiceClient(&http.Client{Transport: bearer{apiToken}}, "http://"+n.APIAddr().String())
			resp, err := access.Introspect(t.Context(), connect.NewRequest(&schakelv1.IntrospectRequest{Token: strings.Repeat("A", authz.MaxTokenSize+1)}))
			if err != nil {
				return "", err
			}
			return resp.Msg.GetJson(), nil
		}, want: `{"active":false}`},
		// Wrong type.
		{name: "wrong type: credential as a token", run: func(t *testing.T) (string, error) {
			return introspect(string(orgCredentialOf(t, n.Node, n.org).JWT))(t)
		}, want: inactive},
		{name: "wrong type: token of an organisation hosted elsewhere", run: introspect(foreign), want: inactive},
		// Expired.
		{name: "expired: token", run: introspect(expired), want: inactive},
		{name: "expired: token whose consent is not in force", run: introspect(revoked), want: inactive},
		// Replayed: introspection is idempotent.
		{name: "replayed: the token in force again", run: introspect(good), want: `200 {"active":true,`},
		// Forged.
		{name: "forged: changed signature byte", run: introspect(string(flipSignature([]byte(good)))), want: inactive},
		{name: "forged: changed payload", run: introspect(string(withPayload(t, []byte(good), func(p []byte) []byte {
			return bytes.Replace(p, []byte(`"medication`), []byte(`"laboratory`), 1)
		}))), want: inactive},
		{name: "forged: signed by another key under the issuer's kid", run: introspect(string(resigned(t, []byte(good), nil))), want: inactive},
		{name: "forged: no API token", run: send(http.MethodPost, form, "", url.Values{"token": {good}}.Encode()),
			want: `401 {"code":"unauthenticated","message":"missing or invalid API token"}`},
		{name: "forged: wrong API token", run: send(http.MethodPost, form, auth+"x", url.Values{"token": {good}}.Encode()),
			want: `401 {"code":"unauthenticated","message":"missing or invalid API token"}`},
	}
	runBadCases(t, n, []*Node{other.Node}, cases)
}

// peerClientFrom returns a PeerService client from h to p over protocol proto, as a node's own
// client reaches a peer, and the HTTP client under it for raw requests.
func peerClientFrom(h host.Host, p peer.ID, proto protocol.ID) (schakelv1connect.PeerServiceClient, *http.Client) {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{
		Protocols: protocols,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return gostream.Dial(ctx, h, p, proto)
		},
	}}
	return schakelv1connect.NewPeerServiceClient(hc, "http://"+p.String(), connect.WithGRPC(), connect.WithSendMaxBytes(16<<20)), hc
}

// stranger is a libp2p host that is no node: it has an organisation of its own (a genesis key
// event and a DID document binding the host), which no register need have admitted.
type stranger struct {
	host    host.Host
	org     string
	genesis []byte
	doc     []byte
}

func newStranger(t *testing.T) *stranger {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	now := time.Now()
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	genesis, id, err := did.NewGenesis(sig, enc.Public(), now)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	st, _, err := did.Apply(nil, genesis, now)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	doc, _, err := did.NewDocument(sig, st, did.Binding{PeerIDs: []string{h.ID().String()}}, now)
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	return &stranger{host: h, org: id, genesis: genesis, doc: doc}
}

// hello connects the stranger to n and presents docs in Hello, on the bootstrap protocol.
func (s *stranger) hello(t *testing.T, n *netNode, docs [][]byte) (string, error) {
	t.Helper()
	info, err := peer.AddrInfoFromString(n.Network().Addrs()[0])
	if err != nil {
		t.Fatalf("AddrInfo: %v", err)
	}
	if err := s.host.Connect(t.Context(), *info); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	c, _ := peerClientFrom(s.host, n.PeerID(), network.BootstrapProtocol)
	_, err = c.Hello(t.Context(), connect.NewRequest(&schakelv1.HelloRequest{Documents: docs}))
	return "ok", err
}

func byteDocs(ds []string) [][]byte {
	out := make([][]byte, len(ds))
	for i, d := range ds {
		out[i] = []byte(d)
	}
	return out
}

// linkedPair starts two quiet nodes that admit each other: a GP practice, the custodian the
// input is for, and a hospital whose node is the caller.
func linkedPair(t *testing.T, reg *register.Register) (gp, hospital *netNode) {
	t.Helper()
	gp = badNetNode(t, reg, "Huisartsenpraktijk Jansen")
	hospital = badNetNode(t, reg, "Stadsziekenhuis")
	link(t, hospital, gp)
	eventually(t, 15*time.Second, "the nodes admit each other and know each other's organisations", func() bool {
		_, e1 := gp.dids.Resolve(t.Context(), hospital.org)
		_, e2 := hospital.dids.Resolve(t.Context(), gp.org)
		return e1 == nil && e2 == nil && admittedCount(gp) == 1 && admittedCount(hospital) == 1
	})
	return gp, hospital
}

// TestBadInputPeerRPC sends bad input to the peer RPC of a GP practice's node, over libp2p: from
// the admitted node of a hospital (every PeerService method) and from strangers (Hello, the one
// method served before admission).
func TestBadInputPeerRPC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gp, hospital := linkedPair(t, reg)
	client, raw := peerClientFrom(hospital.Network().Host(), gp.PeerID(), network.RPCProtocol)
	rawBase := "http://" + gp.PeerID().String()

	_, hsig, err := hospital.orgs.signingKey(ctx, hospital.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	_, gpSig, err := gp.orgs.signingKey(ctx, gp.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	st, err := hospital.dids.Resolve(ctx, gp.org)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	gpEnc := st.Current().AgreementKey
	now := time.Now()
	jkt := dpopJKT(t)
	claims := func(edit func(*authz.AssertionClaims)) authz.AssertionClaims {
		c := authz.AssertionClaims{Issuer: hospital.org, Custodian: gp.org, ID: authz.NewID(), IssuedAt: now, Expiry: now.Add(authz.MaxAssertionLifetime),
			Employee: authz.Employee{UZI: "900012345", Role: "01.015", Name: "A. de Vries", Assurance: "high"},
			BSN:      accessBSN, DataCategory: "medication", Purpose: "TREAT", DPoPJKT: jkt}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	assertion := func(signer *crypto.PrivateKey, kid string, c authz.AssertionClaims, to *crypto.PublicKey) []byte {
		jwe, err := authz.NewAssertion(signer, kid, c, to)
		if err != nil {
			t.Fatalf("NewAssertion: %v", err)
		}
		return jwe
	}
	otherSig, otherEnc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	issued, err := hospital.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: hospital.org,
		Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://ziekenhuis.example/fhir"}}}}})
	if err != nil {
		t.Fatalf("IssueCredential: %v", err)
	}
	registration := []byte(issued.GetCredential().GetJwt())
	wrongTyp, err := crypto.Encrypt(registration, gpEnc)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	valid := assertion(hsig, "", claims(nil), gpEnc)
	cut := func(b []byte) []byte { return b[:len(b)*2/3] }
	// flipCiphertext changes one character of a compact JWE's ciphertext segment.
	flipCiphertext := func(jwe []byte) []byte {
		out := bytes.Clone(jwe)
		parts := bytes.SplitN(out, []byte("."), 5)
		i := len(parts[0]) + len(parts[1]) + len(parts[2]) + 3 + len(parts[3])/2
		if out[i] == 'A' {
			out[i] = 'B'
		} else {
			out[i] = 'A'
		}
		return out
	}

	// Private messages: a valid one, delivered once as setup, and forgeries.
	body := []byte(`{"note":"hello"}`)
	sealed, err := outbox.Seal(hsig, hospital.org, gpEnc, gp.org, "notice", body, now, 0)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	msg := func(m *outbox.Message) *schakelv1.DeliverRequest {
		return &schakelv1.DeliverRequest{Id: m.ID, From: m.From, To: m.To, Kind: m.Kind, Payload: m.Payload}
	}
	seal := func(signer *crypto.PrivateKey, from, to string, at time.Time, ttl time.Duration) *outbox.Message {
		m, err := outbox.Seal(signer, from, gpEnc, to, "notice", body, at, ttl)
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		return m
	}
	expiredMsg := seal(hsig, hospital.org, gp.org, now.Add(-3*time.Hour), time.Hour)
	otherAudience := seal(hsig, hospital.org, hospital.org, now, 0)
	otherAudience.To = gp.org
	notTheSender := seal(gpSig, gp.org, gp.org, now, 0)
	// A message signed by another key under the kid of the hospital's signing key.
	forgedMsg := func() *outbox.Message {
		id := authz.NewID()[:22]
		payload, _ := json.Marshal(map[string]any{"iss": hospital.org, "aud": gp.org, "jti": id, "iat": now.Unix(),
			"exp": now.Add(time.Hour).Unix(), "kind": "notice", "body": base64.RawURLEncoding.EncodeToString(body)})
		jws, err := crypto.Sign(otherSig, payload, crypto.Header{Type: outbox.TypeMessage, KID: hsig.KID()})
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		jwe, err := crypto.Encrypt(jws, gpEnc)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		return &outbox.Message{ID: id, From: hospital.org, To: gp.org, Payload: jwe}
	}()
	credentialMsg := &outbox.Message{ID: sealed.ID[:21] + "A", From: hospital.org, To: gp.org, Payload: wrongTyp}

	deliver := func(m *schakelv1.DeliverRequest) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			resp, err := client.Deliver(t.Context(), connect.NewRequest(m))
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("duplicate=%v", resp.Msg.GetDuplicate()), nil
		}
	}
	requestToken := func(jwe []byte) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			resp, err := client.RequestToken(t.Context(), connect.NewRequest(&schakelv1.PeerServiceRequestTokenRequest{Assertion: jwe}))
			if err != nil {
				return "", err
			}
			if resp.Msg.GetAccessToken() != "" {
				return "granted", nil
			}
			return resp.Msg.GetError() + ": " + resp.Msg.GetErrorDescription(), nil
		}
	}

	// Accepted setup: the message delivered once, and a token request decided once (refused:
	// no consent), whose jti is then spent.
	if dup, err := hospital.Network().Deliver(ctx, msg(sealed)); err != nil || dup {
		t.Fatalf("first delivery: duplicate %v, %v", dup, err)
	}
	if ans, err := requestToken(valid)(t); err != nil || !strings.HasPrefix(ans, "access_denied: no-consent") {
		t.Fatalf("first token request: %q, %v", ans, err)
	}
	hl, err := gp.logOf(gp.org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	logSize := hl.log.Size()
	origin := hl.log.Origin()
	regDocs := byteDocs(reg.Documents())

	cases := []badCase{
		// Malformed.
		{name: "malformed: garbage protobuf", run: func(t *testing.T) (string, error) {
			return "", connectPost(t, raw, rawBase, schakelv1connect.PeerServiceDeliverProcedure, "application/proto", []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
		}, code: connect.CodeInvalidArgument, want: "unmarshal"},
		{name: "malformed: reconciliation message", run: func(t *testing.T) (string, error) {
			_, err := client.Reconcile(t.Context(), connect.NewRequest(&schakelv1.ReconcileRequest{Message: []byte("garbage")}))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "reconcil"},
		{name: "malformed: document id of 31 bytes", run: func(t *testing.T) (string, error) {
			_, err := client.FetchDocuments(t.Context(), connect.NewRequest(&schakelv1.FetchDocumentsRequest{Ids: [][]byte{make([]byte, 31)}}))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "id 0 is 31 bytes, not 32"},
		{name: "malformed: message id", run: deliver(&schakelv1.DeliverRequest{Id: "short", From: hospital.org, To: gp.org, Payload: sealed.Payload}),
			code: connect.CodeInvalidArgument, want: "message id of 5 characters"},
		{name: "malformed: message payload bytes", run: deliver(&schakelv1.DeliverRequest{Id: sealed.ID, From: hospital.org, To: gp.org, Payload: []byte("not a JWE!")}),
			code: connect.CodeInvalidArgument, want: "is not base64url"},
		{name: "malformed: truncated message", run: deliver(&schakelv1.DeliverRequest{Id: forgedMsg.ID, From: hospital.org, To: gp.org, Payload: cut(sealed.Payload)}),
			code: connect.CodeInvalidArgument, want: "malformed message"},
		{name: "malformed: log origin", run: func(t *testing.T) (string, error) {
			_, err := client.GetLogProof(t.Context(), connect.NewRequest(&schakelv1.GetLogProofRequest{Origin: "example.com/log", NewSize: 1}))
			return "", err
		}, code: connect.CodeNotFound, want: "is not a schakel access log"},
		{name: "malformed: garbage assertion", run: requestToken([]byte("garbage")),
			want: "invalid_request: the assertion is not addressed to an organisation hosted here"},
		{name: "malformed: truncated assertion", run: requestToken(cut(valid)), want: "invalid_grant: open assertion: invalid grant: malformed", logged: "invalid-request: open assertion"},
		// Oversized.
		{name: "oversized: RPC message one byte above 4 MiB", run: func(t *testing.T) (string, error) {
			m := &schakelv1.ReconcileRequest{Message: make([]byte, 4<<20-4)}
			if s := proto.Size(m); s != 4<<20+1 {
				t.Fatalf("message is %d bytes, want %d", s, 4<<20+1)
			}
			_, err := client.Reconcile(t.Context(), connect.NewRequest(m))
			return "", err
		}, code: connect.CodeResourceExhausted, want: "larger than configured max"},
		{name: "oversized: 257 document ids", run: func(t *testing.T) (string, error) {
			ids := make([][]byte, 257)
			for i := range ids {
				ids[i] = make([]byte, 32)
			}
			_, err := client.FetchDocuments(t.Context(), connect.NewRequest(&schakelv1.FetchDocumentsRequest{Ids: ids}))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "257 ids, at most 256"},
		{name: "oversized: 65 documents in Hello", run: func(t *testing.T) (string, error) {
			_, err := client.Hello(t.Context(), connect.NewRequest(&schakelv1.HelloRequest{Documents: make([][]byte, 65)}))
			return "", err
		}, code: connect.CodeInvalidArgument, want: "65 documents, at most 64"},
		{name: "oversized: message payload one byte above 128 KiB", run: deliver(&schakelv1.DeliverRequest{Id: sealed.ID, From: hospital.org, To: gp.org,
			Payload: bytes.Repeat([]byte("A"), outbox.MaxPayload+1)}), code: connect.CodeInvalidArgument, want: "payload of 131073 bytes, limit 131072"},
		{name: "oversized: assertion one byte above 16 KiB", run: requestToken(bytes.Repeat([]byte("A"), authz.MaxAssertionSize+1)),
			code: connect.CodeInvalidArgument, want: "assertion of 16385 bytes exceeds 16384"},
		{name: "oversized: log proof beyond the log", run: func(t *testing.T) (string, error) {
			_, err := client.GetLogProof(t.Context(), connect.NewRequest(&schakelv1.GetLogProofRequest{Origin: origin, OldSize: 0, NewSize: logSize + 100}))
			return "", err
		}, code: connect.CodeNotFound, want: "not found"},
		// Wrong type.
		{name: "wrong type: credential sealed as a message", run: deliver(msg(credentialMsg)), code: connect.CodeInvalidArgument, want: "inner token of type"},
		{name: "wrong type: message signed for another audience", run: deliver(msg(otherAudience)), code: connect.CodeInvalidArgument, want: "signed for another audience"},
		{name: "wrong type: message from an organisation the caller does not host", run: deliver(msg(notTheSender)), code: connect.CodeInvalidArgument, want: "is not hosted by the delivering peer"},
		{name: "wrong type: message for an organisation not hosted here", run: deliver(&schakelv1.DeliverRequest{Id: sealed.ID, From: hospital.org, To: hospital.org, Payload: sealed.Payload}),
			code: connect.CodeInvalidArgument, want: "private message not for this node"},
		{name: "wrong type: credential encrypted as an assertion", run: requestToken(wrongTyp), want: "invalid_grant: open assertion: invalid grant: malformed: typ", logged: "invalid-request: open assertion"},
		{name: "wrong type: assertion for another custodian", run: requestToken(assertion(hsig, "", claims(func(c *authz.AssertionClaims) { c.Custodian = hospital.org }), gpEnc)),
			want: "invalid_grant: open assertion: invalid grant: wrong audience", logged: "wrong audience"},
		{name: "wrong type: assertion encrypted to a key not hosted here", run: requestToken(assertion(hsig, "", claims(nil), otherEnc.Public())),
			want: "invalid_request: the assertion is not addressed to an organisation hosted here"},
		{name: "wrong type: assertion of an organisation the caller does not host", run: requestToken(assertion(gpSig, "", claims(func(c *authz.AssertionClaims) { c.Issuer = gp.org }), gpEnc)),
			want: "invalid_client: the calling node does not host the requesting organisation", logged: "does not host the requesting organisation", spends: true},
		// Expired.
		{name: "expired: message", run: deliver(msg(expiredMsg)), code: connect.CodeInvalidArgument, want: "message expired"},
		{name: "expired: assertion", run: requestToken(assertion(hsig, "", claims(func(c *authz.AssertionClaims) {
			c.IssuedAt, c.Expiry = now.Add(-10*time.Minute), now.Add(-5*time.Minute)
		}), gpEnc)), want: "invalid_grant: open assertion", logged: "expired"},
		// Replayed.
		{name: "replayed: delivered message", run: deliver(msg(sealed)), want: "duplicate=true"},
		{name: "replayed: spent assertion", run: requestToken(valid), want: "invalid_grant: open assertion: invalid grant: replayed", logged: "replayed"},
		{name: "replayed: stored documents in Hello", run: func(t *testing.T) (string, error) {
			_, err := client.Hello(t.Context(), connect.NewRequest(&schakelv1.HelloRequest{Documents: regDocs}))
			return "ok", err
		}, want: "ok"},
		// Forged.
		{name: "forged: changed message ciphertext", run: deliver(&schakelv1.DeliverRequest{Id: sealed.ID, From: hospital.org, To: gp.org, Payload: flipCiphertext(sealed.Payload)}),
			code: connect.CodeInvalidArgument, want: "message payload altered"},
		{name: "forged: message signed by another key under the sender's kid", run: deliver(msg(forgedMsg)), code: connect.CodeInvalidArgument, want: "message signature does not verify"},
		{name: "forged: changed assertion ciphertext", run: requestToken(flipCiphertext(valid)), want: "invalid_grant: open assertion: invalid grant: malformed", logged: "invalid-request: open assertion"},
		{name: "forged: assertion signed by another key under the requester's kid", run: requestToken(assertion(otherSig, authz.KID(hospital.org, hsig), claims(nil), gpEnc)),
			want: "invalid_grant: open assertion: invalid grant: signature does not verify", logged: "signature does not verify"},
		{name: "forged: documents in an admitted peer's Hello", run: func(t *testing.T) (string, error) {
			_, err := client.Hello(t.Context(), connect.NewRequest(&schakelv1.HelloRequest{Documents: [][]byte{[]byte("garbage"), flipSignature(registration)}}))
			return "ok", err
		}, want: "ok"},
	}

	// Hello from strangers, on the bootstrap protocol: each a fresh host, since a refused one is
	// kept out.
	strangerHello := func(docs func(s *stranger) [][]byte) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			s := newStranger(t)
			return s.hello(t, gp, docs(s))
		}
	}
	ownCredential := func(s *stranger, validity time.Duration, at time.Time) []byte {
		c, err := reg.Issue(ctx, vc.Organization{ID: s.org, Name: "Indringer", URA: "07654321", Type: "Z3", City: "Utrecht"}, validity, at)
		if err != nil {
			t.Fatalf("register Issue: %v", err)
		}
		return c.JWT
	}
	cases = append(cases,
		badCase{name: "stranger: garbage documents", run: strangerHello(func(*stranger) [][]byte { return [][]byte{[]byte("garbage")} }),
			code: connect.CodePermissionDenied, want: "no organisation credential from a trusted register", cutOff: true},
		badCase{name: "stranger: 65 documents", run: strangerHello(func(*stranger) [][]byte { return make([][]byte, 65) }),
			code: connect.CodeInvalidArgument, want: "65 documents, at most 64"},
		badCase{name: "stranger: another organisation's documents", run: strangerHello(func(*stranger) [][]byte {
			_, doc, err := hospital.dids.Document(ctx, hospital.org)
			if err != nil {
				t.Fatalf("Document: %v", err)
			}
			c, err := reg.Issue(ctx, vc.Organization{ID: hospital.org, Name: "Stadsziekenhuis", URA: "01234567", Type: "V6", City: "Utrecht"}, time.Hour, time.Now())
			if err != nil {
				t.Fatalf("register Issue: %v", err)
			}
			return append(regDocs, doc, c.JWT)
		}), code: connect.CodePermissionDenied, want: "no organisation credential from a trusted register", cutOff: true},
		badCase{name: "stranger: forged organisation credential", run: strangerHello(func(s *stranger) [][]byte {
			return append(regDocs, s.genesis, s.doc, flipSignature(ownCredential(s, time.Hour, time.Now())))
		}), code: connect.CodePermissionDenied, want: "does not verify: verify credential", cutOff: true},
		badCase{name: "stranger: expired organisation credential", run: strangerHello(func(s *stranger) [][]byte {
			return append(regDocs, s.genesis, s.doc, ownCredential(s, 30*time.Minute, time.Now().Add(-50*time.Minute)))
		}), code: connect.CodePermissionDenied, want: "credential expired", cutOff: true},
	)
	runBadCases(t, gp, []*Node{hospital.Node}, cases)
}

// TestBadInputGossip feeds bad documents and checkpoint notes to a node the way gossip delivers
// them: through the network's Backend, which the gossip validators call for every message from
// an admitted peer once its size is checked (and which reconciliation's fetches use too). What
// the validator does with the answer — reject, or ignore without penalty for a valid but stale
// document — is shown by the error each case wraps.
func TestBadInputGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gp, hospital := linkedPair(t, reg)

	// Each log has a checkpoint that the other node has witnessed and cosigned, and whose
	// cosignature has come back: nothing of the witnessing is left to happen during the cases.
	checkpointed := func(n, w *netNode) ([]byte, int64, string) {
		hl, err := n.logOf(n.org)
		if err != nil {
			t.Fatalf("logOf: %v", err)
		}
		if _, err := hl.log.Append(ctx, &verify.Entry{Event: verify.EventDataAccess, Action: "read", Outcome: verify.OutcomeGranted,
			Requester: &verify.Requester{DID: w.org}, DataCategory: "medication", TokenID: "tok-" + n.org[len(n.org)-4:]}); err != nil {
			t.Fatalf("Append: %v", err)
		}
		if _, err := hl.log.CheckpointNow(ctx); err != nil {
			t.Fatalf("CheckpointNow: %v", err)
		}
		msg, size, err := hl.log.LatestCheckpoint(ctx)
		if err != nil {
			t.Fatalf("LatestCheckpoint: %v", err)
		}
		return msg, size, hl.log.Origin()
	}
	checkpoint, size, origin := checkpointed(hospital, gp)
	ownCheckpoint, ownSize, ownOrigin := checkpointed(gp, hospital)
	cosigned := func(n, w *netNode, origin string, size int64) func() bool {
		return func() bool {
			msg, err := n.witness.Cosigned(ctx, origin, size)
			return err == nil && bytes.Contains(msg, []byte("— "+WitnessPrefix+w.PeerID().String()+" "))
		}
	}
	eventually(t, 15*time.Second, "the hospital holds the GP's cosignature of its checkpoint", cosigned(hospital, gp, origin, size))
	eventually(t, 15*time.Second, "the GP holds the hospital's cosignature of its checkpoint", cosigned(gp, hospital, ownOrigin, ownSize))

	// Documents of the hospital: a stored registration, its DID document, one superseded by a
	// key rotation, one expired registration.
	_, oldDoc, err := hospital.dids.Document(ctx, hospital.org)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	if _, err := hospital.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: hospital.org}); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	rotated := time.Now()
	_, newDoc, err := hospital.dids.Document(ctx, hospital.org)
	if err != nil {
		t.Fatalf("Document: %v", err)
	}
	resp, err := hospital.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: hospital.org,
		Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://ziekenhuis.example/fhir"}}}}})
	if err != nil {
		t.Fatalf("IssueCredential: %v", err)
	}
	stored := []byte(resp.GetCredential().GetJwt())
	eventually(t, 15*time.Second, "the GP's node holds the hospital's new DID document and registration", func() bool {
		_, doc, err := gp.dids.Document(ctx, hospital.org)
		_, cerr := gp.creds.Get(ctx, resp.GetCredential().GetId())
		return err == nil && bytes.Equal(doc, newDoc) && cerr == nil
	})
	_, hsig, err := hospital.orgs.signingKey(ctx, hospital.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	now := time.Now()
	issue := func(req vc.Request) []byte {
		jwt, _, err := vc.Issue(hsig, req)
		if err != nil {
			t.Fatalf("vc.Issue: %v", err)
		}
		return jwt
	}
	service := &vc.Service{ID: hospital.org, Endpoints: []vc.Endpoint{{Type: "fhir", URL: "https://ziekenhuis.example/fhir"}}}
	hsl, err := hospital.logOf(hospital.org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	patient, err := hsl.pseud.Pseudonym(accessBSN)
	if err != nil {
		t.Fatalf("Pseudonym: %v", err)
	}
	grant := issue(vc.Request{Kind: vc.ReferralGrantCredential, Issuer: hospital.org, IssuedAt: now, ValidUntil: now.Add(time.Hour),
		ReferralGrant: &vc.ReferralGrant{ID: gp.org, Patient: patient, DataCategories: []string{"medication"}, Purpose: "TREAT"}})
	token := accessToken(t, hospital.Node, hospital.org, hsig, now, now.Add(5*time.Minute), breakGlassBasis+"x")
	// A registration signed with the current key, valid for one second from just after the
	// rotation: expired by the time the cases run.
	expiredReg := issue(vc.Request{Kind: vc.ServiceRegistrationCredential, Issuer: hospital.org, IssuedAt: rotated.Add(time.Second),
		ValidUntil: rotated.Add(2 * time.Second), Status: statusOf(t, stored), Service: service})
	time.Sleep(time.Until(rotated.Add(3 * time.Second)))
	unknownIssuer := newRegister(t)
	fromUnknown, err := unknownIssuer.Issue(ctx, vc.Organization{ID: hospital.org, Name: "Stadsziekenhuis", URA: "01234567", Type: "V6", City: "Utrecht"}, time.Hour, now)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	genesis, err := hospital.dids.Events(ctx, hospital.org)
	if err != nil || len(genesis) == 0 {
		t.Fatalf("Events: %d, %v", len(genesis), err)
	}

	// Notes: the hospital's checkpoint, changed, truncated and signed by another key.
	otherKey, _, err := note.GenerateKey(nil, origin)
	if err != nil {
		t.Fatalf("note.GenerateKey: %v", err)
	}
	otherSigner, err := note.NewSigner(otherKey)
	if err != nil {
		t.Fatalf("note.NewSigner: %v", err)
	}
	body, _, _ := bytes.Cut(checkpoint, []byte("\n\n"))
	resignedNote, err := note.Sign(&note.Note{Text: string(body) + "\n"}, otherSigner)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	changedNote := bytes.Replace(checkpoint, []byte(fmt.Sprintf("\n%d\n", size)), []byte(fmt.Sprintf("\n%d\n", size+1)), 1)
	if bytes.Equal(changedNote, checkpoint) {
		t.Fatal("the checkpoint's size line was not found")
	}
	// A cosignature of the GP's own checkpoint by a witness key nobody publishes.
	strangerWitness := func() []byte {
		skey, _, err := note.GenerateKey(nil, WitnessPrefix+"12D3KooWStranger")
		if err != nil {
			t.Fatalf("note.GenerateKey: %v", err)
		}
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatalf("note.NewSigner: %v", err)
		}
		text, _, _ := bytes.Cut(ownCheckpoint, []byte("\n\n"))
		n, err := note.Sign(&note.Note{Text: string(text) + "\n"}, s)
		if err != nil {
			t.Fatalf("note.Sign: %v", err)
		}
		_, sigLine, _ := bytes.Cut(n, []byte("\n\n"))
		return append(bytes.Clone(ownCheckpoint), sigLine...)
	}()

	accept := func(doc []byte) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			ok, err := gp.backend.Accept(t.Context(), doc)
			if ok {
				return "stored", err
			}
			return "not stored", err
		}
	}
	acceptNote := func(msg []byte) func(*testing.T) (string, error) {
		return func(t *testing.T) (string, error) {
			if err := gp.backend.AcceptNote(t.Context(), hospital.PeerID(), msg); err != nil {
				return "", err
			}
			return "accepted", nil
		}
	}
	cases := []badCase{
		// Malformed.
		{name: "malformed: garbage document", run: accept([]byte("garbage")), is: crypto.ErrMalformed, want: "parse header"},
		{name: "malformed: truncated registration", run: accept(stored[:len(stored)/2]), is: crypto.ErrMalformed, want: "parse header"},
		{name: "malformed: garbage note", run: acceptNote([]byte("garbage")), is: errSome, want: "is not a schakel access log"},
		{name: "malformed: truncated checkpoint", run: acceptNote(checkpoint[:len(checkpoint)/2]), is: errSome, want: "malformed note"},
		// Oversized.
		{name: "oversized: document one byte above 64 KiB", run: accept(append(bytes.Clone(stored), bytes.Repeat([]byte("A"), crypto.MaxJWSSize+1-len(stored))...)),
			is: crypto.ErrTooLarge, want: "limit 65536"},
		{name: "oversized: checkpoint one byte above 64 KiB", run: acceptNote(append(bytes.Clone(checkpoint), bytes.Repeat([]byte("A"), 64<<10+1-len(checkpoint))...)),
			is: errSome, want: "65537 bytes exceeds 65536"},
		// Wrong type.
		{name: "wrong type: access token as a document", run: accept([]byte(token)), is: errSome, want: `unknown document type "at+jwt"`},
		{name: "wrong type: referral grant as a public document", run: accept(grant), is: vc.ErrNotPublic, want: "not public"},
		{name: "wrong type: credential as a checkpoint", run: acceptNote(stored), is: errSome, want: "is not a schakel access log"},
		{name: "wrong type: credential of an issuer not known here", run: accept(fromUnknown.JWT), is: network.ErrPending, want: "unknown DID"},
		// Expired.
		{name: "expired: registration", run: accept(expiredReg), is: network.ErrStale, want: "credential expired"},
		// Replayed.
		{name: "replayed: stored registration", run: accept(stored), want: "not stored"},
		{name: "replayed: stored key event", run: accept(genesis[0]), want: "not stored"},
		{name: "replayed: stored DID document", run: accept(newDoc), want: "not stored"},
		{name: "replayed: DID document superseded by a key rotation", run: accept(oldDoc), is: network.ErrStale, want: "superseded by a key rotation"},
		// A checkpoint already witnessed is valid: it travels on, and nothing is written again.
		{name: "replayed: witnessed checkpoint", run: acceptNote(checkpoint), want: "accepted"},
		// Forged.
		{name: "forged: changed signature byte", run: accept(flipSignature(stored)), is: crypto.ErrSignature, want: "signature does not verify"},
		{name: "forged: changed payload", run: accept(withPayload(t, stored, func(p []byte) []byte {
			return bytes.Replace(p, []byte("ziekenhuis.example"), []byte("ziekenhuiz.example"), 1)
		})), is: crypto.ErrSignature, want: "signature does not verify"},
		{name: "forged: signed by another key under the issuer's kid", run: accept(resigned(t, stored, nil)), is: crypto.ErrSignature, want: "signature does not verify"},
		{name: "forged: key event signed by another key", run: accept(resigned(t, genesis[0], nil)), is: did.ErrInvalid, want: "signature does not verify"},
		{name: "forged: checkpoint with a changed size", run: acceptNote(changedNote), is: errSome, want: "not signed by the log key: invalid signature"},
		{name: "forged: checkpoint signed by another key", run: acceptNote(resignedNote), is: errSome, want: "not signed by the log key: no signature by"},
		{name: "forged: cosignature of an unknown witness", run: acceptNote(strangerWitness), is: network.ErrStale, want: "superseded"},
	}
	runBadCases(t, gp, []*Node{hospital.Node}, cases)
}

// statusOf returns the status entry of a credential, for issuing another like it.
func statusOf(t *testing.T, jwt []byte) *vc.StatusEntry {
	t.Helper()
	c, err := vc.Parse(jwt)
	if err != nil {
		t.Fatalf("vc.Parse: %v", err)
	}
	return c.Status
}
