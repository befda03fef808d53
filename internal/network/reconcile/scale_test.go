package reconcile

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestBytesGrowWithDifferencesNotSize checks the protocol's cost on 100,000 items: in sync, one
// round trip of a few dozen bytes; d differences, bytes that grow like d·log n, far below the
// 40·n = 4 MB that sending the ids would take.
func TestBytesGrowWithDifferencesNotSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two indexes of 100,000 items")
	}
	const n = 100_000
	rng := rand.New(rand.NewPCG(11, 12))
	all := randItems(rng, n+1000, oneYear)
	common, extras := all[:n], all[n:]
	client, srv := pair(t, common, nil, nil, load)
	log2n := math.Log2(n)
	tests := []struct {
		name string
		d    int // half of them missing at the client, half extra
		// maxBytes bounds both directions together.
		maxBytes  int
		maxRounds int
	}{
		{name: "in sync", d: 0, maxBytes: 64, maxRounds: 1},
		// About 850 bytes a difference: each of the log_8 n levels costs some 8 fingerprints.
		{name: "d=10", d: 10, maxBytes: 12 << 10, maxRounds: 8},
		// The upper levels are shared between differences, so the cost per difference falls:
		// about 400 bytes, or 24·log2 n.
		{name: "d=1000", d: 1000, maxBytes: int(32 * 1000 * log2n), maxRounds: 10},
	}
	var onlyClient, onlyServ []Item
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Grow the differences of the previous case to d.
			c, s := extras[len(onlyClient):tc.d/2], extras[500+len(onlyServ):500+tc.d-tc.d/2]
			addItems(t, client, c)
			addItems(t, srv, s)
			onlyClient, onlyServ = slices.Concat(onlyClient, c), slices.Concat(onlyServ, s)

			o, err := reconcileWith(t.Context(), client, srv.Respond)
			if err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if !o.complete || !slices.Equal(o.missing, minus(onlyServ, nil)) || !slices.Equal(o.extra, minus(onlyClient, nil)) {
				t.Fatalf("complete=%v missing=%d extra=%d, want true %d %d",
					o.complete, len(o.missing), len(o.extra), len(onlyServ), len(onlyClient))
			}
			t.Logf("n=%d d=%d: %d round trips, %d bytes (%.0f a difference, %.1f·log2 n), largest message %d",
				n, tc.d, o.rounds, o.bytes, float64(o.bytes)/float64(max(tc.d, 1)),
				float64(o.bytes)/float64(max(tc.d, 1))/log2n, o.maxMessage)
			if o.bytes > tc.maxBytes {
				t.Errorf("exchanged %d bytes, want at most %d", o.bytes, tc.maxBytes)
			}
			if o.rounds > tc.maxRounds {
				t.Errorf("took %d round trips, want at most %d", o.rounds, tc.maxRounds)
			}
		})
	}
}
