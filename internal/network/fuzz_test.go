package network

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/memberlist"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/multiformats/go-multiaddr"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/proto"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network/reconcile"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/store/storetest"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The gossip validators and the peer handlers are driven here as gossipsub and the RPC server
// call them, on a Network that is built (its libp2p host listens nowhere) but not started, with
// a backend that verifies and stores documents as the node does.

// fuzzMaxDocumentSize is the document bound of the fuzzed node: small, so that the fuzzing engine
// reaches it, and large enough for every document of the fixture.
const fuzzMaxDocumentSize = 4 << 10

// fuzzLogOrigin is the origin of the access log whose checkpoints the fixture gossips.
const fuzzLogOrigin = "schakel.nl/log/fuzz"

// gossipDocs are the documents of a small network: a register and an organisation it admitted,
// held by every node built from them (base), and valid documents of theirs that no node holds
// yet (fresh): a key rotation, a newer DID document, a second organisation credential and a
// newer status list. They are the same in every process: the fuzzing engine hands inputs made in
// one process to others, and a genesis event made elsewhere would be a new, valid document.
type gossipDocs struct {
	now        time.Time
	reg        string
	base       [][]byte
	fresh      [][]byte
	logKey     note.Verifier
	checkpoint []byte // signed by the log key
}

// fixedKeys returns a signing and a key-agreement key derived from label, the same in every
// process (Ed25519 signatures are deterministic, so what they sign is too).
func fixedKeys(t testing.TB, label string) (sig, enc *crypto.PrivateKey) {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	parse := func(j map[string]string) *crypto.PrivateKey {
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		k, err := crypto.ParsePrivateKey(b)
		if err != nil {
			t.Fatalf("ParsePrivateKey: %v", err)
		}
		return k
	}
	seed := sha256.Sum256([]byte(label + "/sig"))
	sig = parse(map[string]string{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
		"x": b64(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)), "d": b64(seed[:])})
	seed = sha256.Sum256([]byte(label + "/enc"))
	ek, err := ecdh.P256().NewPrivateKey(seed[:])
	if err != nil {
		t.Fatalf("ecdh.NewPrivateKey: %v", err)
	}
	pub := ek.PublicKey().Bytes() // 0x04 || x || y
	enc = parse(map[string]string{"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "use": "enc",
		"x": b64(pub[1:33]), "y": b64(pub[33:]), "d": b64(seed[:])})
	return sig, enc
}

// fixedPeerID returns a libp2p peer id derived from label.
func fixedPeerID(t testing.TB, label string) string {
	t.Helper()
	seed := sha256.Sum256([]byte(label))
	k, err := p2pcrypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatalf("UnmarshalEd25519PrivateKey: %v", err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatalf("IDFromPrivateKey: %v", err)
	}
	return id.String()
}

