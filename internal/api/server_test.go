package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// startServer starts a Server for b on a free loopback port and closes it when the test ends. It
// returns the server and its base URL.
func startServer(t *testing.T, cfg Config, b Backend) (*Server, string) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, b, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	scheme := "http://"
	if cfg.TLSCert != "" {
		scheme = "https://"
	}
	return s, scheme + s.Addr().String()
}

// h2cClient speaks only cleartext HTTP/2 with prior knowledge, as gRPC clients do.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// http1Client speaks only HTTP/1.1.
func http1Client(t *testing.T) *http.Client {
	t.Helper()
	var p http.Protocols
	p.SetHTTP1(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// bearer is a client option that sends the API token.
func bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
}

func get(t *testing.T, url, token string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("NewRequest %s: %v", url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestProtocols(t *testing.T) {
	_, base := startServer(t, Config{}, &fakeBackend{})
	tests := []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{name: "gRPC over h2c", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC()}},
		{name: "gRPC-Web over HTTP/1.1", client: http1Client(t), opts: []connect.ClientOption{connect.WithGRPCWeb()}},
		{name: "gRPC-Web over h2c", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPCWeb()}},
		{name: "Connect protobuf over HTTP/1.1", client: http1Client(t)},
		{name: "Connect JSON over HTTP/1.1", client: http1Client(t), opts: []connect.ClientOption{connect.WithProtoJSON()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := schakelv1connect.NewNodeServiceClient(tt.client, base, tt.opts...)
			info, err := node.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{}))
			if err != nil {
				t.Fatalf("GetNodeInfo: %v", err)
			}
			if got := info.Msg.GetVersion(); got != "test-version" {
				t.Errorf("GetNodeInfo: version = %q, want %q", got, "test-version")
			}
			orgs := schakelv1connect.NewOrganizationServiceClient(tt.client, base, tt.opts...)
			org, err := orgs.GetOrganization(t.Context(), connect.NewRequest(&schakelv1.GetOrganizationRequest{Did: "did:schakel:abc"}))
			if err != nil {
				t.Fatalf("GetOrganization: %v", err)
			}
			if got := org.Msg.GetOrganization().GetDid(); got != "did:schakel:abc" {
				t.Errorf("GetOrganization: did = %q, want %q", got, "did:schakel:abc")
			}
		})
	}
}

func TestConnectJSONWithPlainHTTP(t *testing.T) {
	_, base := startServer(t, Config{}, &fakeBackend{})
	resp, err := http.Post(base+schakelv1connect.CredentialServiceRevokeCredentialProcedure, "application/json",
		strings.NewReader(`{"organization":"did:schakel:a","credentialId":"cred-1"}`))
	if err != nil {
		t.Fatalf("POST RevokeCredential: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST RevokeCredential: status %d, want 200", resp.StatusCode)
	}
	var got struct {
		StatusListID string `json:"statusListId"`
		StatusIndex  string `json:"statusIndex"` // int64 is a JSON string in the protobuf JSON mapping
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatalf("POST RevokeCredential: decode: %v", err)
	}
	if got.StatusListID != "list-1" || got.StatusIndex != "7" {
		t.Errorf("POST RevokeCredential: got %+v, want list-1 and 7", got)
	}
}

func TestReflection(t *testing.T) {
	_, base := startServer(t, Config{Token: "reflect-token"}, &fakeBackend{})
	client := grpcreflect.NewClient(h2cClient(t), base, connect.WithGRPC())
	stream := client.NewStream(t.Context(), grpcreflect.WithRequestHeaders(http.Header{"Authorization": {"Bearer reflect-token"}}))
	defer stream.Close()

	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	for _, want := range Services() {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("ListServices = %v, missing %s", names, want)
		}
	}
	files, err := stream.FileContainingSymbol("schakel.v1.CredentialService")
	if err != nil {
		t.Fatalf("FileContainingSymbol: %v", err)
	}
	if len(files) == 0 || files[0].GetName() != "schakel/v1/schakel.proto" {
		t.Errorf("FileContainingSymbol: got %d files, want schakel/v1/schakel.proto first", len(files))
	}

	// Older clients (grpcurl before v1 reflection) use v1alpha; its route must exist. A non-RPC
	// request to it is refused as an unsupported media type, not as an unknown path.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", strings.NewReader("x"))
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Authorization", "Bearer reflect-token")
	req.Header.Set("Content-Type", "text/plain")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST v1alpha reflection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Errorf("POST v1alpha reflection: status 404, want the route to exist")
	}
}

