package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/multiformats/go-multiaddr"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Backend is what the node does for the network: verify and store documents, decide admission,
// and act on private messages and witness requests.
type Backend interface {
	// Accept verifies and stores one public document (invariant 1). It reports whether the
	// document was new. An error wrapping ErrPending means the document depends on one not yet
	// held (a credential before its issuer's key event); ErrStale that it is valid but superseded.
	Accept(ctx context.Context, doc []byte) (stored bool, err error)
	// AcceptMany is Accept for a batch fetched in a catch-up, stored in as few commits as the
	// backend can; the results are per document, in order.
	AcceptMany(ctx context.Context, docs [][]byte) (stored []bool, errs []error)
	// Introduce verifies the documents a newcomer presents at bootstrap and stores them only
	// when they admit peer p: an organisation credential from a trusted register for an
	// organisation whose DID document binds p. It returns the organisation.
	Introduce(ctx context.Context, p peer.ID, docs [][]byte) (org string, err error)
	// Admitted reports the organisation peer p is admitted for.
	Admitted(ctx context.Context, p peer.ID) (org string, ok bool)
	// Introduction returns the documents this node presents in Hello, in dependency order.
	Introduction(ctx context.Context) ([][]byte, error)
	// RequestToken decides a token request that peer p carried to this node (refusals are
	// answers; an error is a failure of this node).
	RequestToken(ctx context.Context, p peer.ID, req *schakelv1.PeerServiceRequestTokenRequest) (*schakelv1.PeerServiceRequestTokenResponse, error)
	// Deliver processes a private message that peer p delivered.
	Deliver(ctx context.Context, p peer.ID, m *schakelv1.DeliverRequest) (duplicate bool, err error)
	// LogProof returns the checkpoint of a hosted log at newSize and a consistency proof to it
	// from oldSize.
	LogProof(ctx context.Context, origin string, oldSize, newSize int64) (checkpoint []byte, proof [][]byte, err error)
	// AcceptNote handles a gossiped checkpoint or cosignature from peer p; nil lets it travel on.
	AcceptNote(ctx context.Context, p peer.ID, note []byte) error
}

// Errors a Backend returns to steer gossip.
var (
	// ErrPending marks a document that depends on one not yet held; it is held and retried.
	ErrPending = errors.New("depends on a document not yet held")
	// ErrStale marks a valid document that is superseded; it is dropped without penalty.
	ErrStale = errors.New("superseded")
	// ErrNotAdmitted is returned to and about peers that are not admitted.
	ErrNotAdmitted = errors.New("peer not admitted")
	// ErrUnreachable: no connected, admitted node hosts the organisation, or the call failed.
	ErrUnreachable = errors.New("custodian unreachable")
)

// Protocol ids of the peer RPC: the bootstrap protocol serves only Hello, to anyone connected;
// the RPC protocol serves PeerService to admitted peers.
const (
	BootstrapProtocol = "/schakel/bootstrap/1.0.0"
	RPCProtocol       = "/schakel/rpc/1.0.0"
	TopicDocuments    = "schakel/documents/1"
	TopicCheckpoints  = "schakel/checkpoints/1"
)