func newGossipDocs(t testing.TB) *gossipDocs {
	t.Helper()
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	d := &gossipDocs{now: t0.Add(time.Hour)}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("making a document: %v", err)
		}
		return b
	}
	party := func(label string) (*crypto.PrivateKey, *did.State, []byte) {
		sig, enc := fixedKeys(t, label)
		g, _, err := did.NewGenesis(sig, enc.Public(), t0)
		must(g, err)
		st, _, err := did.Apply(nil, g, t0)
		if err != nil {
			t.Fatalf("Apply(genesis): %v", err)
		}
		return sig, st, g
	}
	regSig, regSt, regGenesis := party("register")
	orgSig, orgSt, orgGenesis := party("organisation")
	d.reg = regSt.DID
	list := vc.NewStatusListState(regSt.DID, 1)
	listDoc, _, err := list.Issue(regSig, t0)
	must(listDoc, err)
	orgDoc, _, err := did.NewDocument(orgSig, orgSt, did.Binding{PeerIDs: []string{fixedPeerID(t, "node 1")}}, t0.Add(time.Minute))
	must(orgDoc, err)
	credential := func(n int, at time.Time) []byte {
		idx := strconv.Itoa(1000 + n)
		c, _, err := vc.Issue(regSig, vc.Request{
			Kind: vc.OrganizationCredential, ID: fmt.Sprintf("urn:uuid:6f1c2a3b-0000-4000-8000-%012d", n), Issuer: regSt.DID,
			IssuedAt: at, ValidUntil: at.Add(365 * 24 * time.Hour),
			Status: &vc.StatusEntry{ID: list.ListID + "#" + idx, Type: "BitstringStatusListEntry", StatusPurpose: "revocation",
				StatusListIndex: idx, StatusListCredential: list.ListID},
			Organization: &vc.Organization{ID: orgSt.DID, Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"},
		})
		return must(c, err)
	}
	d.base = [][]byte{regGenesis, listDoc, orgGenesis, orgDoc, credential(1, t0.Add(time.Minute))}

	s1, e1 := fixedKeys(t, "organisation, rotated")
	rotate := must(did.NewRotate(orgSig, orgSt, s1.Public(), e1.Public(), t0.Add(2*time.Minute)))
	newerDoc, _, err := did.NewDocument(orgSig, orgSt, did.Binding{PeerIDs: []string{fixedPeerID(t, "node 2")}}, t0.Add(3*time.Minute))
	must(newerDoc, err)
	second := credential(2, t0.Add(2*time.Minute))
	list.Revoked.Set(4711)
	newerList, _, err := list.Issue(regSig, t0.Add(2*time.Minute))
	must(newerList, err)
	d.fresh = [][]byte{rotate, newerDoc, second, newerList}

	logSeed := sha256.Sum256([]byte("access log"))
	skey, vkey, err := note.GenerateKey(bytes.NewReader(logSeed[:]), fuzzLogOrigin)
	if err != nil {
		t.Fatalf("note.GenerateKey: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("note.NewSigner: %v", err)
	}
	if d.logKey, err = note.NewVerifier(vkey); err != nil {
		t.Fatalf("note.NewVerifier: %v", err)
	}
	body := verify.FormatCheckpoint(fuzzLogOrigin, 42, tlog.RecordHash([]byte("entry 41")))
	d.checkpoint = must(note.Sign(&note.Note{Text: string(body)}, signer))
	for _, doc := range append(d.base, d.fresh...) {
		if len(doc) > fuzzMaxDocumentSize {
			t.Fatalf("a fixture document of %d bytes exceeds the fuzzed bound %d", len(doc), fuzzMaxDocumentSize)
		}
	}
	return d
}

// verifyingBackend is a Backend that verifies and stores documents as the node does: key events
// and DID documents in a did.Registry, credentials in a vc.Store, both keeping the catalog in
// their transactions; checkpoints are opened with the log's key. It records the last outcome and
// what the peer handlers pass on.
type verifyingBackend struct {
	dids   *did.Registry
	creds  *vc.Store
	logKey note.Verifier

	mu         sync.Mutex
	calls      int // Accept and AcceptNote
	lastStored bool
	lastErr    error
	got        proto.Message // the last request a peer handler passed on
}

func (b *verifyingBackend) Accept(ctx context.Context, doc []byte) (bool, error) {
	stored, err := b.accept(ctx, doc)
	b.mu.Lock()
	b.calls++
	b.lastStored, b.lastErr = stored, err
	b.mu.Unlock()
	return stored, err
}

func (b *verifyingBackend) accept(ctx context.Context, doc []byte) (bool, error) {
	h, err := crypto.ParseHeader(doc)
	if err != nil {
		return false, err
	}
	var stored bool
	switch h.Type {
	case did.EventJWSType:
		_, stored, err = b.dids.AddEvent(ctx, doc)
	case did.DocumentJWSType:
		_, stored, err = b.dids.PutDocument(ctx, doc)
	case vc.JWSType:
		_, stored, err = b.creds.Add(ctx, doc)
	default:
		return false, fmt.Errorf("unknown document type %q", h.Type)
	}
	switch {
	case err == nil:
		return stored, nil
	case errors.Is(err, did.ErrUnknownDID), errors.Is(err, did.ErrNoKey), errors.Is(err, did.ErrEventAhead), errors.Is(err, vc.ErrStatusUnavailable):
		return false, fmt.Errorf("%w: %w", ErrPending, err)
	case errors.Is(err, vc.ErrRollback), errors.Is(err, vc.ErrExpired), errors.Is(err, vc.ErrRevoked), errors.Is(err, did.ErrSuperseded):
		return false, fmt.Errorf("%w: %w", ErrStale, err)
	default:
		return false, err
	}
}

func (b *verifyingBackend) AcceptMany(ctx context.Context, docs [][]byte) ([]bool, []error) {
	stored, errs := make([]bool, len(docs)), make([]error, len(docs))
	for i, d := range docs {
		stored[i], errs[i] = b.Accept(ctx, d)
	}
	return stored, errs
}

func (b *verifyingBackend) Introduce(context.Context, peer.ID, [][]byte) (string, error) {
	return "", ErrNotAdmitted
}

func (b *verifyingBackend) Admitted(context.Context, peer.ID) (string, bool) { return "", false }

func (b *verifyingBackend) Introduction(context.Context) ([][]byte, error) { return nil, nil }

func (b *verifyingBackend) pass(m proto.Message) {
	b.mu.Lock()
	b.got = proto.Clone(m)
	b.mu.Unlock()
}

func (b *verifyingBackend) passed() proto.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.got
	b.got = nil
	return m
}

