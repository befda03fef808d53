package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultAddr              = "127.0.0.1:7631"
	DefaultMaxRequestBytes   = 1 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

// Config configures the internal API server. The zero value of each field means its default.
type Config struct {
	// Addr is the TCP address to listen on (default 127.0.0.1:7631). Binding anything but a loopback
	// address requires Token or ClientCA: the API can create organisations and issue credentials, so
	// New refuses to expose it without access control. Port 0 picks a free port; see Server.Addr.
	Addr string

	// Token is the bearer API token. When set, every request except /healthz and /readyz MUST carry
	// "Authorization: Bearer <Token>". It is a secret: it comes from a file or the environment, never
	// from a flag. Empty means no token check, which New allows only on loopback or with ClientCA.
	Token string

	// TLSCert and TLSKey are PEM files of the server's certificate chain and key. When set, the API
	// serves HTTPS (HTTP/1.1 and HTTP/2 through ALPN) instead of cleartext HTTP/1.1 and h2c. Both or
	// neither.
	TLSCert string
	TLSKey  string

	// ClientCA is a PEM file of CA certificates. When set, every client MUST present a certificate
	// that chains to one of them (mutual TLS), /healthz and /readyz included, since the TLS handshake
	// precedes any path. Requires TLSCert and TLSKey.
	ClientCA string

	// MaxRequestBytes caps the size of one request message (RPC) or body (plain HTTP); larger ones
	// are refused with resource_exhausted / 413 before they are decoded. Default 1 MiB: the largest
	// legitimate request, a batch of signed documents, is far smaller, and the cap bounds the memory an
	// unauthenticated client can make the node hold.
	MaxRequestBytes int64

	// ReadHeaderTimeout bounds the time to read request headers (default 10s), which limits
	// slow-loris clients. There is deliberately no whole-request read or write timeout: it would cut
	// long server-reflection streams; per-RPC deadlines come from the client (grpc-timeout).
	ReadHeaderTimeout time.Duration

	// IdleTimeout is how long an idle keep-alive connection is kept open (default 2m).
	IdleTimeout time.Duration

	// Registry receives the API's metrics and is what /metrics serves. nil means a new registry with
	// the Go and process collectors; node passes one when other subsystems export metrics too.
	Registry *prometheus.Registry
}

// DefaultConfig returns the configuration New uses for zero fields.
func DefaultConfig() Config {
	return Config{
		Addr:              DefaultAddr,
		MaxRequestBytes:   DefaultMaxRequestBytes,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		IdleTimeout:       DefaultIdleTimeout,
	}
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("api: server closed")

// Server is the internal API server. Create it with New, then Start it; Close stops it.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	tls     *tls.Config
	srv     *http.Server

	mu       sync.Mutex
	ln       net.Listener
	started  bool
	closing  chan struct{} // non-nil once Close was called; closed when Close has finished
	closeErr error         // set before closing is closed
	served   chan struct{} // closed when the serve goroutine returns
}

// New validates cfg and builds a Server; it neither listens nor starts goroutines. It fails when the
// configuration would expose the API without access control, when TLS material cannot be loaded, or
// when the metrics cannot be registered. A nil logger discards logs.
func New(cfg Config, backend Backend, logger *slog.Logger) (*Server, error) {
	if backend == nil {
		return nil, errors.New("api: nil Backend")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	def := DefaultConfig()
	if cfg.Addr == "" {
		cfg.Addr = def.Addr
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = def.MaxRequestBytes
	}
	if cfg.ReadHeaderTimeout == 0 {
		cfg.ReadHeaderTimeout = def.ReadHeaderTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = def.IdleTimeout
	}
	if cfg.MaxRequestBytes < 0 || cfg.MaxRequestBytes > math.MaxInt32 {
		return nil, fmt.Errorf("api: MaxRequestBytes %d out of range (1 to %d)", cfg.MaxRequestBytes, math.MaxInt32)
	}
	if cfg.ReadHeaderTimeout < 0 || cfg.IdleTimeout < 0 {
		return nil, errors.New("api: negative timeout")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("api: TLSCert and TLSKey must be set together")
	}
	if cfg.ClientCA != "" && cfg.TLSCert == "" {
		return nil, errors.New("api: ClientCA (mTLS) requires TLSCert and TLSKey")
	}
	loopback, err := isLoopback(cfg.Addr)
	if err != nil {
		return nil, err
	}
	if !loopback && cfg.Token == "" && cfg.ClientCA == "" {
		return nil, fmt.Errorf("refusing to serve the internal API on %s without an API token or mTLS", cfg.Addr)
	}
	tlsConfig, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}

	s := &Server{cfg: cfg, backend: backend, log: logger, tls: tlsConfig}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if tlsConfig != nil {
		protocols.SetHTTP2(true)
	} else {
		// h2c with prior knowledge, which gRPC clients such as grpcurl -plaintext speak.
		protocols.SetUnencryptedHTTP2(true)
	}
	s.srv = &http.Server{
		Handler:           s.routes(m),
		Protocols:         protocols,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// isLoopback reports whether addr binds only loopback interfaces. An empty host binds every
// interface, and a host name other than localhost may resolve anywhere, so both count as exposed.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("api: address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, nil
	}
	return ip.IsLoopback(), nil
}

