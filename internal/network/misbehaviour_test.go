package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	p2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/schakel-health/schakel/internal/store"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return nil }

// TestBoundedBody reads request bodies around the bound: up to it they read whole; past it the
// read fails, the sender is reported once, and not much more than the bound is read.
func TestBoundedBody(t *testing.T) {
	tests := []struct {
		name string
		size int64
		over bool
	}{
		{name: "empty", size: 0},
		{name: "one byte below the bound", size: maxRPCBody - 1},
		{name: "at the bound", size: maxRPCBody},
		{name: "one byte over the bound", size: maxRPCBody + 1, over: true},
		{name: "many MiB", size: 64 << 20, over: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{r: io.LimitReader(zeros{}, tc.size)}
			calls := 0
			b := &boundedBody{ReadCloser: src, left: maxRPCBody, over: func() { calls++ }}
			got, err := io.Copy(io.Discard, b)
			if tc.over {
				if !errors.Is(err, errBodyTooLarge) {
					t.Fatalf("Copy: %v, want %v", err, errBodyTooLarge)
				}
				// Reading on after the failure is refused again without reading more.
				if _, err := b.Read(make([]byte, 1)); !errors.Is(err, errBodyTooLarge) {
					t.Fatalf("second Read: %v", err)
				}
				if calls != 1 {
					t.Fatalf("over called %d times, want once", calls)
				}
				if src.n > maxRPCBody+32<<10 {
					t.Fatalf("read %d bytes of a body over the bound of %d", src.n, maxRPCBody)
				}
				return
			}
			if err != nil || got != tc.size || calls != 0 {
				t.Fatalf("Copy = %d, %v (over called %d times); want %d bytes", got, err, calls, tc.size)
			}
		})
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// introducer is a Backend that admits every peer it is introduced to, after wait (ctx allowing).
type introducer struct {
	wait time.Duration

	mu       sync.Mutex
	admitted map[peer.ID]bool
}

func (b *introducer) Introduce(ctx context.Context, p peer.ID, _ [][]byte) (string, error) {
	select {
	case <-time.After(b.wait):
	case <-ctx.Done():
		return "", fmt.Errorf("%w: %w", ErrNotAdmitted, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.admitted == nil {
		b.admitted = map[peer.ID]bool{}
	}
	b.admitted[p] = true
	return "did:example:org", nil
}

func (b *introducer) Admitted(_ context.Context, p peer.ID) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "did:example:org", b.admitted[p]
}

func (*introducer) Accept(context.Context, []byte) (bool, error) { return false, nil }
func (*introducer) AcceptMany(_ context.Context, docs [][]byte) ([]bool, []error) {
	return make([]bool, len(docs)), make([]error, len(docs))
}
func (*introducer) Introduction(context.Context) ([][]byte, error) { return nil, nil }
func (*introducer) RequestToken(context.Context, peer.ID, *schakelv1.PeerServiceRequestTokenRequest) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	return nil, errors.New("not served")
}
func (*introducer) Deliver(context.Context, peer.ID, *schakelv1.DeliverRequest) (bool, error) {
	return false, errors.New("not served")
}
func (*introducer) LogProof(context.Context, string, int64, int64) ([]byte, [][]byte, error) {
	return nil, nil, errors.New("not served")
}
func (*introducer) AcceptNote(context.Context, peer.ID, []byte) error { return nil }

// startTestNetwork starts a Network on loopback over b.
func startTestNetwork(t *testing.T, b Backend) *Network {
	t.Helper()
	db, err := store.Open(store.Config{InMemory: true})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	cat, err := NewCatalog(db)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	key, _, err := p2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	n, err := New(Config{Key: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, BootstrapTimeout: time.Second, SyncInterval: time.Hour}, cat, b)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestBusyIntroductionNotHeldAgainstPeer: a node that cannot store what a peer presents within
// the bootstrap timeout (its store busy) closes the connection without refusing the peer, which
// may come back at once and is admitted when the node keeps up again.
func TestBusyIntroductionNotHeldAgainstPeer(t *testing.T) {
	busy := &introducer{wait: time.Hour}
	a := startTestNetwork(t, busy)
	b := startTestNetwork(t, &introducer{})
	if err := a.Connect(t.Context(), b.Addrs()[0]); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.host.Network().Connectedness(b.ID()) == network.Connected {
		if time.Now().After(deadline) {
			t.Fatal("the busy node kept the connection past its bootstrap timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.gater.isDenied(b.ID()) {
		t.Fatal("the busy node refused the peer for its own slowness")
	}
	busy.mu.Lock()
	busy.wait = 0
	busy.mu.Unlock()
	if err := a.Connect(t.Context(), b.Addrs()[0]); err != nil {
		t.Fatalf("Connect again: %v", err)
	}
	for !a.isAdmitted(b.ID()) {
		if time.Now().After(deadline) {
			t.Fatal("the peer was not admitted once the node kept up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
