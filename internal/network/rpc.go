package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// Bounds of the peer RPC.
const (
	maxRPCMessage  = 4 << 20
	maxHelloDocs   = 64
	maxFetchIDs    = 256
	rpcCallTimeout = 30 * time.Second
)

type callerKey struct{}

// caller returns the peer id of the caller of a peer RPC.
func caller(ctx context.Context) peer.ID {
	p, _ := ctx.Value(callerKey{}).(peer.ID)
	return p
}

// rpcServer serves PeerService over two gostream listeners: Hello alone on the bootstrap
// protocol, everything on the RPC protocol to admitted peers only.
type rpcServer struct {
	boot, full *http.Server
	done       chan struct{}
}

func protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

func (n *Network) startRPC() (*rpcServer, error) {
	bootL, err := gostream.Listen(n.host, BootstrapProtocol)
	if err != nil {
		return nil, err
	}
	fullL, err := gostream.Listen(n.host, RPCProtocol)
	if err != nil {
		bootL.Close()
		return nil, err
	}
	h := &peerHandler{n: n}
	// Small answers go uncompressed: they are mostly signed JWTs (base64 of signatures and
	// hashes), which gzip hardly shrinks, and compressing a token answer cost more CPU (~60 µs)
	// than deciding it without the cryptography.
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(maxRPCMessage), connect.WithCompressMinBytes(compressMinBytes)}
	if n.cfg.Tap != nil {
		opts = append(opts, connect.WithInterceptors(tapInterceptor(n.cfg.Tap)))
	}
	fullPath, fullHandler := schakelv1connect.NewPeerServiceHandler(h, opts...)
	fullMux := http.NewServeMux()
	fullMux.Handle(fullPath, fullHandler)
	bootMux := http.NewServeMux()
	bootMux.Handle(schakelv1connect.PeerServiceHelloProcedure, fullHandler)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           n.bounded(h),
			Protocols:         protocols(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				p, _ := peer.Decode(c.RemoteAddr().String())
				return context.WithValue(ctx, callerKey{}, p)
			},
			ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		}
	}
	s := &rpcServer{boot: newServer(bootMux), full: newServer(fullMux), done: make(chan struct{}, 2)}
	go func() { _ = s.boot.Serve(bootL); s.done <- struct{}{} }()
	go func() { _ = s.full.Serve(newAdmittedListener(fullL, n)); s.done <- struct{}{} }()
	return s, nil
}

func (s *rpcServer) close() error {
	err := errors.Join(s.boot.Close(), s.full.Close())
	<-s.done
	<-s.done
	return err
}

// admittedListener hands the RPC server only streams of admitted peers. A stream of a peer still
// in its bootstrap exchange waits for its outcome (the two sides of a Hello learn of each other's
// admission a moment apart); any other stream is closed and its peer disconnected before a byte
// is read.
type admittedListener struct {
	net.Listener
	n     *Network
	once  sync.Once
	ready chan net.Conn
	errc  chan error
}

func newAdmittedListener(l net.Listener, n *Network) *admittedListener {
	return &admittedListener{Listener: l, n: n, ready: make(chan net.Conn), errc: make(chan error, 1)}
}

func (l *admittedListener) Accept() (net.Conn, error) {
	l.once.Do(func() { go l.loop() })
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		return nil, err
	}
}

func (l *admittedListener) loop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.errc <- err
			return
		}
		go l.vet(c)
	}
}

func (l *admittedListener) vet(c net.Conn) {
	n := l.n
	p, err := peer.Decode(c.RemoteAddr().String())
	// A peer in its bootstrap exchange is refused, if at all, by the exchange: one that ends
	// without fault of the peer (this node too busy to finish it in time) holds nothing against it.
	introducing := err == nil && n.introducing(p)
	if err == nil && n.awaitAdmission(p) {
		select {
		case l.ready <- c:
			return
		case <-n.ctx.Done():
		}
	}
	c.Close()
	n.m.streamsRefused.Inc()
	if err == nil && !introducing && n.ctx.Err() == nil {
		n.refuse(p, "RPC stream without admission")
	}
}

// compressMinBytes is the smallest RPC message sent gzipped, either way: catch-up batches of
// documents are, token requests and answers are not.
const compressMinBytes = 16 << 10

// client returns a PeerService client that reaches p over protocol proto.
func (n *Network) client(p peer.ID, proto protocol.ID) peerRPC {
	t := &http.Transport{
		Protocols: protocols(),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return gostream.Dial(ctx, n.host, p, proto)
		},
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
	}
	opts := []connect.ClientOption{connect.WithGRPC(), connect.WithReadMaxBytes(maxRPCMessage), connect.WithCompressMinBytes(compressMinBytes)}
	if n.cfg.Tap != nil {
		opts = append(opts, connect.WithInterceptors(tapInterceptor(n.cfg.Tap)))
	}
	c := schakelv1connect.NewPeerServiceClient(&http.Client{Transport: t}, "http://"+p.String(), opts...)
	return peerRPC{c: c, t: t}
}