// loadTLS reads the TLS material named in cfg; it returns nil when TLS is off.
func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("api: load TLS certificate: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCA != "" {
		pemBytes, err := os.ReadFile(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("api: read ClientCA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("api: ClientCA %s holds no PEM certificate", cfg.ClientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// routes builds the one handler set: the Connect services and reflection, which speak gRPC,
// gRPC-Web and Connect, and the plain HTTP endpoints.
func (s *Server) routes(m *metrics) http.Handler {
	opts := connect.WithHandlerOptions(
		connect.WithReadMaxBytes(int(s.cfg.MaxRequestBytes)),
		connect.WithInterceptors(m.interceptor()),
		connect.WithRecover(s.recoverRPC),
	)
	h := &rpc{b: s.backend, log: s.log}
	rpcRoutes := []func() (string, http.Handler){
		func() (string, http.Handler) { return schakelv1connect.NewNodeServiceHandler(h, opts) },
		func() (string, http.Handler) { return schakelv1connect.NewOrganizationServiceHandler(h, opts) },
		func() (string, http.Handler) { return schakelv1connect.NewDocumentServiceHandler(h, opts) },
		func() (string, http.Handler) { return schakelv1connect.NewCredentialServiceHandler(h, opts) },
		func() (string, http.Handler) { return schakelv1connect.NewLogServiceHandler(h, opts) },
		func() (string, http.Handler) { return schakelv1connect.NewAccessServiceHandler(h, opts) },
	}
	reflector := grpcreflect.NewStaticReflector(Services()...)
	rpcRoutes = append(rpcRoutes,
		func() (string, http.Handler) { return grpcreflect.NewHandlerV1(reflector, opts) },
		func() (string, http.Handler) { return grpcreflect.NewHandlerV1Alpha(reflector, opts) },
	)

	mux := http.NewServeMux()
	errWriter := connect.NewErrorWriter()
	for _, route := range rpcRoutes {
		path, handler := route()
		mux.Handle(path, s.requireToken(handler, func(w http.ResponseWriter, r *http.Request, err error) {
			_ = errWriter.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
		}))
	}
	plain := func(h http.HandlerFunc) http.Handler {
		limited := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
			h(w, r)
		})
		return s.requireToken(limited, func(w http.ResponseWriter, r *http.Request, err error) {
			writeHTTPError(w, r, s.log, err)
		})
	}
	// Health and readiness stay open so that orchestrators can probe without the token.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", plain(s.metricsHandler()))
	mux.Handle("GET /orgs/{did}/jwks.json", plain(s.jwks))
	mux.Handle("POST /oauth2/introspect", plain(s.introspect))
	return mux
}

// Services lists the fully-qualified names of the services the API serves and reflects.
func Services() []string {
	return []string{
		schakelv1connect.NodeServiceName,
		schakelv1connect.OrganizationServiceName,
		schakelv1connect.DocumentServiceName,
		schakelv1connect.CredentialServiceName,
		schakelv1connect.LogServiceName,
		schakelv1connect.AccessServiceName,
	}
}

// errUnauthenticated is sent when the bearer token is missing or wrong. It does not say which, so
// that the answer does not help guess.
var errUnauthenticated = errors.New("missing or invalid API token")

// requireToken wraps next with the bearer-token check (RFC 6750 §2.1) when a Token is configured;
// deny writes the refusal in the protocol the caller speaks.
func (s *Server) requireToken(next http.Handler, deny func(http.ResponseWriter, *http.Request, error)) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearerToken(r.Header.Get("Authorization"))
		// Comparing fixed-length digests keeps the comparison constant-time in the token's length too.
		gotSum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(gotSum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="schakel"`)
			deny(w, r, errUnauthenticated)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken extracts the token of an "Authorization: Bearer <token>" header; the scheme is
// case-insensitive (RFC 9110 §11.1).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// recoverRPC turns a panicking handler into an internal error instead of a dropped connection.
func (s *Server) recoverRPC(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
	s.log.ErrorContext(ctx, "panic in RPC handler", slog.String("procedure", spec.Procedure), slog.Any("panic", p))
	return toConnectError(ctx, s.log, fmt.Errorf("panic: %v", p))
}

// Start listens on Config.Addr and serves in a goroutine; it returns once the listener is open, so
// Addr is valid and requests are accepted when it returns nil. ctx bounds only the listening; the
// server then runs until Close. Start may be called once.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing != nil {
		return ErrClosed
	}
	if s.started {
		return errors.New("api: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.started = true
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		var err error
		if s.tls != nil {
			err = s.srv.ServeTLS(ln, "", "")
		} else {
			err = s.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("internal API server stopped", slog.Any("err", err))
		}
	}()
	s.log.Info("internal API listening", slog.String("addr", ln.Addr().String()),
		slog.Bool("tls", s.tls != nil), slog.Bool("mtls", s.cfg.ClientCA != ""), slog.Bool("token", s.cfg.Token != ""))
	return nil
}

// Addr is the address the server listens on, with the real port when Config.Addr had port 0. It is
// nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting connections and waits until in-flight requests finish or ctx ends; then it
// closes the remaining connections and returns ctx's error. Close is idempotent: later calls return
// the first call's result.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing != nil {
		closing := s.closing
		s.mu.Unlock()
		<-closing
		return s.closeErr
	}
	s.closing = make(chan struct{})
	started := s.started
	s.mu.Unlock()

	defer close(s.closing)
	if !started {
		return nil
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		s.closeErr = fmt.Errorf("api: graceful shutdown: %w", err)
	}
	<-s.served
	return s.closeErr
}
