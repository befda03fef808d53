package network

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// maxNewcomers bounds the connections from peers not yet admitted, so that a crowd of strangers
// cannot take the node's connection slots; an admitted peer is never counted.
const maxNewcomers = 64

// gater is the libp2p connection gater. A connection is let in when its peer is admitted or,
// within bounds, when it is a newcomer that may still present its credential through Hello; a peer
// that failed to do so is refused for a while. What a connected newcomer may do is limited at the
// stream level (only the bootstrap protocol) and by the bootstrap timeout.
type gater struct {
	now      func() time.Time
	admitted func(peer.ID) bool // set at Start

	mu         sync.Mutex
	denied     map[peer.ID]time.Time // until when
	newcomers  map[peer.ID]int       // open connections of peers not admitted
	refusedCnt uint64
}

func newGater(now func() time.Time) *gater {
	return &gater{now: now, denied: map[peer.ID]time.Time{}, newcomers: map[peer.ID]int{}}
}

// deny refuses p until the given time.
func (g *gater) deny(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.denied[p] = until
	if len(g.denied) > 4096 {
		now := g.now()
		for q, t := range g.denied {
			if now.After(t) {
				delete(g.denied, q)
			}
		}
	}
}

func (g *gater) isDenied(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.denied[p]
	if ok && g.now().After(t) {
		delete(g.denied, p)
		return false
	}
	return ok
}

func (g *gater) refused() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refusedCnt
}

func (g *gater) allow(p peer.ID) bool {
	if g.isDenied(p) {
		g.mu.Lock()
		g.refusedCnt++
		g.mu.Unlock()
		return false
	}
	return true
}

// InterceptPeerDial implements connmgr.ConnectionGater.
func (g *gater) InterceptPeerDial(p peer.ID) bool { return !g.isDenied(p) }

// InterceptAddrDial implements connmgr.ConnectionGater.
func (g *gater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return !g.isDenied(p) }

// InterceptAccept implements connmgr.ConnectionGater.
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured implements connmgr.ConnectionGater: the remote peer id is known here.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if !g.allow(p) {
		return false
	}
	if g.admitted != nil && g.admitted(p) {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.newcomers[p]; !ok && len(g.newcomers) >= maxNewcomers {
		g.refusedCnt++
		return false
	}
	g.newcomers[p]++
	return true
}

// InterceptUpgraded implements connmgr.ConnectionGater.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// closed forgets a closed connection of a newcomer.
func (g *gater) closed(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.newcomers[p]; ok {
		if c <= 1 {
			delete(g.newcomers, p)
		} else {
			g.newcomers[p] = c - 1
		}
	}
}

// promoted stops counting p as a newcomer once it is admitted.
func (g *gater) promoted(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.newcomers, p)
}