// peerRPC is a PeerService client and the transport that holds its connections.
type peerRPC struct {
	c schakelv1connect.PeerServiceClient
	t *http.Transport
}

// peerClient returns the cached RPC client of an admitted peer.
func (n *Network) peerClient(p peer.ID) schakelv1connect.PeerServiceClient {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.clients == nil {
		n.clients = map[peer.ID]peerRPC{}
	}
	c, ok := n.clients[p]
	if !ok {
		c = n.client(p, RPCProtocol)
		n.clients[p] = c
	}
	return c.c
}

// dropClient forgets p's RPC client and closes its connections; the caller holds n.mu. Its
// HTTP/2 connections ran over libp2p streams of connections that are gone: after a partition the
// first call on them waited for the keepalive timeout and then failed.
func (n *Network) dropClient(p peer.ID) {
	if c, ok := n.clients[p]; ok {
		delete(n.clients, p)
		go c.t.CloseIdleConnections()
	}
}

// hello calls Hello on p over the bootstrap protocol and admits what it presents.
func (n *Network) hello(ctx context.Context, p peer.ID) error {
	docs, err := n.backend.Introduction(ctx)
	if err != nil {
		return err
	}
	c := n.client(p, BootstrapProtocol)
	defer c.t.CloseIdleConnections()
	resp, err := c.c.Hello(ctx, connect.NewRequest(&schakelv1.HelloRequest{Documents: docs, MembershipAddr: n.MembershipAddr()}))
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if len(resp.Msg.GetDocuments()) > maxHelloDocs {
		return fmt.Errorf("hello: %d documents, at most %d", len(resp.Msg.GetDocuments()), maxHelloDocs)
	}
	if _, err := n.backend.Introduce(fromPeer(ctx), p, resp.Msg.GetDocuments()); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	n.mu.Lock()
	n.state(p).membershipAddr = resp.Msg.GetMembershipAddr()
	n.mu.Unlock()
	return nil
}

// peerHandler implements PeerService.
type peerHandler struct{ n *Network }

func (h *peerHandler) Hello(ctx context.Context, req *connect.Request[schakelv1.HelloRequest]) (*connect.Response[schakelv1.HelloResponse], error) {
	n, p := h.n, caller(ctx)
	if len(req.Msg.GetDocuments()) > maxHelloDocs {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d documents, at most %d", len(req.Msg.GetDocuments()), maxHelloDocs))
	}
	// A newcomer's documents are news to the network (made while it had no peers): what is stored
	// of them is gossiped on, unlike documents fetched from established peers.
	if _, err := n.backend.Introduce(ctx, p, req.Msg.GetDocuments()); err != nil {
		go n.refuse(p, err.Error())
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	}
	n.mu.Lock()
	n.state(p).membershipAddr = req.Msg.GetMembershipAddr()
	n.mu.Unlock()
	docs, err := n.backend.Introduction(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.admitted(p)
	}()
	return connect.NewResponse(&schakelv1.HelloResponse{Documents: docs, MembershipAddr: n.MembershipAddr()}), nil
}

func (h *peerHandler) Reconcile(ctx context.Context, req *connect.Request[schakelv1.ReconcileRequest]) (*connect.Response[schakelv1.ReconcileResponse], error) {
	out, err := h.n.respondReconcile(ctx, req.Msg.GetMessage())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	h.n.m.syncBytes.WithLabelValues("in").Add(float64(len(req.Msg.GetMessage())))
	h.n.m.syncBytes.WithLabelValues("out").Add(float64(len(out)))
	return connect.NewResponse(&schakelv1.ReconcileResponse{Message: out}), nil
}

func (h *peerHandler) FetchDocuments(ctx context.Context, req *connect.Request[schakelv1.FetchDocumentsRequest]) (*connect.Response[schakelv1.FetchDocumentsResponse], error) {
	raw := req.Msg.GetIds()
	if len(raw) > maxFetchIDs {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d ids, at most %d", len(raw), maxFetchIDs))
	}
	ids := make([][32]byte, len(raw))
	for i, b := range raw {
		if len(b) != 32 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("id %d is %d bytes, not 32", i, len(b)))
		}
		ids[i] = [32]byte(b)
	}
	docs, err := h.n.cat.Get(ctx, ids)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	size := 0
	for i, d := range docs {
		size += len(d)
		if size > maxRPCMessage-64<<10 {
			docs = docs[:i]
			break
		}
	}
	h.n.m.syncBytes.WithLabelValues("out").Add(float64(size))
	return connect.NewResponse(&schakelv1.FetchDocumentsResponse{Documents: docs}), nil
}

func (h *peerHandler) Deliver(ctx context.Context, req *connect.Request[schakelv1.DeliverRequest]) (*connect.Response[schakelv1.DeliverResponse], error) {
	dup, err := h.n.backend.Deliver(ctx, caller(ctx), req.Msg)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	h.n.m.delivered.Inc()
	return connect.NewResponse(&schakelv1.DeliverResponse{Duplicate: dup}), nil
}

