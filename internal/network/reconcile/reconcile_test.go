package reconcile

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestReconcileConverges(t *testing.T) {
	tests := []struct {
		name                 string
		common               int
		onlyClient, onlyServ int
		span                 timeSpan
		// wantRounds, when not zero, is the exact number of round trips.
		wantRounds int
		// maxBytes, when not zero, bounds the bytes of both directions together.
		maxBytes int
	}{
		{name: "both empty", span: oneYear, wantRounds: 1, maxBytes: 64},
		{name: "identical", common: 3000, span: oneYear, wantRounds: 1, maxBytes: 64},
		{name: "identical small", common: 5, span: oneYear, wantRounds: 1},
		{name: "client empty", onlyServ: 700, span: oneYear},
		{name: "server empty", onlyClient: 700, span: oneYear},
		{name: "one missing", common: 3000, onlyServ: 1, span: oneYear},
		{name: "one extra", common: 3000, onlyClient: 1, span: oneYear},
		{name: "small sets differ", common: 3, onlyClient: 2, onlyServ: 2, span: oneYear},
		{name: "ten each way", common: 5000, onlyClient: 10, onlyServ: 10, span: oneYear},
		{name: "hundreds each way", common: 5000, onlyClient: 300, onlyServ: 300, span: oneYear},
		{name: "bulk publish in one second", common: 5000, onlyClient: 40, onlyServ: 40, span: oneSecond},
		{name: "bulk publish missing", common: 2000, onlyServ: 3000, span: oneSecond},
		{name: "spread over years", common: 5000, onlyClient: 25, onlyServ: 25, span: years},
		{name: "disjoint", onlyClient: 1500, onlyServ: 1500, span: years},
		{name: "client far behind", common: 1000, onlyServ: 30000, span: oneYear},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			all := randItems(rng, tc.common+tc.onlyClient+tc.onlyServ, tc.span)
			common := all[:tc.common]
			onlyClient := all[tc.common : tc.common+tc.onlyClient]
			onlyServ := all[tc.common+tc.onlyClient:]
			client, srv := pair(t, common, onlyClient, onlyServ, load)
			o, err := reconcileWith(t.Context(), client, srv.Respond)
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if !o.complete {
				t.Fatalf("Complete() = false after %d rounds", o.rounds)
			}
			if want := minus(onlyServ, nil); !slices.Equal(o.missing, want) {
				t.Fatalf("Missing() has %d items, want the %d the server alone holds", len(o.missing), len(want))
			}
			if want := minus(onlyClient, nil); !slices.Equal(o.extra, want) {
				t.Fatalf("Extra() has %d items, want the %d the client alone holds", len(o.extra), len(want))
			}
			if tc.wantRounds != 0 && o.rounds != tc.wantRounds {
				t.Fatalf("took %d round trips, want %d", o.rounds, tc.wantRounds)
			}
			if tc.maxBytes != 0 && o.bytes > tc.maxBytes {
				t.Fatalf("exchanged %d bytes, want at most %d", o.bytes, tc.maxBytes)
			}
			t.Logf("%d rounds, %d bytes, largest message %d bytes", o.rounds, o.bytes, o.maxMessage)
		})
	}
}

// TestDeferredRangesAreAskedAgain has a client far behind: the server's answers hit
// MaxMessageSize, defer what does not fit, and the client asks for it again until it has all.
func TestDeferredRangesAreAskedAgain(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	items := randItems(rng, 20000, oneYear)
	client, srv := pair(t, nil, nil, items, load)
	deferred := 0
	count := func(ctx context.Context, req *Message) (*Message, error) {
		resp, err := srv.Respond(ctx, req)
		if err == nil {
			for _, r := range resp.Ranges {
				if r.Mode == ModeDeferred {
					deferred++
				}
			}
		}
		return resp, err
	}
	o, err := reconcileWith(t.Context(), client, count)
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if deferred == 0 {
		t.Fatalf("no range was deferred; the test does not reach the size budget")
	}
	if !o.complete || !slices.Equal(o.missing, minus(items, nil)) {
		t.Fatalf("complete=%v, missing %d items, want all %d", o.complete, len(o.missing), len(items))
	}
	if o.maxMessage > MaxMessageSize {
		t.Fatalf("largest message %d bytes, above MaxMessageSize", o.maxMessage)
	}
	t.Logf("%d rounds, %d ranges deferred, largest message %d bytes", o.rounds, deferred, o.maxMessage)
}
