package network

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
)

// Membership: memberlist (SWIM with Lifeguard) tells the node who is alive and where to dial.
// Each member's metadata is its libp2p signed peer record (addresses signed by the peer key); the
// alive delegate refuses a member whose record does not verify or whose peer is not admitted.
// memberlist's own messages are not authenticated, so its view only advises whom to dial:
// admission stays with the connection gater and Hello.

func (n *Network) startMembership() error {
	host, port, err := hostPort(n.cfg.MembershipAddr)
	if err != nil {
		return fmt.Errorf("network: membership address %q: %w", n.cfg.MembershipAddr, err)
	}
	c := memberlist.DefaultLANConfig()
	c.Name = n.host.ID().String()
	c.BindAddr, c.BindPort = host, port
	c.AdvertiseAddr, c.AdvertisePort = "", 0
	c.Delegate = &memberDelegate{n: n}
	c.Alive = &memberDelegate{n: n}
	c.Merge = &memberDelegate{n: n}
	c.Events = &memberDelegate{n: n}
	c.Logger = log.New(&slogWriter{l: n.log.With(slog.String("component", "memberlist"))}, "", 0)
	ml, err := memberlist.Create(c)
	if err != nil {
		return fmt.Errorf("network: memberlist: %w", err)
	}
	n.ml = ml
	return nil
}

// MembershipAddr is the address memberlist listens on, empty when membership is off.
func (n *Network) MembershipAddr() string {
	if n.ml == nil {
		return ""
	}
	ln := n.ml.LocalNode()
	return fmt.Sprintf("%s:%d", ln.Addr, ln.Port)
}

// joinMembership joins the member list through a peer's memberlist address.
func (n *Network) joinMembership(addr string) {
	if _, err := n.ml.Join([]string{addr}); err != nil {
		n.log.Debug("membership join failed", slog.String("addr", addr), slog.Any("error", err))
	}
}

// JoinMembership joins the member list through a member's memberlist address (host:port). The
// members still decide: one whose peer is not admitted is refused by their alive delegate.
func (n *Network) JoinMembership(addr string) error {
	if n.ml == nil {
		return errors.New("network: membership is off")
	}
	_, err := n.ml.Join([]string{addr})
	return err
}

// Members returns the peer ids memberlist considers alive, this node included.
func (n *Network) Members() []string {
	if n.ml == nil {
		return nil
	}
	var out []string
	for _, m := range n.ml.Members() {
		out = append(out, m.Name)
	}
	return out
}

type memberDelegate struct{ n *Network }

// NodeMeta implements memberlist.Delegate: the signed peer record.
func (d *memberDelegate) NodeMeta(limit int) []byte {
	rec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: d.n.host.ID(), Addrs: d.n.host.Addrs()})
	e, err := record.Seal(rec, d.n.cfg.Key)
	if err != nil {
		return nil
	}
	b, err := e.Marshal()
	if err != nil || len(b) > limit {
		return nil
	}
	return b
}

func (d *memberDelegate) NotifyMsg([]byte)                       {}
func (d *memberDelegate) GetBroadcasts(int, int) [][]byte        { return nil }
func (d *memberDelegate) LocalState(bool) []byte                 { return nil }
func (d *memberDelegate) MergeRemoteState(buf []byte, join bool) {}
func (d *memberDelegate) NotifyLeave(*memberlist.Node)           {}
func (d *memberDelegate) NotifyUpdate(*memberlist.Node)          {}

