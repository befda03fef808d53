package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	libp2pnetwork "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/network/outbox"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// netNode is a node on loopback hosting one credentialed organisation.
type netNode struct {
	*Node
	org string
}

// newNetNode starts a node hosting one organisation that reg admits (unless admit is false).
func newNetNode(t testing.TB, reg *register.Register, name string, admit bool) *netNode {
	t.Helper()
	n := startNetNode(t, reg, "", name)
	n.org = hostOrganization(t, n.Node, reg, name, admit)
	return n
}

// startNetNode starts a node on loopback, in memory when dir is empty; it hosts nothing yet.
func startNetNode(t testing.TB, reg *register.Register, dir, name string, opts ...func(*Config)) *netNode {
	t.Helper()
	ctx := t.Context()
	cfg := DefaultConfig()
	cfg.InMemory = dir == ""
	cfg.DataDir = dir
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = []string{reg.DID()}
	cfg.SyncInterval = 2 * time.Second
	cfg.BootstrapTimeout = 5 * time.Second // generous: tests share two cores with other work
	for _, o := range opts {
		o(&cfg)
	}
	var w io.Writer = io.Discard
	if os.Getenv("SCHAKEL_TEST_LOG") != "" {
		w = os.Stderr
	}
	n, err := New(cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return &netNode{Node: n}
}

// hostOrganization creates an organisation on n and, when admit is set, has reg admit it.
func hostOrganization(t testing.TB, n *Node, reg *register.Register, name string, admit bool) string {
	t.Helper()
	ctx := t.Context()
	resp, err := n.CreateOrganization(ctx, &schakelv1.CreateOrganizationRequest{Name: name})
	if err != nil {
		t.Fatalf("CreateOrganization: %v", err)
	}
	org := resp.GetOrganization().GetDid()
	docs := reg.Documents()
	if admit {
		c, err := reg.Issue(ctx, vc.Organization{ID: org, Name: name, URA: "01234567", Type: "Z3", City: "Utrecht"}, 24*time.Hour, time.Now())
		if err != nil {
			t.Fatalf("register Issue: %v", err)
		}
		docs = append(docs, string(c.JWT))
	}
	if _, err := n.SubmitDocuments(ctx, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		t.Fatalf("SubmitDocuments: %v", err)
	}
	return org
}

func newRegister(t testing.TB) *register.Register {
	t.Helper()
	reg, err := register.Init(t.Context(), t.TempDir(), "test register", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatalf("register.Init: %v", err)
	}
	return reg
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func link(t testing.TB, a, b *netNode) {
	t.Helper()
	if err := a.Network().Connect(t.Context(), b.Network().Addrs()[0]); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

func admittedCount(n *netNode) int { return len(n.Network().AdmittedPeers()) }

// TestNetworkAdmissionGossipAndForgery runs ten credentialed nodes: each admits the others, a
// credential published anywhere reaches every node, a tampered one reaches none, and a node whose
// organisation has no credential is refused at the door.
func TestNetworkAdmissionGossipAndForgery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ten nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	var nodes []*netNode
	for i := range 10 {
		nodes = append(nodes, newNetNode(t, reg, fmt.Sprintf("Praktijk %d", i), true))
	}
	for i := 1; i < len(nodes); i++ {
		link(t, nodes[i], nodes[0])
		if i > 1 {
			link(t, nodes[i], nodes[i-1])
		}
	}
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d admits its peers", i), func() bool { return admittedCount(n) >= 1 })
	}
	// Every node learns every organisation (by reconciliation on connection and by gossip).
	for i, n := range nodes {
		eventually(t, 20*time.Second, fmt.Sprintf("node %d knows all organisations", i), func() bool {
			cs, err := n.creds.List(ctx, vc.Filter{Kind: vc.OrganizationCredential})
			return err == nil && len(cs) == len(nodes)
		})
	}
	// Wait for the gossip meshes to form before publishing.
	time.Sleep(2 * time.Second)
	sr := &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
		Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://p5.example/fhir"}}}}
	issued, err := nodes[5].IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: nodes[5].org, Subject: sr})
	if err != nil {
		t.Fatalf("IssueCredential: %v", err)
	}
	id := issued.GetCredential().GetId()
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d stores the service registration", i), func() bool {
			_, err := n.creds.Get(ctx, id)
			return err == nil
		})
	}

	// A tampered credential published straight into gossip is refused by the first receiver and
	// reaches nobody.
	forged := []byte(issued.GetCredential().GetJwt())
	forged[len(forged)-10] ^= 1
	if err := nodes[3].Network().Publish(ctx, forged); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	time.Sleep(time.Second)
	for i, n := range nodes {
		if i == 3 {
			continue
		}
		if ok, _ := n.catalog.Has(ctx, network.DocumentID(forged)); ok {
			t.Fatalf("node %d stored a forged credential", i)
		}
	}

	// An organisation without a credential is refused at the door.
	insurer := newNetNode(t, reg, "Zorgverzekeraar", false)
	_ = insurer.Network().Connect(ctx, nodes[0].Network().Addrs()[0])
	time.Sleep(time.Second)
	if admittedCount(insurer) != 0 {
		t.Fatalf("the insurer's node was admitted by %d peers", admittedCount(insurer))
	}
	for _, p := range nodes[0].Network().Peers() {
		if p.ID == insurer.PeerID().String() && (p.Admitted || p.Connected) {
			t.Fatalf("node 0 keeps the insurer's node: %+v", p)
		}
	}
	if orgs, _ := nodes[0].catalog.PeerOrganizations(ctx, insurer.PeerID()); len(orgs) != 0 {
		t.Fatalf("node 0 stored the insurer's DID document")
	}
}

