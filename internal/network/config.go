package network

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Network.
type Config struct {
	// Key is the node's libp2p identity; its peer id is what hosted organisations' DID documents
	// bind.
	Key p2pcrypto.PrivKey
	// ListenAddrs are libp2p multiaddrs to listen on (TCP and QUIC), e.g. /ip4/0.0.0.0/tcp/4001.
	ListenAddrs []string
	// AnnounceAddrs, when set, replace the listen addresses in what peers are told.
	AnnounceAddrs []string
	// Bootstrap are peers to dial at start, as multiaddrs ending in /p2p/<peer id>.
	Bootstrap []string
	// MembershipAddr is where memberlist listens (host:port, UDP and TCP); empty disables it.
	MembershipAddr string
	// SyncInterval is the mean time between reconciliation rounds with a random admitted peer;
	// each round waits between half and one and a half times it.
	SyncInterval time.Duration
	// BootstrapTimeout is how long a connected peer has to become admitted (through Hello) before
	// it is disconnected.
	BootstrapTimeout time.Duration
	// DenyFor is how long a peer refused at the door is not let in again.
	DenyFor time.Duration
	// MaxDocumentSize bounds one gossiped or fetched document.
	MaxDocumentSize int
	// Logger receives the network's logs (and memberlist's, adapted).
	Logger *slog.Logger
	// Registerer, when set, gets the network's metrics.
	Registerer prometheus.Registerer
	// OnAdmitted, when set, is called when a peer is admitted, with the organisation it hosts,
	// e.g. to deliver queued private messages at once.
	OnAdmitted func(p peer.ID, org string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Tap, when set, is shown every gossip message this node sends or receives (kind is the
	// topic, TapGossipControl for an RPC's control part) and every peer RPC message it sends or
	// receives as client or server (kind is the procedure, e.g. "/schakel.v1.PeerService/Deliver",
	// or the procedure and TapErrorSuffix for an error's text), protobuf-encoded. It lets a test
	// check what crosses the network (invariant 3: no BSN does). It runs on the network's
	// goroutines, so it MUST be quick and MUST copy what it keeps. Nil, the default, traces
	// nothing and costs nothing.
	Tap func(kind string, data []byte)
}

// Defaults.
const (
	DefaultSyncInterval     = 45 * time.Second
	DefaultBootstrapTimeout = 10 * time.Second
	DefaultDenyFor          = time.Minute
	DefaultMaxDocumentSize  = 64 << 10
)

func (c *Config) setDefaults() {
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.BootstrapTimeout == 0 {
		c.BootstrapTimeout = DefaultBootstrapTimeout
	}
	if c.DenyFor == 0 {
		c.DenyFor = DefaultDenyFor
	}
	if c.MaxDocumentSize == 0 {
		c.MaxDocumentSize = DefaultMaxDocumentSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if c.Key == nil {
		return errors.New("network: no libp2p key")
	}
	for _, list := range [][]string{c.ListenAddrs, c.AnnounceAddrs} {
		for _, a := range list {
			if _, err := multiaddr.NewMultiaddr(a); err != nil {
				return fmt.Errorf("network: address %q: %w", a, err)
			}
		}
	}
	if c.SyncInterval < time.Second {
		return fmt.Errorf("network: sync interval %s is below one second", c.SyncInterval)
	}
	return nil
}