func (b *verifyingBackend) RequestToken(_ context.Context, _ peer.ID, req *schakelv1.PeerServiceRequestTokenRequest) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	b.pass(req)
	return &schakelv1.PeerServiceRequestTokenResponse{}, nil
}

func (b *verifyingBackend) Deliver(_ context.Context, _ peer.ID, m *schakelv1.DeliverRequest) (bool, error) {
	b.pass(m)
	if len(m.GetPayload()) == 0 {
		return false, errors.New("empty payload")
	}
	return false, nil
}

func (b *verifyingBackend) LogProof(_ context.Context, origin string, oldSize, newSize int64) ([]byte, [][]byte, error) {
	b.pass(&schakelv1.GetLogProofRequest{Origin: origin, OldSize: oldSize, NewSize: newSize})
	if origin != fuzzLogOrigin {
		return nil, nil, errors.New("no such log")
	}
	return []byte("checkpoint"), nil, nil
}

func (b *verifyingBackend) AcceptNote(_ context.Context, _ peer.ID, msg []byte) error {
	_, err := verify.OpenCheckpoint(msg, b.logKey)
	b.mu.Lock()
	b.calls++
	b.lastStored, b.lastErr = err == nil, err
	b.mu.Unlock()
	return err
}

func (b *verifyingBackend) callCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

// gossipNode is a Network that holds the base documents and admits one peer, friend.
type gossipNode struct {
	n      *Network
	db     *store.DB
	b      *verifyingBackend
	friend peer.ID
	held   *storetest.Watcher // what the store held once the base documents were in
}

func newGossipNode(t testing.TB, d *gossipDocs) *gossipNode {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	cat, err := NewCatalog(db)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	clock := func() time.Time { return d.now }
	dids, err := did.New(did.Config{Now: clock, OnChange: cat.OnChange}, db)
	if err != nil {
		t.Fatalf("did.New: %v", err)
	}
	creds, err := vc.NewStore(vc.StoreConfig{Anchors: vc.TrustAnchors{vc.OrganizationCredential: {d.reg}}, Now: clock, OnChange: cat.OnChange}, db, dids)
	if err != nil {
		t.Fatalf("vc.NewStore: %v", err)
	}
	b := &verifyingBackend{dids: dids, creds: creds, logKey: d.logKey}
	key, _, err := p2pcrypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	n, err := New(Config{Key: key, MaxDocumentSize: fuzzMaxDocumentSize, Now: clock}, cat, b)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	g := &gossipNode{n: n, db: db, b: b, friend: test.RandPeerIDFatal(t)}
	for i, doc := range d.base {
		if stored, err := b.Accept(context.Background(), doc); err != nil || !stored {
			g.close()
			t.Fatalf("Accept(base document %d) = %v, %v", i, stored, err)
		}
	}
	n.peers[g.friend] = &peerState{admitted: true, connected: true}
	g.held = storetest.Watch(t, db)
	return g
}

func (g *gossipNode) close() {
	g.n.Close()
	g.db.Close()
}

// message wraps data as gossipsub hands it to a validator.
func message(topic string, data []byte) *pubsub.Message {
	return &pubsub.Message{Message: &pb.Message{Data: data, Topic: &topic}}
}