// verify checks a member's signed peer record and returns it: at most memberlist.MetaMaxSize bytes
// (memberlist bounds what it sends, not what it receives), signed by the key of the peer it names.
func (d *memberDelegate) verify(m *memberlist.Node) (*peer.PeerRecord, error) {
	if len(m.Meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("member %s: %d bytes of metadata, at most %d", m.Name, len(m.Meta), memberlist.MetaMaxSize)
	}
	e, rec, err := record.ConsumeEnvelope(m.Meta, peer.PeerRecordEnvelopeDomain)
	if err != nil {
		return nil, fmt.Errorf("member %s: peer record: %w", m.Name, err)
	}
	pr, ok := rec.(*peer.PeerRecord)
	if !ok {
		return nil, fmt.Errorf("member %s: not a peer record", m.Name)
	}
	// ConsumeEnvelope checks the signature, not that the signer is the peer the record names.
	if !pr.PeerID.MatchesPublicKey(e.PublicKey) {
		return nil, fmt.Errorf("member %s: record of %s signed by another key", m.Name, pr.PeerID)
	}
	if pr.PeerID.String() != m.Name {
		return nil, fmt.Errorf("member %s: record is signed by %s", m.Name, pr.PeerID)
	}
	return pr, nil
}

// NotifyAlive implements memberlist.AliveDelegate.
func (d *memberDelegate) NotifyAlive(m *memberlist.Node) error {
	if m.Name == d.n.host.ID().String() {
		return nil
	}
	pr, err := d.verify(m)
	if err != nil {
		d.n.m.membersRefused.Inc()
		return err
	}
	if _, ok := d.n.backend.Admitted(d.n.ctx, pr.PeerID); !ok {
		d.n.m.membersRefused.Inc()
		d.n.refusedMember(pr.PeerID, fmt.Sprintf("%s:%d", m.Addr, m.Port))
		return fmt.Errorf("member %s: %w", m.Name, ErrNotAdmitted)
	}
	return nil
}

// Members refused because their organisation was not (yet) known are asked again once it is:
// memberlist would otherwise take them in only at its next full state exchange.
const maxRefusedMembers = 256

func (n *Network) refusedMember(p peer.ID, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.refusedMembers == nil {
		n.refusedMembers = map[peer.ID]string{}
	}
	if len(n.refusedMembers) < maxRefusedMembers {
		n.refusedMembers[p] = addr
	}
}

// membershipLoop rejoins, through them, refused members that have since been admitted.
func (n *Network) membershipLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		refused := n.refusedMembers
		n.refusedMembers = nil
		n.mu.Unlock()
		for p, addr := range refused {
			if _, ok := n.backend.Admitted(n.ctx, p); ok {
				n.joinMembership(addr)
			} else if n.gater.isDenied(p) {
				continue
			} else {
				n.refusedMember(p, addr)
			}
		}
	}
}

// NotifyMerge implements memberlist.MergeDelegate: a remote state with a forged record is
// refused whole; members not (yet) admitted are refused one by one by NotifyAlive.
func (d *memberDelegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, m := range peers {
		if m.Name == d.n.host.ID().String() {
			continue
		}
		if _, err := d.verify(m); err != nil {
			d.n.m.membersRefused.Inc()
			return err
		}
	}
	return nil
}

// NotifyJoin implements memberlist.EventDelegate: dial a member not yet connected.
func (d *memberDelegate) NotifyJoin(m *memberlist.Node) {
	n := d.n
	if m.Name == n.host.ID().String() || n.ctx.Err() != nil {
		return
	}
	pr, err := d.verify(m)
	if err != nil {
		return
	}
	if n.host.Network().Connectedness(pr.PeerID) == network.Connected {
		return
	}
	n.host.Peerstore().AddAddrs(pr.PeerID, pr.Addrs, 10*time.Minute)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.host.Connect(n.ctx, peer.AddrInfo{ID: pr.PeerID, Addrs: pr.Addrs}); err != nil {
			n.log.Debug("dial of member failed", slog.String("peer", m.Name), slog.Any("error", err))
		}
	}()
}

// slogWriter adapts memberlist's log lines ("[LEVEL] memberlist: message") to slog.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelDebug
	for prefix, l := range map[string]slog.Level{"[ERR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelDebug, "[DEBUG]": slog.LevelDebug} {
		if strings.HasPrefix(line, prefix) {
			level, line = l, strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	w.l.Log(nil, level, strings.TrimPrefix(line, "memberlist: "))
	return len(p), nil
}