func TestToken(t *testing.T) {
	const token = "correct horse battery staple"
	b := &fakeBackend{jwks: map[string][]byte{"did:schakel:a": []byte(`{"keys":[]}`)}}
	_, base := startServer(t, Config{Token: token}, b)

	t.Run("plain HTTP", func(t *testing.T) {
		tests := []struct {
			name   string
			path   string
			token  string
			status int
		}{
			{name: "healthz without token", path: "/healthz", status: http.StatusOK},
			{name: "readyz without token", path: "/readyz", status: http.StatusOK},
			{name: "metrics without token", path: "/metrics", status: http.StatusUnauthorized},
			{name: "metrics with wrong token", path: "/metrics", token: "wrong", status: http.StatusUnauthorized},
			{name: "metrics with token", path: "/metrics", token: token, status: http.StatusOK},
			{name: "jwks without token", path: "/orgs/did:schakel:a/jwks.json", status: http.StatusUnauthorized},
			{name: "jwks with token", path: "/orgs/did:schakel:a/jwks.json", token: token, status: http.StatusOK},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, header, body := get(t, base+tt.path, tt.token)
				if status != tt.status {
					t.Fatalf("GET %s: status %d, want %d (%s)", tt.path, status, tt.status, body)
				}
				if status == http.StatusUnauthorized && !strings.HasPrefix(header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("GET %s: WWW-Authenticate = %q, want a Bearer challenge", tt.path, header.Get("WWW-Authenticate"))
				}
			})
		}
	})

	t.Run("RPC", func(t *testing.T) {
		tests := []struct {
			name     string
			client   *http.Client
			opts     []connect.ClientOption
			wantCode connect.Code // 0: success
		}{
			{name: "gRPC without token", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC()}, wantCode: connect.CodeUnauthenticated},
			{name: "gRPC with wrong token", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC(), bearer("wrong")}, wantCode: connect.CodeUnauthenticated},
			{name: "gRPC with token", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC(), bearer(token)}},
			{name: "gRPC-Web without token", client: http1Client(t), opts: []connect.ClientOption{connect.WithGRPCWeb()}, wantCode: connect.CodeUnauthenticated},
			{name: "Connect without token", client: http1Client(t), wantCode: connect.CodeUnauthenticated},
			{name: "Connect with token", client: http1Client(t), opts: []connect.ClientOption{bearer(token)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := b.callCount()
				client := schakelv1connect.NewNodeServiceClient(tt.client, base, tt.opts...)
				_, err := client.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{}))
				if tt.wantCode == 0 {
					if err != nil {
						t.Fatalf("GetNodeInfo: %v", err)
					}
					return
				}
				if got := connect.CodeOf(err); got != tt.wantCode {
					t.Fatalf("GetNodeInfo: code %v (%v), want %v", got, err, tt.wantCode)
				}
				if b.callCount() != before {
					t.Errorf("GetNodeInfo: backend called without a valid token")
				}
			})
		}
	})

	t.Run("Connect JSON status", func(t *testing.T) {
		resp, err := http.Post(base+schakelv1connect.NodeServiceGetNodeInfoProcedure, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatalf("POST GetNodeInfo: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST GetNodeInfo without token: status %d, want 401", resp.StatusCode)
		}
	})
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		backend Backend
		wantErr string // empty: New succeeds
	}{
		{name: "default loopback", cfg: Config{}},
		{name: "IPv4 loopback", cfg: Config{Addr: "127.0.0.1:0"}},
		{name: "IPv6 loopback", cfg: Config{Addr: "[::1]:0"}},
		{name: "localhost", cfg: Config{Addr: "localhost:0"}},
		{name: "all interfaces with token", cfg: Config{Addr: "0.0.0.0:7631", Token: "t"}},
		{name: "all interfaces without token", cfg: Config{Addr: "0.0.0.0:7631"},
			wantErr: "refusing to serve the internal API on 0.0.0.0:7631 without an API token or mTLS"},
		{name: "empty host without token", cfg: Config{Addr: ":7631"},
			wantErr: "refusing to serve the internal API on :7631 without an API token or mTLS"},
		{name: "IPv6 any without token", cfg: Config{Addr: "[::]:7631"}, wantErr: "refusing to serve"},
		{name: "host name without token", cfg: Config{Addr: "node.example.org:7631"}, wantErr: "refusing to serve"},
		{name: "routable address without token", cfg: Config{Addr: "192.0.2.10:7631"}, wantErr: "refusing to serve"},
		{name: "bad address", cfg: Config{Addr: "7631"}, wantErr: "address"},
		{name: "cert without key", cfg: Config{TLSCert: "cert.pem"}, wantErr: "TLSCert and TLSKey"},
		{name: "client CA without cert", cfg: Config{ClientCA: "ca.pem"}, wantErr: "requires TLSCert"},
		{name: "missing cert file", cfg: Config{TLSCert: "/nonexistent/cert.pem", TLSKey: "/nonexistent/key.pem"}, wantErr: "load TLS certificate"},
		{name: "negative size", cfg: Config{MaxRequestBytes: -1}, wantErr: "MaxRequestBytes"},
		{name: "nil backend", cfg: Config{}, backend: Backend(nil), wantErr: "nil Backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.backend
			if b == nil && tt.wantErr != "nil Backend" {
				b = &fakeBackend{}
			}
			_, err := New(tt.cfg, b, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New(%+v): %v", tt.cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New(%+v) = %v, want error containing %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

func TestOversizedRequest(t *testing.T) {
	const limit = 1024
	b := &fakeBackend{}
	_, base := startServer(t, Config{MaxRequestBytes: limit}, b)
	tests := []struct {
		name     string
		client   *http.Client
		opts     []connect.ClientOption
		size     int
		wantCode connect.Code // 0: success
	}{
		{name: "gRPC under the limit", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC()}, size: limit / 2},
		{name: "gRPC over the limit", client: h2cClient(t), opts: []connect.ClientOption{connect.WithGRPC()}, size: 2 * limit, wantCode: connect.CodeResourceExhausted},
		{name: "Connect over the limit", client: http1Client(t), size: 2 * limit, wantCode: connect.CodeResourceExhausted},
		{name: "Connect JSON over the limit", client: http1Client(t), opts: []connect.ClientOption{connect.WithProtoJSON()}, size: 2 * limit, wantCode: connect.CodeResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.callCount()
			client := schakelv1connect.NewDocumentServiceClient(tt.client, base, tt.opts...)
			req := &schakelv1.SubmitDocumentsRequest{Documents: []string{strings.Repeat("a", tt.size)}}
			_, err := client.SubmitDocuments(t.Context(), connect.NewRequest(req))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("SubmitDocuments(%d bytes): %v", tt.size, err)
				}
				return
			}
			if got := connect.CodeOf(err); got != tt.wantCode {
				t.Fatalf("SubmitDocuments(%d bytes): code %v (%v), want %v", tt.size, got, err, tt.wantCode)
			}
			if b.callCount() != before {
				t.Errorf("SubmitDocuments(%d bytes): backend called with an oversized request", tt.size)
			}
		})
	}

	t.Run("Connect JSON status", func(t *testing.T) {
		body := `{"documents":["` + strings.Repeat("a", 2*limit) + `"]}`
		resp, err := http.Post(base+schakelv1connect.DocumentServiceSubmitDocumentsProcedure, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST SubmitDocuments: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("POST SubmitDocuments(%d bytes): status %d, want 429 (resource_exhausted)", len(body), resp.StatusCode)
		}
	})
}