func (h *peerHandler) GetLogProof(ctx context.Context, req *connect.Request[schakelv1.GetLogProofRequest]) (*connect.Response[schakelv1.GetLogProofResponse], error) {
	ckpt, proof, err := h.n.backend.LogProof(ctx, req.Msg.GetOrigin(), req.Msg.GetOldSize(), req.Msg.GetNewSize())
	if err != nil {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	return connect.NewResponse(&schakelv1.GetLogProofResponse{Checkpoint: ckpt, Proof: proof}), nil
}

func (h *peerHandler) RequestToken(ctx context.Context, req *connect.Request[schakelv1.PeerServiceRequestTokenRequest]) (*connect.Response[schakelv1.PeerServiceRequestTokenResponse], error) {
	if len(req.Msg.GetAssertion()) > maxAssertionSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("assertion of %d bytes exceeds %d", len(req.Msg.GetAssertion()), maxAssertionSize))
	}
	resp, err := h.n.backend.RequestToken(ctx, caller(ctx), req.Msg)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	h.n.m.tokenRequests.Inc()
	return connect.NewResponse(resp), nil
}

// maxAssertionSize bounds a token request's encrypted assertion.
const maxAssertionSize = 16 << 10

// RequestToken sends a token request to the node hosting the custodian organisation.
func (n *Network) RequestToken(ctx context.Context, custodian string, req *schakelv1.PeerServiceRequestTokenRequest) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	p, ok := n.PeerOf(ctx, custodian)
	if !ok {
		return nil, fmt.Errorf("%w: no connected node hosts %s", ErrUnreachable, custodian)
	}
	ctx, cancel := context.WithTimeout(ctx, rpcCallTimeout)
	defer cancel()
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		resp, err := n.peerClient(p).RequestToken(ctx, connect.NewRequest(req))
		if err == nil {
			return resp.Msg, nil
		}
		// A burst beyond one HTTP/2 connection's streams opens more connections, each a libp2p
		// stream, and either side's resource manager may refuse one. Nothing was sent on it —
		// the assertion's jti is not spent — so the call is tried again once streams are
		// released, until the call's deadline.
		switch {
		case streamLimited(err):
			n.m.streamsLimited.Inc()
		case staleConnection(err):
			// The peer restarted and answered on the old connection with a QUIC stateless
			// reset: it holds no state for that connection, so it never saw the request. The
			// client over the dead connection goes; the next try dials afresh.
			n.dropClient(p)
		default:
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		case <-time.After(wait):
		}
	}
}

// streamLimited reports whether err is a libp2p stream refused by a resource manager, here
// ("cannot reserve outbound stream") or at the peer (reset with StreamResourceLimitExceeded),
// before anything was sent on it.
func streamLimited(err error) bool {
	var se *network.StreamError
	if errors.As(err, &se) && se.ErrorCode == network.StreamResourceLimitExceeded {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "cannot reserve outbound stream") ||
		strings.Contains(msg, fmt.Sprintf("error code: %d", network.StreamResourceLimitExceeded))
}

// staleConnection reports whether err is a QUIC stateless reset: the peer has no state for the
// connection (it restarted), so nothing sent on it was received.
func staleConnection(err error) bool {
	return strings.Contains(err.Error(), "received a stateless reset")
}

// Deliver sends a private message to the node hosting its recipient, which must be connected and
// admitted; the caller (the outbox) retries later otherwise.
func (n *Network) Deliver(ctx context.Context, m *schakelv1.DeliverRequest) (duplicate bool, err error) {
	p, ok := n.PeerOf(ctx, m.GetTo())
	if !ok {
		return false, fmt.Errorf("network: no connected node hosts %s", m.GetTo())
	}
	ctx, cancel := context.WithTimeout(ctx, rpcCallTimeout)
	defer cancel()
	resp, err := n.peerClient(p).Deliver(ctx, connect.NewRequest(m))
	if err != nil {
		return false, err
	}
	return resp.Msg.GetDuplicate(), nil
}

// LogProof asks the node hosting org for its log's checkpoint at newSize and a consistency proof
// to it from oldSize.
func (n *Network) LogProof(ctx context.Context, org, origin string, oldSize, newSize int64) ([]byte, [][]byte, error) {
	p, ok := n.PeerOf(ctx, org)
	if !ok {
		return nil, nil, fmt.Errorf("network: no connected node hosts %s", org)
	}
	ctx, cancel := context.WithTimeout(ctx, rpcCallTimeout)
	defer cancel()
	resp, err := n.peerClient(p).GetLogProof(ctx, connect.NewRequest(&schakelv1.GetLogProofRequest{Origin: origin, OldSize: oldSize, NewSize: newSize}))
	if err != nil {
		return nil, nil, err
	}
	return resp.Msg.GetCheckpoint(), resp.Msg.GetProof(), nil
}
