package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	libp2pnetwork "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/network/reconcile"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// hostile is a peer built from plain go-libp2p, go-libp2p-pubsub and the generated PeerService
// client and handler over libp2p streams — not from package network — so that it can send what
// a schakel node never would. With a credential it is a hostile member: its organisation holds a
// valid organisation credential from the register and a DID document binding its libp2p key, it
// presents both in Hello as an honest node does, and it serves Hello, Reconcile and
// FetchDocuments to the nodes that call it.
type hostile struct {
	t     testing.TB
	host  host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic

	org      string
	sig, enc *crypto.PrivateKey
	// intro is what it presents in Hello: the register's documents, its key event, its DID
	// document, its status list and, for a member, its organisation credential.
	intro [][]byte
	// status is its organisation's status list, from which its registrations take an entry.
	status *vc.StatusListState

	// idx and docs are the set it tells of in reconciliation and serves in FetchDocuments.
	db  *store.DB
	idx *reconcile.Index

	mu   sync.Mutex
	docs map[[32]byte][]byte
	// lie, when set, replaces its honest reconciliation answer.
	lie func(req, honest *reconcile.Message) *reconcile.Message
	// serve, when set, replaces its honest FetchDocuments answer.
	serve func(ids [][]byte) [][]byte

	servers []*http.Server
}

// hostileOptions shape a hostile peer.
type hostileOptions struct {
	// member gives its organisation an organisation credential from the register.
	member bool
	// maxGossip is the largest gossip message its router sends; 0 means go-libp2p-pubsub's
	// default (1 MiB).
	maxGossip int
}

// newHostile starts a hostile peer on loopback with its own organisation.
func newHostile(t testing.TB, reg *register.Register, name string, o hostileOptions) *hostile {
	t.Helper()
	ctx := t.Context()
	key, _, err := p2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	// No resource manager of its own: the attacker is bounded only by the node it attacks.
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&libp2pnetwork.NullResourceManager{}))
	if err != nil {
		t.Fatalf("libp2p.New: %v", err)
	}
	x := &hostile{t: t, host: h, docs: map[[32]byte][]byte{}}
	t.Cleanup(x.close)

	opts := []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(func(m *pubsubpb.Message) string { id := network.DocumentID(m.Data); return string(id[:]) }),
		// Published as fast as it can: a deep queue, so that its own router drops nothing.
		pubsub.WithPeerOutboundQueueSize(1 << 14),
	}
	if o.maxGossip > 0 {
		opts = append(opts, pubsub.WithMaxMessageSize(o.maxGossip))
	}
	if x.ps, err = pubsub.NewGossipSub(ctx, h, opts...); err != nil {
		t.Fatalf("NewGossipSub: %v", err)
	}
	if x.topic, err = x.ps.Join(network.TopicDocuments); err != nil {
		t.Fatalf("Join: %v", err)
	}
	sub, err := x.topic.Subscribe()
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	go func() {
		for {
			if _, err := sub.Next(ctx); err != nil {
				return
			}
		}
	}()

	// Its organisation, made as a node makes one: a genesis key event and a DID document
	// binding its peer id, signed with its key.
	now := time.Now()
	if x.sig, x.enc, err = did.GenerateKeys(); err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	genesis, id, err := did.NewGenesis(x.sig, x.enc.Public(), now)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	x.org = id
	st, _, err := did.Apply(nil, genesis, now)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	doc, _, err := did.NewDocument(x.sig, st, did.Binding{PeerIDs: []string{h.ID().String()}}, now)
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	x.status = vc.NewStatusListState(id, 0)
	list, _, err := x.status.Issue(x.sig, now)
	if err != nil {
		t.Fatalf("status list Issue: %v", err)
	}
	for _, d := range reg.Documents() {
		x.intro = append(x.intro, []byte(d))
	}
	x.intro = append(x.intro, genesis, doc, list)
	if o.member {
		c, err := reg.Issue(ctx, vc.Organization{ID: id, Name: name, URA: "07654321", Type: "Z3", City: "Utrecht"}, 24*time.Hour, now)
		if err != nil {
			t.Fatalf("register Issue: %v", err)
		}
		x.intro = append(x.intro, c.JWT)
	}

	if x.db, err = store.Open(store.Config{InMemory: true}); err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	if x.idx, err = reconcile.NewIndex(x.db); err != nil {
		t.Fatalf("NewIndex: %v", err)
	}
	for _, d := range x.intro[len(reg.Documents()):] {
		x.hold(d, now)
	}
	x.startRPC()
	return x
}

func (x *hostile) close() {
	for _, s := range x.servers {
		_ = s.Close()
	}
	_ = x.host.Close()
	if x.db != nil {
		_ = x.db.Close()
	}
}

// id returns its peer id.
func (x *hostile) id() peer.ID { return x.host.ID() }

