package reconcile

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// FuzzParseMessage checks that ParseMessage never panics, refuses only with ErrMalformed, and
// that whatever it accepts encodes back to the same bytes: the encoding is canonical.
func FuzzParseMessage(f *testing.F) {
	for _, v := range readVectors(f) {
		f.Add(v.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseMessage: %v, want ErrMalformed", err)
			}
			return
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of an accepted message: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("MarshalBinary(ParseMessage(%x)) = %x", b, out)
		}
	})
}

// FuzzRespond checks that the server answers any request it accepts with a message within the
// bounds that a client which sent that request takes as consistent.
func FuzzRespond(f *testing.F) {
	rng := rand.New(rand.NewPCG(31, 32))
	all := slices.Concat(randItems(rng, 300, oneSecond), randItems(rng, 300, oneYear))
	client, srv := pair(f, all[:400], all[400:450], all[450:], addItems)
	for _, v := range readVectors(f) {
		f.Add(v.b)
	}
	// The requests of a real session.
	_, err := drive(context.Background(), client, func(ctx context.Context, req *Message) (*Message, error) {
		if b, err := req.MarshalBinary(); err == nil {
			f.Add(b)
		}
		return srv.Respond(ctx, req)
	}, wire)
	if err != nil {
		f.Fatalf("session: %v", err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseMessage(b)
		if err != nil {
			return
		}
		resp, err := srv.Respond(t.Context(), req)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Respond: %v", err)
			}
			return
		}
		if _, err := resp.MarshalBinary(); err != nil {
			t.Fatalf("MarshalBinary of the answer: %v", err)
		}
		s := sessionAwaiting(client, req)
		if _, _, err := s.Next(t.Context(), resp); err != nil {
			t.Fatalf("Next on the honest answer: %v", err)
		}
	})
}

// sessionAwaiting returns a session of idx that has sent req.
func sessionAwaiting(idx *Index, req *Message) *Session {
	s := &Session{idx: idx, state: stateWaiting, req: req}
	var lo key
	for _, r := range req.Ranges {
		hi := r.Upper.key()
		if r.Mode != ModeSkip {
			s.sent = append(s.sent, pend{lo: lo, hi: hi, items: r.Items})
		}
		if hi != maxKey {
			lo = hi.next()
		}
	}
	return s
}