// TestPrivateDeliveryToOfflineNode sends a private message to an organisation whose node is down:
// it waits in the sender's outbox, arrives when the node is back, and is processed once although
// the sender's first delivery attempts failed.
func TestPrivateDeliveryToOfflineNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	portal := newNetNode(t, reg, "Patientenportaal", true)
	dir := t.TempDir()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	gp := startNetNode(t, reg, dir, "Huisartsenpraktijk Jansen")
	gp.org = hostOrganization(t, gp.Node, reg, "Huisartsenpraktijk Jansen", true)
	link(t, gp, portal)
	eventually(t, 10*time.Second, "the portal knows the GP practice", func() bool {
		_, err := portal.dids.Resolve(ctx, gp.org)
		return err == nil && admittedCount(portal) == 1
	})
	if err := gp.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	body := []byte(`{"request":"consent","patient":"pseudonymous"}`)
	id, err := portal.SendPrivate(ctx, portal.org, gp.org, "consent-request", body)
	if err != nil {
		t.Fatalf("SendPrivate: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // delivery is attempted and fails while the node is down

	gp2 := startNetNode(t, reg, dir, "Huisartsenpraktijk Jansen")
	gp2.org = gp.org
	link(t, gp2, portal)
	var got []Received
	eventually(t, 15*time.Second, "the message arrives", func() bool {
		got, err = gp2.Messages(ctx, gp.org)
		return err == nil && len(got) > 0
	})
	time.Sleep(200 * time.Millisecond)
	if got, _ = gp2.Messages(ctx, gp.org); len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	if got[0].ID != id || got[0].From != portal.org || got[0].Kind != "consent-request" || string(got[0].Body) != string(body) {
		t.Fatalf("message = %+v", got[0])
	}
	if portal.outbox.Depth() != 0 {
		t.Fatalf("outbox depth %d after delivery", portal.outbox.Depth())
	}

	// A message delivered twice, as by a sender whose acknowledgement was lost, is processed once.
	_, sig, err := portal.orgs.signingKey(ctx, portal.org)
	if err != nil {
		t.Fatalf("signingKey: %v", err)
	}
	st, _ := portal.dids.Resolve(ctx, gp.org)
	m, err := outbox.Seal(sig, portal.org, st.Current().AgreementKey, gp.org, "notice", []byte("again"), time.Now(), 0)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	req := &schakelv1.DeliverRequest{Id: m.ID, From: m.From, To: m.To, Kind: m.Kind, Payload: m.Payload}
	for i, want := range []bool{false, true} {
		dup, err := portal.Network().Deliver(ctx, req)
		if err != nil || dup != want {
			t.Fatalf("delivery %d: duplicate = %v, %v; want %v", i+1, dup, err, want)
		}
	}
	// A message claiming to come from an organisation the delivering node does not host is refused.
	forged := &schakelv1.DeliverRequest{Id: "x" + req.Id[1:], From: gp.org, To: req.To, Payload: req.Payload}
	if _, err := portal.Network().Deliver(ctx, forged); err == nil {
		t.Fatal("a message from an organisation the peer does not host was accepted")
	}
	if got, _ = gp2.Messages(ctx, gp.org); len(got) != 2 {
		t.Fatalf("%d messages after a double delivery and a forgery, want 2", len(got))
	}
}

// TestWitnessesCosignAndCatchAFork runs a GP practice's node and a witness node: the witness
// cosigns the practice's checkpoints (the cosignature comes back into the practice's checkpoints),
// and when the practice signs a checkpoint that rewrites its history, the witness keeps both
// checkpoints as evidence and raises the alarm.
func TestWitnessesCosignAndCatchAFork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	gp := newNetNode(t, reg, "Huisartsenpraktijk Jansen", true)
	w := newNetNode(t, reg, "Apotheek Janssens", true)
	link(t, w, gp)
	eventually(t, 10*time.Second, "the nodes admit each other", func() bool {
		_, err := w.dids.Resolve(ctx, gp.org)
		return err == nil && admittedCount(gp) == 1 && admittedCount(w) == 1
	})
	time.Sleep(1500 * time.Millisecond) // gossip meshes form
	hl, err := gp.logOf(gp.org)
	if err != nil {
		t.Fatalf("logOf: %v", err)
	}
	for i := range 5 {
		e := &verify.Entry{Event: verify.EventDataAccess, Action: "read", Outcome: verify.OutcomeGranted,
			Requester: &verify.Requester{DID: w.org}, DataCategory: "medication", TokenID: fmt.Sprint("tok-", i)}
		if _, err := hl.log.Append(ctx, e); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	size, err := hl.log.CheckpointNow(ctx)
	if err != nil {
		t.Fatalf("CheckpointNow: %v", err)
	}
	wname := WitnessPrefix + w.PeerID().String()
	eventually(t, 15*time.Second, "the practice holds the witness's cosignature", func() bool {
		resp, err := gp.ListCheckpoints(ctx, &schakelv1.ListCheckpointsRequest{Organization: gp.org})
		if err != nil || len(resp.GetCheckpoints()) == 0 {
			return false
		}
		last := resp.GetCheckpoints()[len(resp.GetCheckpoints())-1]
		return last.GetSize() == size && strings.Contains(last.GetNote(), "— "+wname+" ")
	})
	// The cosignature verifies with the witness key the node publishes.
	resp, _ := gp.ListCheckpoints(ctx, &schakelv1.ListCheckpointsRequest{Organization: gp.org})
	last := []byte(resp.GetCheckpoints()[len(resp.GetCheckpoints())-1].GetNote())
	ws, err := verify.ParseWitnesses([]string{w.WitnessKey()})
	if err != nil {
		t.Fatalf("ParseWitnesses: %v", err)
	}
	nt, err := verify.SplitNote(last)
	if err != nil {
		t.Fatalf("SplitNote: %v", err)
	}
	if got := ws.Count(nt.Text, nt.UnverifiedSigs); got != 1 {
		t.Fatalf("the practice's checkpoint carries %d valid cosignatures of the witness, want 1", got)
	}

	// The practice rewrites its history: a checkpoint of the same size with another root, signed
	// with its log key.
	h, err := gp.orgs.get(ctx, gp.org)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	k, err := gp.keys.Get(ctx, h.LogKey)
	if err != nil {
		t.Fatalf("log key: %v", err)
	}
	signer, err := k.NoteSigner(hl.log.Origin())
	if err != nil {
		t.Fatalf("NoteSigner: %v", err)
	}
	var root tlog.Hash
	root[0] = 1
	forged, err := note.Sign(&note.Note{Text: string(verify.FormatCheckpoint(hl.log.Origin(), size, root))}, signer)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	if err := gp.Network().PublishNote(ctx, forged); err != nil {
		t.Fatalf("PublishNote: %v", err)
	}
	eventually(t, 10*time.Second, "the witness catches the fork", func() bool {
		forks, err := w.Forks(ctx)
		return err == nil && len(forks) == 1
	})
	forks, _ := w.Forks(ctx)
	if forks[0].Origin != hl.log.Origin() || len(forks[0].A) == 0 || len(forks[0].B) == 0 {
		t.Fatalf("fork evidence = %+v", forks[0])
	}
	info, err := w.GetNodeInfo(ctx, &schakelv1.GetNodeInfoRequest{})
	if err != nil || len(info.GetForkedLogs()) != 1 {
		t.Fatalf("GetNodeInfo forked logs = %v, %v", info.GetForkedLogs(), err)
	}
}

// TestPartitionHeals splits six nodes in two groups, publishes on both sides, then joins them:
// every node ends with the same set of documents.
func TestPartitionHeals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	var nodes []*netNode
	for i := range 6 {
		nodes = append(nodes, newNetNode(t, reg, fmt.Sprintf("Praktijk %d", i), true))
	}
	for _, g := range [][]int{{0, 1, 2}, {3, 4, 5}} {
		link(t, nodes[g[1]], nodes[g[0]])
		link(t, nodes[g[2]], nodes[g[0]])
		link(t, nodes[g[2]], nodes[g[1]])
	}
	for i, n := range nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d admits its group", i), func() bool { return admittedCount(n) == 2 })
	}
	var ids []string
	for _, i := range []int{1, 4} {
		for j := range 3 {
			sr := &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
				Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: fmt.Sprintf("https://p%d-%d.example/fhir", i, j)}}}}
			resp, err := nodes[i].IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: nodes[i].org, Subject: sr})
			if err != nil {
				t.Fatalf("IssueCredential: %v", err)
			}
			ids = append(ids, resp.GetCredential().GetId())
		}
	}
	count := func(n *netNode) uint64 {
		c, err := n.catalog.Index().Count(ctx)
		if err != nil {
			t.Fatalf("Count: %v", err)
		}
		return c
	}
	time.Sleep(time.Second)
	if _, err := nodes[0].creds.Get(ctx, ids[3]); err == nil {
		t.Fatal("a document crossed the partition")
	}
	link(t, nodes[3], nodes[2])
	for i, n := range nodes {
		eventually(t, 20*time.Second, fmt.Sprintf("node %d holds every registration", i), func() bool {
			for _, id := range ids {
				if _, err := n.creds.Get(ctx, id); err != nil {
					return false
				}
			}
			return true
		})
	}
	eventually(t, 20*time.Second, "every node holds the same set", func() bool {
		want := count(nodes[0])
		for _, n := range nodes[1:] {
			if count(n) != want {
				return false
			}
		}
		return true
	})
}

