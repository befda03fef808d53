package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/api"
	"github.com/schakel-health/schakel/internal/authz"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// Load generation: `schakel bench` drives a custodian in another process with token requests
// made beforehand, so that what it measures is the custodian and the transport, not the
// requester's signing. PrepareTokenRequests, SendTokenRequest and VerifyReceipt are RequestToken
// split at the network.

// PrepareTokenRequests builds one signed, encrypted assertion per BSN for req (whose Bsn is
// ignored), as RequestToken would send them. Each has its own jti and expires in five minutes.
func (n *Node) PrepareTokenRequests(ctx context.Context, req *schakelv1.RequestTokenRequest, bsns []string) ([][]byte, error) {
	out := make([][]byte, len(bsns))
	for i, bsn := range bsns {
		r := proto.CloneOf(req)
		r.Bsn = bsn
		_, jwe, err := n.newAssertion(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("prepare token request %d: %w", i, err)
		}
		out[i] = jwe
	}
	return out, nil
}

// SendTokenRequest sends one prepared assertion to the node hosting custodian over the peer RPC
// and returns the custodian's answer. Unlike RequestToken it neither verifies the receipt nor logs
// it.
func (n *Node) SendTokenRequest(ctx context.Context, custodian string, assertion []byte) (*schakelv1.PeerServiceRequestTokenResponse, error) {
	answer, err := n.net.RequestToken(ctx, custodian, &schakelv1.PeerServiceRequestTokenRequest{Assertion: assertion})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return answer, nil
}

// VerifyReceipt checks a custodian's receipt as RequestToken does: signed by a key the custodian
// held at the receipt's time, as this node knows it. The caller compares its claims with the
// request it sent.
func (n *Node) VerifyReceipt(ctx context.Context, receipt string) (*authz.Receipt, error) {
	return authz.VerifyReceipt(ctx, receipt, authz.RegistryResolver(n.dids))
}

// AccessCrypto is the cryptography one token decision cannot avoid — a P-256 ECDH-ES JWE
// decrypt, an EdDSA verify and two EdDSA signs (the token and the receipt) — with nothing else:
// the limit beside a measured decision rate.
type AccessCrypto struct {
	sig, enc *crypto.PrivateKey
	payload  []byte
	jwe      []byte
}

// NewAccessCrypto makes the keys and a sealed assertion-sized message.
func NewAccessCrypto() (*AccessCrypto, error) {
	sig, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		return nil, err
	}
	enc, err := crypto.GenerateKey(crypto.P256, crypto.UseEnc)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 600)
	jws, err := crypto.Sign(sig, payload, crypto.Header{Type: "JWT", KID: "k"})
	if err != nil {
		return nil, err
	}
	jwe, err := crypto.Encrypt(jws, enc.Public())
	if err != nil {
		return nil, err
	}
	return &AccessCrypto{sig: sig, enc: enc, payload: payload, jwe: jwe}, nil
}

// Once does one decision's cryptography.
func (a *AccessCrypto) Once() error {
	pt, err := crypto.Decrypt(a.jwe, a.enc)
	if err != nil {
		return err
	}
	if _, _, err := crypto.Verify(pt, a.sig.Public()); err != nil {
		return err
	}
	for range 2 {
		if _, err := crypto.Sign(a.sig, a.payload, crypto.Header{Type: "JWT", KID: "k"}); err != nil {
			return err
		}
	}
	return nil
}

// Rate runs Once on workers goroutines for d and returns how many per second were done.
func (a *AccessCrypto) Rate(workers int, d time.Duration) (float64, error) {
	var done atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := a.Once(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}