// checkValidation runs validate on data from the friend or a stranger and checks what every
// gossip validator owes: a stranger's message and one over the bound are rejected without
// reaching the backend; the decision follows the backend's outcome (accepted when it stored
// something, ignored when it was a duplicate, pending or stale, rejected otherwise); nothing is
// accepted that would change the store, and the store is unchanged. It returns the decision.
func (g *gossipNode) checkValidation(t *testing.T, validate func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult, topic string, data []byte, stranger bool) pubsub.ValidationResult {
	t.Helper()
	from := g.friend
	if stranger {
		from = test.RandPeerIDFatal(t)
	}
	calls := g.b.callCount()
	r := validate(context.Background(), from, message(topic, data))
	called := g.b.callCount() != calls
	if !g.held.Unchanged(t) {
		t.Fatalf("validation of %d bytes (decision %v) changed the store", len(data), r)
	}
	switch {
	case stranger || len(data) > fuzzMaxDocumentSize:
		if r != pubsub.ValidationReject || called {
			t.Fatalf("message of %d bytes from a stranger (%v): decision %v, backend called %v; want a rejection before the backend", len(data), stranger, r, called)
		}
		return r
	case !called:
		t.Fatalf("message of %d bytes from an admitted peer decided (%v) without the backend", len(data), r)
	}
	g.b.mu.Lock()
	stored, err := g.b.lastStored, g.b.lastErr
	g.b.mu.Unlock()
	want := pubsub.ValidationReject
	switch {
	case err == nil && stored:
		want = pubsub.ValidationAccept
	case err == nil, errors.Is(err, ErrPending), errors.Is(err, ErrStale):
		want = pubsub.ValidationIgnore
	}
	if r != want {
		t.Fatalf("decision %v for backend outcome (%v, %v), want %v", r, stored, err, want)
	}
	return r
}

// FuzzValidateDocument feeds arbitrary bytes to the documents topic's validator, as if gossiped
// by an admitted peer or by a stranger, to a node that holds every document of the fixture.
// Properties: no panic; a stranger's message and one over MaxDocumentSize are rejected before
// any parsing; the decision follows the verification (duplicates, documents waiting for another
// and superseded ones ignored, the rest rejected); nothing is accepted, since nothing but the
// documents held carries a valid signature; and the store is unchanged.
func FuzzValidateDocument(f *testing.F) {
	d := newGossipDocs(f)
	g := newGossipNode(f, d)
	f.Cleanup(g.close)
	for i, doc := range d.base {
		f.Add(doc, false)
		f.Add(flip(doc, len(doc)/2), false)
		f.Add(doc[:len(doc)-i-1], false)
	}
	f.Add(d.base[0], true)
	f.Add([]byte("eyJhbGciOiJFZERTQSIsInR5cCI6InZjK2p3dCJ9.e30.AA"), false)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, stranger bool) {
		if r := g.checkValidation(t, g.n.validateDocument, TopicDocuments, data, stranger); r == pubsub.ValidationAccept {
			t.Fatalf("accepted a document that is neither held nor signed by the fixture's keys: %q", data)
		}
	})
}

// FuzzValidateDocumentTampered changes one byte of a valid document that the node does not hold
// yet (a key rotation, a newer DID document, a new organisation credential, a newer status list).
// Properties: each document unchanged is accepted and stored by a node like it; every changed
// copy is refused (rejected, or ignored as waiting for a document that does not exist) and leaves
// the store unchanged.
func FuzzValidateDocumentTampered(f *testing.F) {
	d := newGossipDocs(f)
	for i, doc := range d.fresh {
		probe := newGossipNode(f, d)
		r := probe.n.validateDocument(context.Background(), probe.friend, message(TopicDocuments, doc))
		stored := !probe.held.Unchanged(f)
		probe.close()
		if r != pubsub.ValidationAccept || !stored {
			f.Fatalf("fresh document %d: decision %v, stored %v; want accepted and stored", i, r, stored)
		}
	}
	g := newGossipNode(f, d)
	f.Cleanup(g.close)
	for i, doc := range d.fresh {
		f.Add(uint8(i), uint16(10), byte('x'))
		f.Add(uint8(i), uint16(len(doc)/2), byte('A'))
		f.Add(uint8(i), uint16(len(doc)-1), byte('B'))
	}
	f.Fuzz(func(t *testing.T, which uint8, pos uint16, b byte) {
		doc := d.fresh[int(which)%len(d.fresh)]
		in := bytes.Clone(doc)
		in[int(pos)%len(in)] = b
		if bytes.Equal(in, doc) {
			return
		}
		if r := g.checkValidation(t, g.n.validateDocument, TopicDocuments, in, false); r == pubsub.ValidationAccept {
			t.Fatalf("tampered document %d accepted: byte %d set to %q", int(which)%len(d.fresh), int(pos)%len(in), b)
		}
	})
}