// Network is one node's presence on the peer-to-peer network.
type Network struct {
	cfg     Config
	backend Backend
	cat     *Catalog
	log     *slog.Logger
	m       *metrics

	host   host.Host
	gater  *gater
	ps     *pubsub.PubSub
	topics map[string]*pubsub.Topic
	rpc    *rpcServer
	ml     *memberlist.Memberlist
	held   *heldQueue
	mesh   meshTracer
	scores gossipScores

	mu             sync.Mutex
	peers          map[peer.ID]*peerState
	refusedMembers map[peer.ID]string // memberlist members refused as not admitted, by address
	syncTotals     SyncResult
	clients        map[peer.ID]peerRPC

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the network: the libp2p host is created and listening when New returns, so that
// the node can bind its peer id and addresses into its DID documents; nothing is dialed until
// Start.
func New(cfg Config, cat *Catalog, backend Backend) (*Network, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cat == nil || backend == nil {
		return nil, errors.New("network: nil catalog or backend")
	}
	n := &Network{
		cfg: cfg, backend: backend, cat: cat, log: cfg.Logger,
		peers:  map[peer.ID]*peerState{},
		topics: map[string]*pubsub.Topic{},
		held:   newHeldQueue(cfg.Now),
	}
	n.m = newMetrics(n)
	if cfg.Registerer != nil {
		if err := n.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	n.gater = newGater(cfg.Now)
	opts := []libp2p.Option{
		libp2p.Identity(cfg.Key),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.ConnectionGater(n.gater),
		// Noise first, so that it is what two schakel nodes negotiate; TLS 1.3 for other peers.
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.DisableRelay(),
		libp2p.Ping(true),
	}
	if len(cfg.ListenAddrs) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	if len(cfg.AnnounceAddrs) > 0 {
		var announce []multiaddr.Multiaddr
		for _, a := range cfg.AnnounceAddrs {
			announce = append(announce, multiaddr.StringCast(a))
		}
		opts = append(opts, libp2p.AddrsFactory(func([]multiaddr.Multiaddr) []multiaddr.Multiaddr { return announce }))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("network: libp2p host: %w", err)
	}
	n.host = h
	return n, nil
}

// ID returns the node's peer id.
func (n *Network) ID() peer.ID { return n.host.ID() }

// Host returns the libp2p host, for tests and diagnostics.
func (n *Network) Host() host.Host { return n.host }

// Addrs returns the node's libp2p addresses, each ending in /p2p/<peer id>.
func (n *Network) Addrs() []string {
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.host.ID().String())
	}
	return out
}

// Start joins the network: gossip, the peer RPC, membership, and dials the bootstrap peers. It
// runs until ctx ends or Close.
func (n *Network) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.gater.admitted = func(p peer.ID) bool { _, ok := n.backend.Admitted(n.ctx, p); return ok }
	if err := n.startGossip(); err != nil {
		n.cancel()
		return err
	}
	rpc, err := n.startRPC()
	if err != nil {
		n.cancel()
		return err
	}
	n.rpc = rpc
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.connected(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.disconnected(c) },
	})
	if n.cfg.MembershipAddr != "" {
		if err := n.startMembership(); err != nil {
			n.cancel()
			return err
		}
		n.wg.Add(1)
		go n.membershipLoop()
	}
	n.wg.Add(3)
	go n.bootstrapLoop()
	go n.syncLoop()
	go n.publishFresh()
	go func() {
		select {
		case <-ctx.Done():
			n.cancel()
		case <-n.ctx.Done():
		}
	}()
	return nil
}

// Close leaves the network and stops every goroutine the network started.
func (n *Network) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	var errs []error
	if n.ml != nil {
		_ = n.ml.Leave(time.Second)
		errs = append(errs, n.ml.Shutdown())
	}
	if n.rpc != nil {
		errs = append(errs, n.rpc.close())
	}
	n.wg.Wait()
	errs = append(errs, n.host.Close())
	return errors.Join(errs...)
}

// bootstrapLoop keeps the node connected to its bootstrap peers: it dials every one that is not
// connected, backing off from 1 s to 10 s while some stay unreachable, and checks again every
// 10 s. A peer lost to a partition, a restart or a failed introduction is so dialled again
// within seconds of becoming reachable.
func (n *Network) bootstrapLoop() {
	defer n.wg.Done()
	if len(n.cfg.Bootstrap) == 0 {
		return
	}
	wait := time.Duration(0)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		missing := false
		for _, a := range n.cfg.Bootstrap {
			info, err := peer.AddrInfoFromString(a)
			if err != nil || info.ID == n.host.ID() || n.host.Network().Connectedness(info.ID) == network.Connected {
				continue
			}
			missing = true
			if err := n.Connect(n.ctx, a); err != nil {
				n.log.Debug("bootstrap dial failed", slog.String("addr", a), slog.Any("error", err))
			}
		}
		if missing {
			wait = min(max(2*wait, time.Second), bootstrapRecheck)
		} else {
			wait = bootstrapRecheck
		}
	}
}

// bootstrapRecheck is how often the node checks that it is connected to its bootstrap peers.
const bootstrapRecheck = 10 * time.Second

// Connect dials a peer by multiaddr (ending in /p2p/<peer id>).
func (n *Network) Connect(ctx context.Context, addr string) error {
	info, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return fmt.Errorf("network: %q: %w", addr, err)
	}
	if info.ID == n.host.ID() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return n.host.Connect(ctx, *info)
}

// jitter returns d scaled by a random factor in [0.5, 1.5).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// hostPort splits a host:port; the port 0 when absent.
func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := net.LookupPort("tcp", p)
	return h, port, err
}
