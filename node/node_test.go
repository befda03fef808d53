package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.DataDir = "/tmp/x"
		return c
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"defaults with a data dir", func(*Config) {}, ""},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data directory required"},
		{"in memory needs no data dir", func(c *Config) { c.DataDir, c.InMemory = "", true }, ""},
		{"bad api address", func(c *Config) { c.APIAddr = "nonsense" }, "api_addr"},
		{"exposed api without token", func(c *Config) { c.APIAddr = "0.0.0.0:7631" }, "not loopback"},
		{"exposed api with token", func(c *Config) { c.APIAddr, c.APIToken = "0.0.0.0:7631", "secret" }, ""},
		{"exposed api with mTLS", func(c *Config) {
			c.APIAddr, c.APITLSCert, c.APITLSKey, c.APIClientCA = "0.0.0.0:7631", "c.pem", "k.pem", "ca.pem"
		}, ""},
		{"client CA without a server certificate", func(c *Config) { c.APIClientCA = "ca.pem" }, "api_client_ca"},
		{"bad p2p multiaddr", func(c *Config) { c.P2PAddr = "tcp://1.2.3.4" }, "p2p_addr"},
		{"bad trusted register", func(c *Config) { c.TrustedRegisters = []string{"did:web:example.com"} }, "trusted_registers"},
		{"validity too short", func(c *Config) { c.CredentialValidity = time.Minute }, "credential_validity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func newNode(t *testing.T, trusted ...string) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = trusted
	n, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func TestTenancy(t *testing.T) {
	ctx := t.Context()
	reg, err := register.Init(ctx, t.TempDir(), "test register", time.Now())
	if err != nil {
		t.Fatalf("register.Init: %v", err)
	}
	n := newNode(t, reg.DID())
	create := func(name string) string {
		resp, err := n.CreateOrganization(ctx, &schakelv1.CreateOrganizationRequest{Name: name})
		if err != nil {
			t.Fatalf("CreateOrganization(%s): %v", name, err)
		}
		return resp.GetOrganization().GetDid()
	}
	a, b := create("Huisartsenpraktijk Jansen"), create("Apotheek Janssens")
	if _, err := n.CreateOrganization(ctx, &schakelv1.CreateOrganizationRequest{Name: "  "}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("CreateOrganization(blank) = %v, want ErrInvalidArgument", err)
	}
	// Each organisation's DID document binds it to this node's peer id.
	got, err := n.GetOrganization(ctx, &schakelv1.GetOrganizationRequest{Did: a})
	if err != nil {
		t.Fatalf("GetOrganization: %v", err)
	}
	st, err := n.dids.Resolve(ctx, a)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	doc, err := did.VerifyDocument([]byte(got.GetOrganization().GetDocumentJws()), st)
	if err != nil {
		t.Fatalf("VerifyDocument: %v", err)
	}
	if p := doc.PeerIDs(); len(p) != 1 || p[0] != n.PeerID().String() {
		t.Fatalf("DID document binds peers %v, want this node %s", p, n.PeerID())
	}
	info, _ := n.GetNodeInfo(ctx, &schakelv1.GetNodeInfoRequest{})
	if info.GetPeerId() != n.PeerID().String() || len(info.GetOrganizations()) != 2 {
		t.Fatalf("GetNodeInfo = %+v", info)
	}

	// Admit both through the register.
	docs := reg.Documents()
	for _, o := range []struct{ did, name, ura string }{{a, "Huisartsenpraktijk Jansen", "01234567"}, {b, "Apotheek Janssens", "02345678"}} {
		c, err := reg.Issue(ctx, vc.Organization{ID: o.did, Name: o.name, URA: o.ura, Type: "Z3", City: "Utrecht"}, 24*time.Hour, time.Now())
		if err != nil {
			t.Fatalf("register Issue: %v", err)
		}
		docs = append(docs, string(c.JWT))
	}
	if _, err := n.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		t.Fatalf("SubmitDocuments: %v", err)
	}

	sr := &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
		Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://a.example/fhir"}}}}
	issued, err := n.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: a, Subject: sr})
	if err != nil {
		t.Fatalf("IssueCredential: %v", err)
	}
	// An organisation not hosted here cannot act; one organisation cannot revoke another's credential.
	if _, err := n.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: reg.DID(), Subject: sr}); !errors.Is(err, ErrUnknownOrganization) {
		t.Fatalf("IssueCredential(not hosted) = %v, want ErrUnknownOrganization", err)
	}
	if _, err := n.RevokeCredential(ctx, &schakelv1.RevokeCredentialRequest{Organization: b, CredentialId: issued.GetCredential().GetId()}); !errors.Is(err, vc.ErrNotFound) {
		t.Fatalf("RevokeCredential(by another organisation) = %v, want ErrNotFound", err)
	}
	if _, err := n.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: reg.DID()}); !errors.Is(err, ErrUnknownOrganization) {
		t.Fatalf("RotateKey(not hosted) = %v, want ErrUnknownOrganization", err)
	}
	rot, err := n.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: a})
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	jwks, err := n.JWKS(ctx, a)
	if err != nil {
		t.Fatalf("JWKS: %v", err)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
			D   string `json:"d"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 2 || set.Keys[0].KID != rot.GetNewKeyId() || set.Keys[0].D != "" || set.Keys[1].D != "" {
		t.Fatalf("JWKS = %s, %v; want the two current public keys", jwks, err)
	}
	if _, err := n.JWKS(ctx, reg.DID()); !errors.Is(err, ErrUnknownOrganization) {
		t.Fatalf("JWKS(not hosted) = %v, want ErrUnknownOrganization", err)
	}
	res, err := n.ResolveDID(ctx, &schakelv1.ResolveDIDRequest{Did: a})
	if err != nil || len(res.GetKeyEvents()) != 2 {
		t.Fatalf("ResolveDID = %d events, %v; want 2", len(res.GetKeyEvents()), err)
	}
	// The registration signed before the rotation is still valid.
	v, err := n.VerifyCredential(ctx, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: issued.GetCredential().GetId()}})
	if err != nil || !v.GetValid() {
		t.Fatalf("VerifyCredential after rotation = %+v, %v", v, err)
	}
}

func TestSubmitDocumentsRefuses(t *testing.T) {
	ctx := t.Context()
	n := newNode(t)
	tests := []struct {
		name string
		docs []string
		want error
	}{
		{"none", nil, api.ErrInvalidArgument},
		{"too many", make([]string, maxSubmit+1), api.ErrInvalidArgument},
		{"unknown typ", []string{"eyJhbGciOiJFZERTQSIsInR5cCI6InNvbWV0aGluZyJ9.e30.AAAA"}, api.ErrInvalidArgument},
		{"not a JWS", []string{"hello"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: tc.docs})
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("SubmitDocuments = %v, want %v", err, tc.want)
			}
		})
	}
}