// FuzzValidateNote feeds arbitrary bytes to the checkpoints topic's validator. Properties: no
// panic; a stranger's note and one over MaxDocumentSize are rejected before the backend; the
// decision follows the backend's; what is accepted is the one checkpoint the log signed (other
// signature lines may come and go: they are cosignatures for the backend to judge), and the
// store is unchanged.
func FuzzValidateNote(f *testing.F) {
	d := newGossipDocs(f)
	g := newGossipNode(f, d)
	f.Cleanup(g.close)
	cp := d.checkpoint
	f.Add(cp, false)
	f.Add(cp, true)
	f.Add(append(bytes.Clone(cp), []byte("— witness.example Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA==\n")...), false)
	f.Add(flip(cp, 5), false)
	f.Add(flip(cp, len(cp)-5), false)
	f.Add([]byte("schakel.nl/log/fuzz\n1\nAAAA\n\n"), false)
	want, err := verify.OpenCheckpoint(cp, d.logKey)
	if err != nil {
		f.Fatalf("OpenCheckpoint: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte, stranger bool) {
		if g.checkValidation(t, g.n.validateNote, TopicCheckpoints, data, stranger) != pubsub.ValidationAccept {
			return
		}
		got, err := verify.OpenCheckpoint(data, d.logKey)
		if err != nil || got != want {
			t.Fatalf("accepted a checkpoint the log did not sign: %q", data)
		}
	})
}

// peerMethods are the PeerService methods whose handlers parse what a peer sends (Hello, which
// admits, is driven by the multi-node tests).
var peerMethods = []struct {
	name string
	req  func() proto.Message
	call func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error)
}{
	{"Reconcile", func() proto.Message { return new(schakelv1.ReconcileRequest) },
		func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error) {
			r, err := h.Reconcile(ctx, connect.NewRequest(m.(*schakelv1.ReconcileRequest)))
			return msgOf(r), err
		}},
	{"FetchDocuments", func() proto.Message { return new(schakelv1.FetchDocumentsRequest) },
		func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error) {
			r, err := h.FetchDocuments(ctx, connect.NewRequest(m.(*schakelv1.FetchDocumentsRequest)))
			return msgOf(r), err
		}},
	{"Deliver", func() proto.Message { return new(schakelv1.DeliverRequest) },
		func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error) {
			r, err := h.Deliver(ctx, connect.NewRequest(m.(*schakelv1.DeliverRequest)))
			return msgOf(r), err
		}},
	{"GetLogProof", func() proto.Message { return new(schakelv1.GetLogProofRequest) },
		func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error) {
			r, err := h.GetLogProof(ctx, connect.NewRequest(m.(*schakelv1.GetLogProofRequest)))
			return msgOf(r), err
		}},
	{"RequestToken", func() proto.Message { return new(schakelv1.PeerServiceRequestTokenRequest) },
		func(h *peerHandler, ctx context.Context, m proto.Message) (proto.Message, error) {
			r, err := h.RequestToken(ctx, connect.NewRequest(m.(*schakelv1.PeerServiceRequestTokenRequest)))
			return msgOf(r), err
		}},
}

func msgOf[T any](r *connect.Response[T]) proto.Message {
	if r == nil {
		return nil
	}
	m, _ := any(r.Msg).(proto.Message)
	return m
}

// peerFixture calls the peer handlers of a gossipNode as an admitted peer.
type peerFixture struct {
	g      *gossipNode
	h      *peerHandler
	caller context.Context
	held   map[[32]byte]bool // ids of the documents the node holds
}

func newPeerFixture(t testing.TB, d *gossipDocs) *peerFixture {
	t.Helper()
	g := newGossipNode(t, d)
	t.Cleanup(g.close)
	p := &peerFixture{g: g, h: &peerHandler{n: g.n}, caller: context.WithValue(context.Background(), callerKey{}, g.friend), held: map[[32]byte]bool{}}
	for _, doc := range d.base {
		p.held[DocumentID(doc)] = true
	}
	return p
}

