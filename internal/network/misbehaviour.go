package network

import (
	"errors"
	"io"
	"net/http"
)

// Misbehaviour that no honest node shows gets the peer refused (disconnected and denied for
// DenyFor), admitted or not: work spent on it would only be spent again at its next call. What an
// honest node may do when its configuration differs from this node's — send a document this node
// does not accept (another trust anchor, another size bound), or a document of a newer type — is
// not misbehaviour: such documents are refused one by one and, over gossip, scored by gossipsub.

// errBrokeProtocol marks a reconciliation answer or fetched batch that no honest peer sends: one
// that does not parse, does not fit the question asked, or carries documents that were not asked
// for. Sync refuses the peer that sent it.
var errBrokeProtocol = errors.New("peer broke the reconciliation protocol")

// maxRPCBody bounds the body of one peer RPC request: one gRPC message of at most maxRPCMessage
// with its envelope, and room for compression that does not shrink. connect alone would refuse a
// larger message only after reading and discarding all of it, whatever size its envelope claims.
const maxRPCBody = maxRPCMessage + 64<<10

// bounded serves h and refuses the calling peer once a request body passes maxRPCBody.
func (n *Network) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := caller(r.Context())
		r.Body = &boundedBody{ReadCloser: r.Body, left: maxRPCBody, over: func() {
			go n.refuse(p, "peer RPC request body over the size bound")
		}}
		h.ServeHTTP(w, r)
	})
}

// errBodyTooLarge ends the reading of a request body past maxRPCBody.
var errBodyTooLarge = errors.New("request body over the size bound")

// boundedBody reads at most left bytes of a request body; at the first read past them it calls
// over, once, and fails, then and at every later read.
type boundedBody struct {
	io.ReadCloser
	left   int64
	over   func()
	failed bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.failed {
		return 0, errBodyTooLarge
	}
	if b.left <= 0 {
		// At the bound: only a body that has more is over it.
		var one [1]byte
		if n, err := b.ReadCloser.Read(one[:]); n == 0 {
			return 0, err
		}
		b.failed = true
		b.over()
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
