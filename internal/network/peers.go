package network

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// peerState is what the node knows of one peer it has been connected to.
type peerState struct {
	org            string
	admitted       bool
	connected      bool
	helloing       bool
	lastSeen       time.Time
	lastSync       time.Time
	lastSyncErr    string
	syncs, fetched int
	membershipAddr string
}

// PeerInfo describes a peer for operators (`schakel peers`).
type PeerInfo struct {
	ID          string
	Org         string
	Addrs       []string
	Admitted    bool
	Connected   bool
	InMesh      bool // shares this node's gossip mesh of documents
	LastSeen    time.Time
	LastSync    time.Time
	LastSyncErr string
	Syncs       int
	Fetched     int
}

// Peers lists the peers the node is or was connected to, admitted ones first.
func (n *Network) Peers() []PeerInfo {
	n.mu.Lock()
	ids := make([]peer.ID, 0, len(n.peers))
	out := make([]PeerInfo, 0, len(n.peers))
	for id, s := range n.peers {
		ids = append(ids, id)
		out = append(out, PeerInfo{
			ID: id.String(), Org: s.org, Admitted: s.admitted, Connected: s.connected,
			LastSeen: s.lastSeen, LastSync: s.lastSync, LastSyncErr: s.lastSyncErr,
			Syncs: s.syncs, Fetched: s.fetched,
		})
	}
	n.mu.Unlock()
	for i, id := range ids {
		out[i].InMesh = n.mesh.has(id)
		for _, a := range n.host.Peerstore().Addrs(id) {
			out[i].Addrs = append(out[i].Addrs, a.String())
		}
	}
	slices.SortFunc(out, func(a, b PeerInfo) int {
		if a.Admitted != b.Admitted {
			if a.Admitted {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// state returns p's state, creating it; callers hold n.mu.
func (n *Network) state(p peer.ID) *peerState {
	s, ok := n.peers[p]
	if !ok {
		s = &peerState{}
		n.peers[p] = s
	}
	return s
}

// AdmittedPeers returns the connected, admitted peers.
func (n *Network) AdmittedPeers() []peer.ID {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []peer.ID
	for id, s := range n.peers {
		if s.admitted && s.connected {
			out = append(out, id)
		}
	}
	return out
}

// PeerOf returns a connected, admitted peer hosting org.
//
// A node may host many organisations (an EHR vendor's): the peer is found by the organisation it
// was admitted for, or else by the DID documents that bind organisations to its peer id.
func (n *Network) PeerOf(ctx context.Context, org string) (peer.ID, bool) {
	n.mu.Lock()
	var candidates []peer.ID
	for id, s := range n.peers {
		if s.admitted && s.connected {
			if s.org == org {
				n.mu.Unlock()
				return id, true
			}
			candidates = append(candidates, id)
		}
	}
	n.mu.Unlock()
	for _, id := range candidates {
		if orgs, err := n.cat.PeerOrganizations(ctx, id); err == nil && slices.Contains(orgs, org) {
			return id, true
		}
	}
	return "", false
}

func (n *Network) connected(c network.Conn) {
	p := c.RemotePeer()
	n.mu.Lock()
	s := n.state(p)
	// A peer marked admitted but not connected was admitted on connections that are gone (a
	// Hello that finished as they closed): a new connection is introduced afresh.
	if s.admitted && !s.connected && !s.helloing {
		s.admitted = false
	}
	if !s.connected {
		n.dropClient(p)
	}
	s.connected, s.lastSeen = true, n.cfg.Now()
	start := !s.helloing && !s.admitted
	if start {
		s.helloing = true
	}
	n.mu.Unlock()
	if !start {
		return
	}
	dir := c.Stat().Direction
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.admit(p, dir)
	}()
}

func (n *Network) disconnected(c network.Conn) {
	p := c.RemotePeer()
	n.gater.closed(p)
	// Checked under the lock that connected takes: a new connection that arrived since this one
	// closed is either visible here (the peer stays connected and admitted) or its notification
	// comes after this and starts a fresh Hello. Checked before taking the lock, a connection
	// arriving in between was marked connected, skipped Hello (the peer was still admitted), and
	// then lost both marks here: the peer stayed connected but never admitted again.
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.host.Network().Connectedness(p) == network.Connected {
		return
	}
	s := n.state(p)
	s.connected, s.lastSeen = false, n.cfg.Now()
	s.admitted, s.helloing = false, false
	n.dropClient(p)
}

// admit runs the bootstrap exchange with a newly connected peer. The side that dialed calls
// Hello; the other side waits for it. A peer that is not admitted when the exchange ends, or by
// the bootstrap timeout, is disconnected and refused for a while.
func (n *Network) admit(p peer.ID, dir network.Direction) {
	defer func() {
		n.mu.Lock()
		n.state(p).helloing = false
		n.mu.Unlock()
	}()
	if dir == network.DirOutbound {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.BootstrapTimeout)
		err := n.hello(ctx, p)
		// A Hello that failed in transport did not happen (a peer still starting has no
		// handler yet): nothing was presented, so nothing is held against the peer, and it is
		// tried again while the bootstrap timeout lasts and the connection stands.
		for wait := 100 * time.Millisecond; err != nil && transient(err) && ctx.Err() == nil &&
			n.host.Network().Connectedness(p) == network.Connected; wait = min(2*wait, time.Second) {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
				err = n.hello(ctx, p)
			}
		}
		// The bootstrap timeout may also pass while this node stores what the peer presented
		// (its store busy behind a flood of documents): that is no fault of the peer either.
		expired := ctx.Err() != nil
		cancel()
		if err != nil && (transient(err) || expired) {
			// Still no exchange: leave it to the next connection (the bootstrap loop or the
			// peer dials again), without penalty.
			n.log.Info("hello failed, not refused", slog.String("peer", p.String()), slog.Any("error", err))
			_ = n.host.Network().ClosePeer(p)
			return
		}
		if err != nil {
			n.refuse(p, err.Error())
			return
		}
		n.admitted(p)
		return
	}
	t := time.NewTimer(n.cfg.BootstrapTimeout)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.refuse(p, "no introduction within the bootstrap timeout")
			return
		case <-tick.C:
			n.mu.Lock()
			ok := n.state(p).admitted
			n.mu.Unlock()
			if ok || n.host.Network().Connectedness(p) != network.Connected {
				// Admitted, or gone: a peer that left is not refused for leaving.
				return
			}
		}
	}
}