// check calls method pm with req and checks what FuzzPeerHandler says of it.
func (p *peerFixture) check(t *testing.T, pm int, req proto.Message) {
	t.Helper()
	name := peerMethods[pm].name
	p.g.b.passed()
	resp, err := peerMethods[pm].call(p.h, p.caller, req)
	if !p.g.held.Unchanged(t) {
		t.Fatalf("%s changed the store", name)
	}
	if err != nil && resp != nil {
		t.Fatalf("%s returned both an answer and %v", name, err)
	}
	code := connect.CodeOf(err)
	got := p.g.b.passed()
	switch req := req.(type) {
	case *schakelv1.ReconcileRequest:
		_, perr := reconcile.ParseMessage(req.GetMessage())
		if perr != nil {
			if code != connect.CodeInvalidArgument {
				t.Fatalf("Reconcile of a message that does not parse (%v): %v", perr, err)
			}
			return
		}
		if err != nil {
			if code != connect.CodeInvalidArgument {
				t.Fatalf("Reconcile: %v", err)
			}
			return
		}
		if _, err := reconcile.ParseMessage(resp.(*schakelv1.ReconcileResponse).GetMessage()); err != nil {
			t.Fatalf("Reconcile answered a message that does not parse: %v", err)
		}
	case *schakelv1.FetchDocumentsRequest:
		bad := len(req.GetIds()) > maxFetchIDs
		for _, id := range req.GetIds() {
			bad = bad || len(id) != 32
		}
		if bad != (err != nil) || (bad && code != connect.CodeInvalidArgument) {
			t.Fatalf("FetchDocuments of %d ids (malformed %v): %v", len(req.GetIds()), bad, err)
		}
		if bad {
			return
		}
		docs := resp.(*schakelv1.FetchDocumentsResponse).GetDocuments()
		if len(docs) != len(req.GetIds()) {
			t.Fatalf("FetchDocuments answered %d documents for %d ids", len(docs), len(req.GetIds()))
		}
		for i, doc := range docs {
			id := [32]byte(req.GetIds()[i])
			if len(doc) == 0 && p.held[id] || len(doc) > 0 && DocumentID(doc) != id {
				t.Fatalf("FetchDocuments answered id %d with the wrong document", i)
			}
		}
	case *schakelv1.DeliverRequest:
		if !proto.Equal(got, req) {
			t.Fatal("Deliver did not pass the request on unchanged")
		}
		if (len(req.GetPayload()) == 0) != (err != nil) || err != nil && code != connect.CodeInvalidArgument {
			t.Fatalf("Deliver: %v", err)
		}
	case *schakelv1.GetLogProofRequest:
		want := &schakelv1.GetLogProofRequest{Origin: req.GetOrigin(), OldSize: req.GetOldSize(), NewSize: req.GetNewSize()}
		if !proto.Equal(got, want) {
			t.Fatal("GetLogProof did not pass origin and sizes on unchanged")
		}
		if (req.GetOrigin() != fuzzLogOrigin) != (err != nil) || err != nil && code != connect.CodeNotFound {
			t.Fatalf("GetLogProof: %v", err)
		}
	case *schakelv1.PeerServiceRequestTokenRequest:
		if len(req.GetAssertion()) > maxAssertionSize {
			if code != connect.CodeInvalidArgument || got != nil {
				t.Fatalf("RequestToken with a %d-byte assertion: %v, backend reached %v", len(req.GetAssertion()), err, got != nil)
			}
			return
		}
		if err != nil || !proto.Equal(got, req) {
			t.Fatalf("RequestToken did not pass the request on unchanged: %v", err)
		}
	}
}

// FuzzPeerHandler decodes arbitrary bytes as a request of one of the peer handlers that parse
// what they get, and calls it as the RPC server would for an admitted peer. Properties: no panic;
// no handler changes the store (Reconcile and FetchDocuments only read; the rest pass on to the
// backend); Reconcile answers a message that parses, and refuses with invalid_argument exactly
// what does not parse; FetchDocuments refuses more than maxFetchIDs ids or an id that is not 32
// bytes, and answers each id with the document of that id or nothing, every held one found;
// Deliver, GetLogProof and RequestToken pass the request on unchanged and map the backend's
// refusal to their code; an assertion over maxAssertionSize is refused before the backend
// (TestRefusedBeforeParsing has the oversized requests).
func FuzzPeerHandler(f *testing.F) {
	d := newGossipDocs(f)
	p := newPeerFixture(f, d)
	var ids [][]byte
	for _, doc := range d.base {
		id := DocumentID(doc)
		ids = append(ids, id[:])
	}
	seed := func(method int, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatalf("Marshal: %v", err)
		}
		f.Add(uint8(method), b)
	}
	start, err := reconcile.NewSession(p.g.n.cat.Index()).Start(context.Background())
	if err != nil {
		f.Fatalf("Session.Start: %v", err)
	}
	first, err := start.MarshalBinary()
	if err != nil {
		f.Fatalf("MarshalBinary: %v", err)
	}
	seed(0, &schakelv1.ReconcileRequest{Message: first})
	seed(0, &schakelv1.ReconcileRequest{Message: first[:len(first)/2]})
	seed(1, &schakelv1.FetchDocumentsRequest{Ids: ids})
	seed(1, &schakelv1.FetchDocumentsRequest{Ids: [][]byte{ids[0], ids[1][:31]}})
	seed(2, &schakelv1.DeliverRequest{Id: "urn:uuid:0b7c4bde-2f64-4f1b-9f0a-3c9d7e1f2a11", From: d.reg, To: d.reg, Kind: "referral-grant", Payload: d.fresh[2]})
	seed(3, &schakelv1.GetLogProofRequest{Origin: fuzzLogOrigin, OldSize: 10, NewSize: 42})
	seed(4, &schakelv1.PeerServiceRequestTokenRequest{Assertion: d.fresh[2]})
	f.Fuzz(func(t *testing.T, method uint8, in []byte) {
		pm := int(method) % len(peerMethods)
		req := peerMethods[pm].req()
		if proto.Unmarshal(in, req) != nil {
			return
		}
		p.check(t, pm, req)
	})
}