// TestStrangerGetsNothing connects a plain libp2p host — no organisation, no credential — to a
// node: it may call Hello only, which refuses it; its RPC streams are closed unread; what it
// publishes into gossip is stored by no one.
func TestStrangerGetsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	a := newNetNode(t, reg, "Praktijk A", true)
	b := newNetNode(t, reg, "Praktijk B", true)
	link(t, b, a)
	eventually(t, 10*time.Second, "the nodes admit each other", func() bool { return admittedCount(a) == 1 })
	before, _ := a.catalog.Index().Count(ctx)

	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	defer h.Close()
	ps, err := pubsub.NewGossipSub(ctx, h, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pubsubpb.Message) string { id := network.DocumentID(m.Data); return string(id[:]) }))
	if err != nil {
		t.Fatalf("NewGossipSub: %v", err)
	}
	topic, err := ps.Join(network.TopicDocuments)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	info, err := peer.AddrInfoFromString(a.Network().Addrs()[0])
	if err != nil {
		t.Fatalf("AddrInfo: %v", err)
	}
	if err := h.Connect(ctx, *info); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	// An RPC stream is closed before anything is served.
	s, err := h.NewStream(ctx, info.ID, network.RPCProtocol)
	if err == nil {
		s.SetDeadline(time.Now().Add(15 * time.Second)) // beyond the bootstrap timeout
		_, _ = s.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		buf := make([]byte, 64)
		if n, err := s.Read(buf); err == nil {
			t.Fatalf("the RPC protocol answered a stranger: %q", buf[:n])
		}
	}
	// Gossip: a forged credential and a replayed genuine one with a byte changed reach no one.
	regs, err := b.creds.List(ctx, vc.Filter{Kind: vc.OrganizationCredential})
	if err != nil || len(regs) == 0 {
		t.Fatalf("List: %v", err)
	}
	changed := append([]byte(nil), regs[0].JWT...)
	changed[len(changed)/2] ^= 1
	_ = topic.Publish(ctx, changed)
	_ = topic.Publish(ctx, []byte("eyJhbGciOiJFZERTQSJ9.e30.AAAA"))
	time.Sleep(time.Second)
	for _, n := range []*netNode{a, b} {
		if ok, _ := n.catalog.Has(ctx, network.DocumentID(changed)); ok {
			t.Fatal("a stranger's document was stored")
		}
		if after, _ := n.catalog.Index().Count(ctx); n == a && after != before {
			t.Fatalf("the catalog changed: %d → %d documents", before, after)
		}
	}
	for _, p := range a.Network().Peers() {
		if p.ID == h.ID().String() && p.Admitted {
			t.Fatal("the stranger was admitted")
		}
	}
	// Past the bootstrap timeout the stranger is disconnected and kept out.
	eventually(t, 15*time.Second, "the stranger is disconnected", func() bool {
		return h.Network().Connectedness(info.ID) != libp2pnetwork.Connected
	})
	if err := h.Connect(ctx, *info); err == nil {
		if _, err := h.NewStream(ctx, info.ID, network.BootstrapProtocol); err == nil {
			t.Fatal("the refused stranger could open a stream again at once")
		}
	}
}