// admitted records that p passed admission and starts catching up with it.
func (n *Network) admitted(p peer.ID) {
	org, ok := n.backend.Admitted(n.ctx, p)
	if !ok {
		n.refuse(p, "no valid organisation credential binds it")
		return
	}
	n.gater.promoted(p)
	n.mu.Lock()
	s := n.state(p)
	if n.host.Network().Connectedness(p) != network.Connected {
		// The connections closed while Hello ran: the next one is introduced afresh.
		n.mu.Unlock()
		return
	}
	s.connected = true
	first := !s.admitted
	s.admitted, s.org, s.lastSeen = true, org, n.cfg.Now()
	addr := s.membershipAddr
	n.mu.Unlock()
	if !first {
		return
	}
	n.log.Info("peer admitted", slog.String("peer", p.String()), slog.String("org", org))
	if n.cfg.OnAdmitted != nil {
		n.cfg.OnAdmitted(p, org)
	}
	if addr != "" && n.ml != nil {
		n.joinMembership(addr)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.syncWith(n.ctx, p)
		// Until the next gossipsub heartbeat grafts p into the mesh, documents other peers
		// publish are forwarded past it, and once it is in the mesh no IHAVE names them to it.
		// One more catch-up after the mesh has formed closes that window (one fingerprint
		// exchange when nothing was missed).
		select {
		case <-n.ctx.Done():
		case <-time.After(meshSettle):
			n.syncWith(n.ctx, p)
		}
	}()
}

// meshSettle is how long after admission the second catch-up runs: a few gossipsub heartbeats.
const meshSettle = 3 * time.Second

// transient reports whether a failed Hello failed in transport, before the peer could answer: a
// stream that could not be opened or negotiated, a connection lost, a timeout. A peer that
// answered and was refused, or presented what does not verify, is not transient.
func transient(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled:
		var ce *connect.Error
		return errors.As(err, &ce)
	}
	return false
}

// refuse disconnects p and keeps it out for a while.
func (n *Network) refuse(p peer.ID, why string) {
	if n.ctx.Err() != nil {
		return
	}
	n.log.Warn("peer refused", slog.String("peer", p.String()), slog.String("reason", why))
	n.m.peersRefused.Inc()
	n.gater.deny(p, n.cfg.Now().Add(n.cfg.DenyFor))
	_ = n.host.Network().ClosePeer(p)
}

// awaitAdmission reports whether p is admitted, waiting while its bootstrap exchange is under
// way (at most the bootstrap timeout).
func (n *Network) awaitAdmission(p peer.ID) bool {
	deadline := time.Now().Add(n.cfg.BootstrapTimeout)
	for {
		n.mu.Lock()
		s, ok := n.peers[p]
		admitted, pending := ok && s.admitted, ok && s.helloing
		n.mu.Unlock()
		if admitted {
			return true
		}
		if !pending || time.Now().After(deadline) || n.ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// introducing reports whether p's bootstrap exchange is under way.
func (n *Network) introducing(p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.peers[p]
	return ok && s.helloing
}

// isAdmitted reports whether p is a connected, admitted peer.
func (n *Network) isAdmitted(p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.peers[p]
	return ok && s.admitted
}