// TestRefusedBeforeParsing runs the fuzz targets' checks on inputs over each bound, too large to
// seed the fuzzing engine with (it spends its time minimising large inputs): gossiped documents
// and notes over MaxDocumentSize, token requests over maxAssertionSize and fetches of more than
// maxFetchIDs ids are refused without reaching the backend, and member metadata over
// memberlist.MetaMaxSize is refused.
func TestRefusedBeforeParsing(t *testing.T) {
	d := newGossipDocs(t)
	p := newPeerFixture(t, d)
	g := p.g
	g.checkValidation(t, g.n.validateDocument, TopicDocuments, append(bytes.Clone(d.base[3]), make([]byte, fuzzMaxDocumentSize)...), false)
	g.checkValidation(t, g.n.validateNote, TopicCheckpoints, append(bytes.Clone(d.checkpoint), make([]byte, fuzzMaxDocumentSize)...), false)
	p.check(t, 4, &schakelv1.PeerServiceRequestTokenRequest{Assertion: make([]byte, maxAssertionSize+1)})
	id := DocumentID(d.base[0])
	p.check(t, 1, &schakelv1.FetchDocumentsRequest{Ids: slices.Repeat([][]byte{id[:]}, maxFetchIDs+1)})
	fx := newMemberFixture(t)
	huge := append(bytes.Clone(fx.meta), make([]byte, memberlist.MetaMaxSize)...)
	if _, err := (&memberDelegate{}).verify(&memberlist.Node{Name: fx.name, Meta: huge}); err == nil || !strings.Contains(err.Error(), "bytes of metadata") {
		t.Fatalf("verify(%d bytes of metadata) = %v, want refused for its size", len(huge), err)
	}
}

// memberRecord returns the memberlist metadata a node with key k sends: its signed peer record.
func memberRecord(t testing.TB, k p2pcrypto.PrivKey, addrs ...string) ([]byte, *peer.PeerRecord) {
	t.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatalf("IDFromPrivateKey: %v", err)
	}
	info := peer.AddrInfo{ID: id}
	for _, a := range addrs {
		info.Addrs = append(info.Addrs, multiaddr.StringCast(a))
	}
	rec := peer.PeerRecordFromAddrInfo(info)
	e, err := record.Seal(rec, k)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	b, err := e.Marshal()
	if err != nil {
		t.Fatalf("Envelope.Marshal: %v", err)
	}
	return b, rec
}

func sameRecord(a, b *peer.PeerRecord) bool {
	if a.PeerID != b.PeerID || a.Seq != b.Seq || len(a.Addrs) != len(b.Addrs) {
		return false
	}
	for i := range a.Addrs {
		if !a.Addrs[i].Equal(b.Addrs[i]) {
			return false
		}
	}
	return true
}

type memberFixture struct {
	name   string
	meta   []byte
	rec    *peer.PeerRecord
	forged []byte // a record naming the same peer, signed by another key
}