// freeAddr returns a loopback host:port free for TCP and UDP at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		addr := l.Addr().String()
		l.Close()
		if u, err := net.ListenPacket("udp", addr); err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free address")
	return ""
}

// TestMembershipFindsPeers runs three nodes with memberlist: B and C each know only A, and find
// each other through the member list (each member's signed peer record gives the addresses).
func TestMembershipFindsPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nodes")
	}
	reg := newRegister(t)
	var nodes []*netNode
	for _, name := range []string{"A", "B", "C"} {
		addr := freeAddr(t)
		n := startNetNode(t, reg, "", name, func(c *Config) { c.MembershipAddr = addr })
		n.org = hostOrganization(t, n.Node, reg, "Praktijk "+name, true)
		nodes = append(nodes, n)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	link(t, b, a)
	link(t, c, a)
	eventually(t, 20*time.Second, "B and C find each other through memberlist", func() bool {
		for _, p := range b.Network().Peers() {
			if p.ID == c.PeerID().String() && p.Connected && p.Admitted {
				return true
			}
		}
		return false
	})
	if m := len(a.Network().Members()); m != 3 {
		t.Fatalf("A sees %d members, want 3", m)
	}
	// A node without an organisation credential that joins memberlist directly is not taken in.
	addr := freeAddr(t)
	insurer := startNetNode(t, reg, "", "insurer", func(c *Config) { c.MembershipAddr = addr })
	insurer.org = hostOrganization(t, insurer.Node, reg, "Zorgverzekeraar", false)
	_ = insurer.Network().JoinMembership(a.net.MembershipAddr())
	time.Sleep(time.Second)
	for _, n := range nodes {
		for _, m := range n.Network().Members() {
			if m == insurer.PeerID().String() {
				t.Fatalf("%s took the insurer's node into its member list", n.org)
			}
		}
	}
}