func TestErrorsOverTheWire(t *testing.T) {
	errQuota := errors.New("quota exceeded")
	RegisterError(errQuota, connect.CodeResourceExhausted)
	tests := []struct {
		name        string
		err         error
		wantCode    connect.Code
		wantMessage string
		notInMsg    string
	}{
		{name: "not found keeps message", err: fmt.Errorf("organisation did:schakel:x: %w", ErrNotFound),
			wantCode: connect.CodeNotFound, wantMessage: "organisation did:schakel:x: not found"},
		{name: "invalid argument", err: fmt.Errorf("name is empty: %w", ErrInvalidArgument),
			wantCode: connect.CodeInvalidArgument, wantMessage: "name is empty: invalid argument"},
		{name: "registered sentinel", err: fmt.Errorf("issue: %w", errQuota),
			wantCode: connect.CodeResourceExhausted, wantMessage: "issue: quota exceeded"},
		{name: "unknown is internal and generic", err: errors.New("open /var/lib/schakel/secret.key: permission denied"),
			wantCode: connect.CodeInternal, wantMessage: "internal error", notInMsg: "secret.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := startServer(t, Config{}, &fakeBackend{err: tt.err})
			client := schakelv1connect.NewCredentialServiceClient(h2cClient(t), base, connect.WithGRPC())
			_, err := client.IssueCredential(t.Context(), connect.NewRequest(&schakelv1.IssueCredentialRequest{Organization: "did:schakel:x"}))
			ce, ok := errors.AsType[*connect.Error](err)
			if !ok {
				t.Fatalf("IssueCredential: error %v is not a *connect.Error", err)
			}
			if ce.Code() != tt.wantCode {
				t.Errorf("IssueCredential: code %v, want %v", ce.Code(), tt.wantCode)
			}
			if !strings.Contains(ce.Message(), tt.wantMessage) {
				t.Errorf("IssueCredential: message %q, want it to contain %q", ce.Message(), tt.wantMessage)
			}
			if tt.notInMsg != "" && strings.Contains(ce.Message(), tt.notInMsg) {
				t.Errorf("IssueCredential: message %q leaks %q", ce.Message(), tt.notInMsg)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	b := &fakeBackend{}
	_, base := startServer(t, Config{}, b)
	client := schakelv1connect.NewNodeServiceClient(h2cClient(t), base, connect.WithGRPC())
	if _, err := client.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{})); err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	b.err = fmt.Errorf("nothing here: %w", ErrNotFound)
	if _, err := client.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetNodeInfo: %v, want not_found", err)
	}

	status, header, body := get(t, base+"/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", status)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the text exposition format", ct)
	}
	for _, want := range []string{
		`schakel_api_requests_total{code="ok",procedure="/schakel.v1.NodeService/GetNodeInfo"} 1`,
		`schakel_api_requests_total{code="not_found",procedure="/schakel.v1.NodeService/GetNodeInfo"} 1`,
		`schakel_api_request_duration_seconds_count{code="ok",procedure="/schakel.v1.NodeService/GetNodeInfo"} 1`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics: missing %q", want)
		}
	}
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name     string
		ready    error
		status   int
		wantBody string
	}{
		{name: "ready", status: http.StatusOK, wantBody: "ok"},
		{name: "not ready", ready: errors.New("storage not open"), status: http.StatusServiceUnavailable, wantBody: "storage not open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, base := startServer(t, Config{}, &fakeBackend{ready: tt.ready})
			status, _, body := get(t, base+"/readyz", "")
			if status != tt.status || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET /readyz = %d %q, want %d containing %q", status, body, tt.status, tt.wantBody)
			}
			if status, _, _ := get(t, base+"/healthz", ""); status != http.StatusOK {
				t.Errorf("GET /healthz = %d, want 200 whatever readiness says", status)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	const set = `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}`
	_, base := startServer(t, Config{}, &fakeBackend{jwks: map[string][]byte{"did:schakel:abc": []byte(set)}})
	tests := []struct {
		name     string
		path     string
		status   int
		wantCT   string
		wantBody string
	}{
		{name: "hosted", path: "/orgs/did:schakel:abc/jwks.json", status: http.StatusOK, wantCT: "application/jwk-set+json", wantBody: set},
		{name: "not hosted", path: "/orgs/did:schakel:zzz/jwks.json", status: http.StatusNotFound, wantCT: "application/json", wantBody: `"code":"not_found"`},
		{name: "not a DID", path: "/orgs/abc/jwks.json", status: http.StatusBadRequest, wantCT: "application/json", wantBody: `"code":"invalid_argument"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, header, body := get(t, base+tt.path, "")
			if status != tt.status {
				t.Fatalf("GET %s: status %d, want %d (%s)", tt.path, status, tt.status, body)
			}
			if ct := header.Get("Content-Type"); ct != tt.wantCT {
				t.Errorf("GET %s: Content-Type %q, want %q", tt.path, ct, tt.wantCT)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s: body %q, want it to contain %q", tt.path, body, tt.wantBody)
			}
		})
	}
}

func TestCloseDrainsInFlight(t *testing.T) {
	b := &fakeBackend{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	s, err := New(Config{Addr: "127.0.0.1:0"}, b, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	base := "http://" + s.Addr().String()
	client := schakelv1connect.NewNodeServiceClient(h2cClient(t), base, connect.WithGRPC())

	callDone := make(chan error, 1)
	go func() {
		_, err := client.GetNodeInfo(t.Context(), connect.NewRequest(&schakelv1.GetNodeInfoRequest{}))
		callDone <- err
	}()
	<-b.entered

	closeDone := make(chan error, 1)
	go func() { closeDone <- s.Close(t.Context()) }()
	select {
	case err := <-closeDone:
		t.Fatalf("Close returned (%v) while a request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(b.block)
	if err := <-callDone; err != nil {
		t.Errorf("GetNodeInfo in flight during Close: %v", err)
	}
	if err := <-closeDone; err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Errorf("GET /healthz after Close succeeded, want connection refused")
	}
}

func TestCloseBeforeStart(t *testing.T) {
	s, err := New(Config{}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr after Close without Start = %v, want nil", s.Addr())
	}
}

func TestIntrospectEndpoint(t *testing.T) {
	const token = "api-token"
	_, base := startServer(t, Config{Token: token}, &fakeBackend{})
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, ct, body, auth string
		status               int
		want                 string
	}{
		{name: "active", ct: form, body: "token=good&token_type_hint=access_token", auth: token, status: 200, want: `{"active":true,"jti":"t1"}`},
		{name: "inactive", ct: form, body: "token=other", auth: token, status: 200, want: `{"active":false}`},
		{name: "no API token", ct: form, body: "token=good", status: 401},
		{name: "JSON body", ct: "application/json", body: `{"token":"good"}`, auth: token, status: 400, want: `"error":"invalid_request"`},
		{name: "no token parameter", ct: form, body: "hint=x", auth: token, status: 400, want: `"error":"invalid_request"`},
		{name: "two tokens", ct: form, body: "token=good&token=other", auth: token, status: 400, want: `"error":"invalid_request"`},
		{name: "oversized", ct: form, body: "token=" + strings.Repeat("a", 9<<10), auth: token, status: 400, want: `"error":"invalid_request"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", base+"/oauth2/introspect", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", tt.ct)
			if tt.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, b)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Errorf("body %s, want it to contain %s", b, tt.want)
			}
		})
	}
	// GET is not introspection.
	status, _, _ := get(t, base+"/oauth2/introspect", token)
	if status != http.StatusMethodNotAllowed {
		t.Errorf("GET /oauth2/introspect: %d, want 405", status)
	}
}