func newMemberFixture(t testing.TB) *memberFixture {
	t.Helper()
	k, _, err := p2pcrypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	meta, rec := memberRecord(t, k, "/ip4/10.0.0.7/tcp/4001", "/ip4/10.0.0.7/udp/4001/quic-v1")
	if len(meta) > memberlist.MetaMaxSize {
		t.Fatalf("a peer record of %d bytes exceeds memberlist's %d", len(meta), memberlist.MetaMaxSize)
	}
	other, _, err := p2pcrypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	forgedRec := peer.PeerRecordFromAddrInfo(peer.AddrInfo{ID: rec.PeerID, Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/192.0.2.66/tcp/4001")}})
	e, err := record.Seal(forgedRec, other)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	forged, err := e.Marshal()
	if err != nil {
		t.Fatalf("Envelope.Marshal: %v", err)
	}
	return &memberFixture{name: rec.PeerID.String(), meta: meta, rec: rec, forged: forged}
}

// TestMemberRecordSignedByAnotherKey: a member's record must be signed by the key of the peer it
// names; one naming a peer but signed by another key would steer dials to addresses the peer
// never announced.
func TestMemberRecordSignedByAnotherKey(t *testing.T) {
	fx := newMemberFixture(t)
	d := &memberDelegate{}
	if _, err := d.verify(&memberlist.Node{Name: fx.name, Meta: fx.meta}); err != nil {
		t.Fatalf("verify(valid record): %v", err)
	}
	if pr, err := d.verify(&memberlist.Node{Name: fx.name, Meta: fx.forged}); err == nil {
		t.Fatalf("verify accepted a record of %s signed by another key, with addresses %v", pr.PeerID, pr.Addrs)
	}
}

// FuzzMemberRecord feeds arbitrary bytes as a memberlist member's metadata, under the name of the
// peer whose record the fixture signed or of another. Properties: no panic; metadata over
// memberlist.MetaMaxSize is refused; what verifies is the signed record itself (same peer, sequence
// number and addresses; a record names a peer only if that peer's key signed it) under that
// peer's name, and it round-trips (Marshal of the envelope gives metadata that verifies to the
// same record).
func FuzzMemberRecord(f *testing.F) {
	fx := newMemberFixture(f)
	other := test.RandPeerIDFatal(f).String()
	f.Add(fx.meta, false)
	f.Add(fx.meta, true)
	f.Add(fx.forged, false)
	f.Add(fx.meta[:len(fx.meta)-1], false)
	f.Add(flip(fx.meta, len(fx.meta)/2), false)
	f.Add([]byte{}, false)
	d := &memberDelegate{}
	f.Fuzz(func(t *testing.T, meta []byte, otherName bool) {
		name := fx.name
		if otherName {
			name = other
		}
		pr, err := d.verify(&memberlist.Node{Name: name, Meta: meta})
		if len(meta) > memberlist.MetaMaxSize && err == nil {
			t.Fatalf("verify accepted %d bytes of metadata, over memberlist's %d", len(meta), memberlist.MetaMaxSize)
		}
		if err != nil {
			return
		}
		if otherName || !sameRecord(pr, fx.rec) {
			t.Fatalf("verify accepted a record nobody signed: %v %v under %s", pr.PeerID, pr.Addrs, name)
		}
		e, rec, err := record.ConsumeEnvelope(meta, peer.PeerRecordEnvelopeDomain)
		if err != nil {
			t.Fatalf("ConsumeEnvelope(verified metadata): %v", err)
		}
		again, err := e.Marshal()
		if err != nil {
			t.Fatalf("Envelope.Marshal: %v", err)
		}
		pr2, err := d.verify(&memberlist.Node{Name: name, Meta: again})
		if err != nil || !sameRecord(pr2, rec.(*peer.PeerRecord)) {
			t.Fatalf("the re-encoded record does not verify to itself: %v", err)
		}
	})
}

// FuzzMemberRecordTampered changes one byte of a member's signed peer record. Property: the
// changed record never verifies.
func FuzzMemberRecordTampered(f *testing.F) {
	fx := newMemberFixture(f)
	d := &memberDelegate{}
	if _, err := d.verify(&memberlist.Node{Name: fx.name, Meta: fx.meta}); err != nil {
		f.Fatalf("verify(valid record): %v", err)
	}
	f.Add(uint16(0), byte(0x0a))
	f.Add(uint16(len(fx.meta)/2), byte('A'))
	f.Add(uint16(len(fx.meta)-1), byte(0))
	f.Fuzz(func(t *testing.T, pos uint16, b byte) {
		in := bytes.Clone(fx.meta)
		in[int(pos)%len(in)] = b
		if bytes.Equal(in, fx.meta) {
			return
		}
		if pr, err := d.verify(&memberlist.Node{Name: fx.name, Meta: in}); err == nil {
			t.Fatalf("tampered peer record verified: byte %d set to %#x gives %v %v", int(pos)%len(in), b, pr.PeerID, pr.Addrs)
		}
	})
}

func flip(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0x01
	return out
}