// TestCatchUpAfterOffline takes a node offline while its peer stores 10,000 documents; when it
// returns, one reconciliation fetches exactly those, and what the reconciliation itself costs is
// small beside them: O(differences), not O(total).
func TestCatchUpAfterOffline(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 10,000 documents")
	}
	ctx := t.Context()
	reg := newRegister(t)
	slow := func(c *Config) { c.SyncInterval = time.Hour } // only the explicit Sync below
	a := startNetNode(t, reg, "", "A", slow)
	a.org = hostOrganization(t, a.Node, reg, "Praktijk A", true)
	dir := t.TempDir()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	b := startNetNode(t, reg, dir, "B", slow)
	b.org = hostOrganization(t, b.Node, reg, "Praktijk B", true)
	link(t, b, a)
	eventually(t, 20*time.Second, "A and B admit each other", func() bool { return admittedCount(a) == 1 && admittedCount(b) == 1 })
	eventually(t, 20*time.Second, "A and B hold the same set", func() bool {
		na, _ := a.catalog.Index().Count(ctx)
		nb, _ := b.catalog.Index().Count(ctx)
		_, err := b.dids.Resolve(ctx, a.org)
		return na == nb && err == nil
	})
	base, _ := a.catalog.Index().Count(ctx)
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	const docs = 10_000
	payload := 0
	for i := range docs {
		sr := &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: fmt.Sprintf("https://a.example/fhir/%d", i)}}}}
		resp, err := a.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: a.org, Subject: sr})
		if err != nil {
			t.Fatalf("IssueCredential %d: %v", i, err)
		}
		payload += len(resp.GetCredential().GetJwt())
	}
	b2 := startNetNode(t, reg, dir, "B", slow)
	link(t, b2, a)
	eventually(t, 20*time.Second, "B is admitted again", func() bool { return admittedCount(b2) == 1 })
	// The reconciliation B starts on connecting fetches what it missed; should anything be left
	// (a document that arrived out of order), the next round — here called at once — gets it.
	start := time.Now()
	eventually(t, 180*time.Second, "B's first reconciliation ends", func() bool { return b2.Network().SyncStats().Rounds > 0 })
	r := b2.Network().SyncStats()
	want, _ := a.catalog.Index().Count(ctx)
	if want < base+docs {
		t.Fatalf("A holds %d documents, want at least %d", want, base+docs)
	}
	for range 3 {
		if n, _ := b2.catalog.Index().Count(ctx); n == want {
			break
		}
		res, err := b2.Network().Sync(ctx, a.PeerID())
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		r.Rounds, r.BytesIn, r.BytesOut = r.Rounds+res.Rounds, r.BytesIn+res.BytesIn, r.BytesOut+res.BytesOut
		r.Stored, r.FetchedBytes = r.Stored+res.Stored, r.FetchedBytes+res.FetchedBytes
	}
	if n, _ := b2.catalog.Index().Count(ctx); n != want {
		t.Fatalf("B holds %d documents, A %d; held %d", n, want, b2.Network().Held())
	}
	t.Logf("caught up in %s", time.Since(start).Round(time.Millisecond))
	overhead := r.BytesIn + r.BytesOut
	t.Logf("caught up on %d documents (%d bytes) in %d rounds; reconciliation %d bytes, %.1f per document",
		r.Stored, r.FetchedBytes, r.Rounds, overhead, float64(overhead)/docs)
	// Some documents may arrive by gossip meanwhile and some wait for another: count bytes, not
	// documents, and bound them by the payload.
	if r.FetchedBytes > payload+payload/10 {
		t.Fatalf("fetched %d documents, %d bytes, for %d new documents of %d bytes", r.Stored, r.FetchedBytes, docs, payload)
	}
	// Listing all ids would cost 40 bytes per held document; the exchange must cost far less
	// than the documents themselves.
	if overhead > docs*100 {
		t.Fatalf("reconciliation cost %d bytes for %d differences", overhead, docs)
	}
}

// TestAdmissionAfterNegativeCredentialCheck: a node that checked an organisation's credential
// before holding it (a gossiped document naming it, a token request) admits that organisation's
// node when it introduces itself with the credential, not only after the check's cache expires.
func TestAdmissionAfterNegativeCredentialCheck(t *testing.T) {
	reg := newRegister(t)
	a := newNetNode(t, reg, "Praktijk A", true)
	b := newNetNode(t, reg, "Praktijk B", true)
	if _, ok := a.orgCredential(t.Context(), b.org); ok {
		t.Fatal("A holds B's credential before they met")
	}
	link(t, b, a)
	eventually(t, 10*time.Second, "A admits B", func() bool { return admittedCount(a) == 1 })
}
