package network

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"

	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/store"
)

func TestHeldQueueBounds(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	q := newHeldQueue(func() time.Time { return now })
	for i := range maxHeld + 10 {
		q.add([]byte(fmt.Sprint("doc ", i)))
		now = now.Add(time.Millisecond)
	}
	if q.len() != maxHeld {
		t.Fatalf("held %d, want the bound %d", q.len(), maxHeld)
	}
	// The oldest went first.
	for _, d := range q.snapshot() {
		if string(d) == "doc 0" {
			t.Fatal("the oldest document was kept past the bound")
		}
	}
	q.add([]byte("doc 5000")) // already held: no change
	if q.len() != maxHeld {
		t.Fatalf("a duplicate changed the queue: %d", q.len())
	}
	now = now.Add(heldFor + time.Second)
	q.add([]byte("fresh"))
	if q.len() != 1 {
		t.Fatalf("expired documents kept: %d held", q.len())
	}
	q.remove([]byte("fresh"))
	if q.len() != 0 {
		t.Fatal("remove did not remove")
	}
}

func TestGaterDeniesAndBoundsNewcomers(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := newGater(func() time.Time { return now })
	admitted := map[peer.ID]bool{}
	g.admitted = func(p peer.ID) bool { return admitted[p] }
	var strangers []peer.ID
	for range maxNewcomers + 1 {
		strangers = append(strangers, test.RandPeerIDFatal(t))
	}
	for i, p := range strangers[:maxNewcomers] {
		if !g.InterceptSecured(network.DirInbound, p, nil) {
			t.Fatalf("newcomer %d refused below the bound", i)
		}
	}
	if g.InterceptSecured(network.DirInbound, strangers[maxNewcomers], nil) {
		t.Fatal("a newcomer beyond the bound was let in")
	}
	friend := test.RandPeerIDFatal(t)
	admitted[friend] = true
	if !g.InterceptSecured(network.DirInbound, friend, nil) {
		t.Fatal("an admitted peer was refused while newcomers are at the bound")
	}
	g.closed(strangers[0])
	if !g.InterceptSecured(network.DirInbound, strangers[maxNewcomers], nil) {
		t.Fatal("a slot freed by a closed newcomer was not reused")
	}
	g.deny(strangers[1], now.Add(time.Minute))
	if g.InterceptSecured(network.DirInbound, strangers[1], nil) || g.InterceptPeerDial(strangers[1]) {
		t.Fatal("a denied peer was let in or dialled")
	}
	now = now.Add(2 * time.Minute)
	if !g.InterceptPeerDial(strangers[1]) {
		t.Fatal("the denial did not expire")
	}
}

func TestCatalogBindingsAndFreshDocuments(t *testing.T) {
	ctx := t.Context()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer db.Close()
	cat, err := NewCatalog(db)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	reg, err := did.New(did.Config{OnChange: cat.OnChange}, db)
	if err != nil {
		t.Fatalf("did.New: %v", err)
	}
	sig, enc, err := did.GenerateKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	t0 := time.Now().Add(-time.Hour)
	genesis, id, err := did.NewGenesis(sig, enc.Public(), t0)
	if err != nil {
		t.Fatalf("NewGenesis: %v", err)
	}
	// Stored as received from a peer: not announced again.
	st, _, err := reg.AddEvent(fromPeer(ctx), genesis)
	if err != nil {
		t.Fatalf("AddEvent: %v", err)
	}
	select {
	case <-cat.fresh:
		t.Fatal("a document received from a peer was queued for gossip")
	default:
	}
	p1, p2 := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	d1, _, err := did.NewDocument(sig, st, did.Binding{PeerIDs: []string{p1.String()}}, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("NewDocument: %v", err)
	}
	if _, _, err := reg.PutDocument(ctx, d1); err != nil {
		t.Fatalf("PutDocument: %v", err)
	}
	// Made here: queued for gossip once committed.
	select {
	case got := <-cat.fresh:
		if !bytes.Equal(got, d1) {
			t.Fatal("another document was queued")
		}
	default:
		t.Fatal("a document made here was not queued for gossip")
	}
	if orgs, _ := cat.PeerOrganizations(ctx, p1); len(orgs) != 1 || orgs[0] != id {
		t.Fatalf("PeerOrganizations(p1) = %v", orgs)
	}
	// A newer document moves the binding to another peer; the old document leaves the catalog.
	d2, _, _ := did.NewDocument(sig, st, did.Binding{PeerIDs: []string{p2.String()}}, t0.Add(2*time.Minute))
	if _, _, err := reg.PutDocument(ctx, d2); err != nil {
		t.Fatalf("PutDocument: %v", err)
	}
	if orgs, _ := cat.PeerOrganizations(ctx, p1); len(orgs) != 0 {
		t.Fatalf("the replaced document still binds p1: %v", orgs)
	}
	if orgs, _ := cat.PeerOrganizations(ctx, p2); len(orgs) != 1 {
		t.Fatalf("PeerOrganizations(p2) = %v", orgs)
	}
	docs, err := cat.Get(ctx, [][32]byte{DocumentID(genesis), DocumentID(d1), DocumentID(d2)})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(docs[0], genesis) || docs[1] != nil || !bytes.Equal(docs[2], d2) {
		t.Fatal("Get does not return exactly the held documents")
	}
	if n, _ := cat.Index().Count(ctx); n != 2 {
		t.Fatalf("reconciliation index holds %d documents, want 2", n)
	}
}

func TestSlogWriterLevels(t *testing.T) {
	var b bytes.Buffer
	w := &slogWriter{l: slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	fmt.Fprintln(w, "[WARN] memberlist: Refuting a suspect message")
	fmt.Fprintln(w, "[DEBUG] memberlist: Stream connection")
	out := b.String()
	if !strings.Contains(out, `level=WARN msg="Refuting a suspect message"`) || !strings.Contains(out, `level=DEBUG msg="Stream connection"`) {
		t.Fatalf("slog output:\n%s", out)
	}
}

func TestJitter(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Second); d < 500*time.Millisecond || d >= 1500*time.Millisecond {
			t.Fatalf("jitter(1s) = %s", d)
		}
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("hello: %w", connect.NewError(connect.CodeUnavailable, errors.New("failed to negotiate protocol: protocols not supported"))), true},
		{fmt.Errorf("hello: %w", connect.NewError(connect.CodeDeadlineExceeded, errors.New("timeout"))), true},
		{fmt.Errorf("hello: %w", connect.NewError(connect.CodePermissionDenied, errors.New("no organisation credential"))), false},
		{fmt.Errorf("hello: %w", connect.NewError(connect.CodeInvalidArgument, errors.New("300 documents"))), false},
		{errors.New("hello: the DID document does not verify"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestStreamLimited(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{connect.NewError(connect.CodeUnavailable, errors.New("protocol:/schakel/rpc/1.0.0.peer:12D3: cannot reserve outbound stream: resource limit exceeded")), true},
		{connect.NewError(connect.CodeUnavailable, &network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: true}), true},
		{connect.NewError(connect.CodeUnavailable, errors.New("stream reset (remote): code: 0x0: transport error: stream reset by remote, error code: 0")), false},
		{connect.NewError(connect.CodeDeadlineExceeded, errors.New("context deadline exceeded")), false},
	} {
		if got := streamLimited(tc.err); got != tc.want {
			t.Errorf("streamLimited(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