// addr returns its libp2p address.
func (x *hostile) addr() string {
	return x.host.Addrs()[0].String() + "/p2p/" + x.host.ID().String()
}

// hold adds doc, issued at issued, to what it tells of in reconciliation and serves.
func (x *hostile) hold(doc []byte, issued time.Time) {
	x.t.Helper()
	id := network.DocumentID(doc)
	err := x.db.Update(context.Background(), func(tx *store.Txn) error {
		_, err := x.idx.Add(tx, reconcile.Item{Time: uint64(issued.Unix()), ID: id})
		return err
	})
	if err != nil {
		x.t.Fatalf("index Add: %v", err)
	}
	x.mu.Lock()
	x.docs[id] = doc
	x.mu.Unlock()
}

// holdItems adds items to what it tells of in reconciliation, with no document behind them.
func (x *hostile) holdItems(items []reconcile.Item) {
	x.t.Helper()
	for len(items) > 0 {
		batch := items[:min(len(items), 200)]
		items = items[len(batch):]
		err := x.db.Update(context.Background(), func(tx *store.Txn) error {
			for _, it := range batch {
				if _, err := x.idx.Add(tx, it); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			x.t.Fatalf("index Add: %v", err)
		}
	}
}

// admits reports whether n holds p admitted and connected.
func admits(n, p *netNode) bool {
	for _, q := range n.Network().Peers() {
		if q.ID == p.PeerID().String() {
			return q.Admitted && q.Connected
		}
	}
	return false
}

// connectTo dials n.
func (x *hostile) connectTo(n *netNode) error {
	info, err := peer.AddrInfoFromString(n.Network().Addrs()[0])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(x.t.Context(), 5*time.Second)
	defer cancel()
	return x.host.Connect(ctx, *info)
}

// connected reports whether it has a connection to n.
func (x *hostile) connected(n *netNode) bool {
	return x.host.Network().Connectedness(n.PeerID()) == libp2pnetwork.Connected
}

// admittedBy reports whether n holds it admitted and connected.
func (x *hostile) admittedBy(n *netNode) bool {
	for _, p := range n.Network().Peers() {
		if p.ID == x.id().String() {
			return p.Admitted && p.Connected
		}
	}
	return false
}

// join has n dial it; n calls Hello, which it answers as an honest node does, and admits it. An
// exchange that fails without fault (n too busy to finish it in time) is tried again on a new
// connection, as n's bootstrap loop would.
func (x *hostile) join(n *netNode) {
	x.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !x.admittedBy(n); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			x.t.Fatal("after 30s: the hostile member is not admitted")
		}
		if !x.connected(n) {
			if err := n.Network().Connect(x.t.Context(), x.addr()); err != nil {
				x.t.Fatalf("connect to the hostile peer: %v", err)
			}
		}
	}
	// Its gossip reaches n: a fresh registration of its own, published until n stores one (the
	// first message a new router publishes is sometimes not sent).
	eventually(x.t, 10*time.Second, "the hostile member's gossip reaches the node", func() bool {
		d := x.registration(-1)
		if err := x.publish(d); err != nil {
			x.t.Fatalf("publish: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		ok, err := n.catalog.Has(x.t.Context(), network.DocumentID(d))
		return err == nil && ok
	})
}

// publish sends data into the documents topic.
func (x *hostile) publish(data []byte) error {
	return x.topic.Publish(x.t.Context(), data)
}

// client returns a PeerService client to n over protocol proto, on libp2p streams.
func (x *hostile) client(n *netNode, proto protocol.ID) (schakelv1connect.PeerServiceClient, *http.Transport) {
	t := &http.Transport{
		Protocols: h2c(),
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return gostream.Dial(ctx, x.host, n.PeerID(), proto)
		},
	}
	return schakelv1connect.NewPeerServiceClient(&http.Client{Transport: t}, "http://"+n.PeerID().String(), connect.WithGRPC()), t
}

// registration issues a fresh, valid service registration of its organisation.
func (x *hostile) registration(i int) []byte {
	x.t.Helper()
	now := time.Now()
	status, err := x.status.Allocate()
	if err != nil {
		x.t.Fatalf("Allocate: %v", err)
	}
	jwt, _, err := vc.Issue(x.sig, vc.Request{Kind: vc.ServiceRegistrationCredential, Issuer: x.org, IssuedAt: now, ValidUntil: now.Add(24 * time.Hour), Status: status,
		Service: &vc.Service{ID: x.org, Endpoints: []vc.Endpoint{{Type: "fhir", URL: fmt.Sprintf("https://hostile.example/fhir/%d", i)}}}})
	if err != nil {
		x.t.Fatalf("vc.Issue: %v", err)
	}
	return jwt
}

func h2c() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

// startRPC serves PeerService: Hello alone on the bootstrap protocol, everything it implements on
// the RPC protocol.
func (x *hostile) startRPC() {
	_, handler := schakelv1connect.NewPeerServiceHandler(hostileHandler{x})
	for _, proto := range []protocol.ID{network.BootstrapProtocol, network.RPCProtocol} {
		l, err := gostream.Listen(x.host, proto)
		if err != nil {
			x.t.Fatalf("gostream.Listen: %v", err)
		}
		s := &http.Server{Handler: handler, Protocols: h2c(), ReadHeaderTimeout: 10 * time.Second}
		x.servers = append(x.servers, s)
		go func() { _ = s.Serve(l) }()
	}
}

// hostileHandler is the PeerService it serves.
type hostileHandler struct {
	x *hostile
}

var _ schakelv1connect.PeerServiceHandler = hostileHandler{}

// Hello answers with the documents that admit it, as the protocol requires of a node.
func (h hostileHandler) Hello(context.Context, *connect.Request[schakelv1.HelloRequest]) (*connect.Response[schakelv1.HelloResponse], error) {
	return connect.NewResponse(&schakelv1.HelloResponse{Documents: h.x.intro}), nil
}

func (h hostileHandler) Reconcile(ctx context.Context, req *connect.Request[schakelv1.ReconcileRequest]) (*connect.Response[schakelv1.ReconcileResponse], error) {
	m, err := reconcile.ParseMessage(req.Msg.GetMessage())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	out, err := h.x.idx.Respond(ctx, m)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	h.x.mu.Lock()
	lie := h.x.lie
	h.x.mu.Unlock()
	if lie != nil {
		out = lie(m, out)
	}
	b, err := out.MarshalBinary()
	if err != nil {
		// A lie the encoder refuses is sent as its bytes would be: garbage.
		b = append([]byte{reconcile.Version}, []byte("lying")...)
	}
	return connect.NewResponse(&schakelv1.ReconcileResponse{Message: b}), nil
}

func (h hostileHandler) FetchDocuments(_ context.Context, req *connect.Request[schakelv1.FetchDocumentsRequest]) (*connect.Response[schakelv1.FetchDocumentsResponse], error) {
	h.x.mu.Lock()
	serve := h.x.serve
	var docs [][]byte
	for _, id := range req.Msg.GetIds() {
		if len(id) == 32 {
			if d, ok := h.x.docs[[32]byte(id)]; ok {
				docs = append(docs, d)
			}
		}
	}
	h.x.mu.Unlock()
	if serve != nil {
		docs = serve(req.Msg.GetIds())
	}
	return connect.NewResponse(&schakelv1.FetchDocumentsResponse{Documents: docs}), nil
}

func (hostileHandler) Deliver(context.Context, *connect.Request[schakelv1.DeliverRequest]) (*connect.Response[schakelv1.DeliverResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served"))
}

func (hostileHandler) GetLogProof(context.Context, *connect.Request[schakelv1.GetLogProofRequest]) (*connect.Response[schakelv1.GetLogProofResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served"))
}

func (hostileHandler) RequestToken(context.Context, *connect.Request[schakelv1.PeerServiceRequestTokenRequest]) (*connect.Response[schakelv1.PeerServiceRequestTokenResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not served"))
}

// tamper returns doc with the byte at i (from the end when negative) changed.
func tamper(doc []byte, i int) []byte {
	out := slices.Clone(doc)
	if i < 0 {
		i += len(out)
	}
	// Stay within the base64url alphabet, so that the change is a forgery, not a parse error.
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

// probe measures an honest peer's service while an attack runs: token requests from the honest
// peer's organisation to the attacked node's, one after another on two workers.
type probe struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	latencies []time.Duration
	failures  []error
}

// startProbe starts token requests from honest to custodian until Stop.
func startProbe(t testing.TB, honest, custodian *netNode) *probe {
	p := &probe{stop: make(chan struct{})}
	jkt := dpopJKT(t)
	for range 2 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				start := time.Now()
				r, err := honest.RequestToken(t.Context(), tokenRequest(honest.org, custodian.org, "medication", "01.015", jkt))
				d := time.Since(start)
				if err == nil && r.GetAccessToken() == "" {
					err = fmt.Errorf("refused: %s %s", r.GetError(), r.GetErrorDescription())
				}
				p.mu.Lock()
				if err != nil {
					p.failures = append(p.failures, err)
				} else {
					p.latencies = append(p.latencies, d)
				}
				p.mu.Unlock()
			}
		}()
	}
	return p
}

// Stop ends the probe and returns how many requests were answered, their p50 and p99 latency,
// and the failures.
func (p *probe) Stop() (answered int, p50, p99 time.Duration, failures []error) {
	close(p.stop)
	p.wg.Wait()
	l := slices.Clone(p.latencies)
	slices.Sort(l)
	if len(l) == 0 {
		return 0, 0, 0, p.failures
	}
	return len(l), l[len(l)/2], l[min(len(l)-1, len(l)*99/100)], p.failures
}
