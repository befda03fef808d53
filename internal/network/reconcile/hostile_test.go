package reconcile

import (
	"context"
	"errors"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

// tamper changes an honest answer to req. It reports whether it found what it changes; a
// case whose tamper never applies fails, so that every case tests what it names.
type tamper func(req, resp *Message) bool

// entryOf returns, for each range of resp, the index of the request range it answers.
func entryOf(req, resp *Message) []int {
	out := make([]int, len(resp.Ranges))
	i := 0
	for j := range resp.Ranges {
		out[j] = i
		if resp.Ranges[j].Upper == req.Ranges[i].Upper {
			i++
		}
	}
	return out
}

// firstSplit returns the first and last index in resp of a split answering one request range.
func firstSplit(req, resp *Message) (from, to int, ok bool) {
	of := entryOf(req, resp)
	for j := range resp.Ranges {
		if resp.Ranges[j].Upper != req.Ranges[of[j]].Upper {
			for to = j; resp.Ranges[to].Upper != req.Ranges[of[j]].Upper; to++ {
			}
			return j, to, true
		}
	}
	return 0, 0, false
}

// listDiff returns the index of the first ListDiff answer and the request range it answers.
func listDiff(req, resp *Message) (j int, asked *Range, ok bool) {
	of := entryOf(req, resp)
	for j := range resp.Ranges {
		if resp.Ranges[j].Mode == ModeListDiff {
			return j, &req.Ranges[of[j]], true
		}
	}
	return 0, nil, false
}

func asked(req *Message) int {
	n := 0
	for _, r := range req.Ranges {
		if r.Mode != ModeSkip {
			n++
		}
	}
	return n
}

func TestHostileServer(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	all := randItems(rng, 4000, oneYear)
	client, honest := pair(t, all[:3000], all[3000:3300], all[3300:], load)

	tests := []struct {
		name   string
		tamper tamper
		want   error // nil: the session must end incomplete, without error
	}{
		{
			name: "answer stops short",
			tamper: func(req, resp *Message) bool {
				if len(resp.Ranges) < 2 {
					return false
				}
				resp.Ranges = resp.Ranges[:len(resp.Ranges)-1]
				return true
			},
			want: ErrMalformed,
		},
		{
			name: "claims all is equal",
			tamper: func(req, resp *Message) bool {
				if asked(req) < 2 {
					return false
				}
				resp.Ranges = []Range{{Upper: maxKey.item(), Mode: ModeSkip}}
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "sub-range not aligned",
			tamper: func(req, resp *Message) bool {
				from, _, ok := firstSplit(req, resp)
				if !ok {
					return false
				}
				k := resp.Ranges[from].Upper.key()
				l, _ := span(&key{}, &k)
				if l == leafLevel {
					return false
				}
				resp.Ranges[from].Upper = k.prev().item()
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "split without progress",
			tamper: func(req, resp *Message) bool {
				from, to, ok := firstSplit(req, resp)
				if !ok {
					return false
				}
				resp.Ranges[to].Mode, resp.Ranges[to].Items = ModeFingerprint, nil
				resp.Ranges = slices.Delete(resp.Ranges, from, to)
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "sub-range beyond the range asked",
			tamper: func(req, resp *Message) bool {
				_, to, ok := firstSplit(req, resp)
				if !ok || to+1 >= len(resp.Ranges) {
					return false
				}
				resp.Ranges = slices.Delete(resp.Ranges, to, to+1)
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "too many sub-ranges",
			tamper: func(req, resp *Message) bool {
				if len(req.Ranges) != 1 || req.Ranges[0].Mode != ModeFingerprint {
					return false
				}
				resp.Ranges = nil
				for i := range MaxSplit {
					k := maxKey
					copy(k[:5], []byte{0, 0, 0, 0, byte(i)})
					resp.Ranges = append(resp.Ranges, Range{Upper: k.item(), Mode: ModeIdList})
				}
				resp.Ranges = append(resp.Ranges, Range{Upper: maxKey.item(), Mode: ModeIdList})
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "listdiff answers a fingerprint",
			tamper: func(req, resp *Message) bool {
				if len(req.Ranges) != 1 || req.Ranges[0].Mode != ModeFingerprint {
					return false
				}
				resp.Ranges = []Range{{Upper: maxKey.item(), Mode: ModeListDiff, Items: []Item{all[0]}}}
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "lacks beyond the list sent",
			tamper: func(req, resp *Message) bool {
				j, _, ok := listDiff(req, resp)
				if !ok {
					return false
				}
				resp.Ranges[j].Lacks = []int{MaxListItems - 1}
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "lists as missing an item the client sent",
			tamper: func(req, resp *Message) bool {
				j, a, ok := listDiff(req, resp)
				if !ok || len(a.Items) == 0 {
					return false
				}
				r := &resp.Ranges[j]
				r.Items = append(r.Items, a.Items[0])
				slices.SortFunc(r.Items, Item.Compare)
				r.Items = slices.Compact(r.Items)
				r.Lacks = nil
				return true
			},
			want: ErrInconsistent,
		},
		{
			name: "answers a skipped range",
			tamper: func(req, resp *Message) bool {
				of := entryOf(req, resp)
				for j := range resp.Ranges {
					if req.Ranges[of[j]].Mode == ModeSkip {
						resp.Ranges[j].Mode = ModeDeferred
						return true
					}
				}
				return false
			},
			want: ErrInconsistent,
		},
		{
			name: "list longer than the bound",
			tamper: func(req, resp *Message) bool {
				if len(req.Ranges) != 1 {
					return false
				}
				items := make([]Item, MaxListItems+1)
				for i := range items {
					items[i] = Item{Time: uint64(i)}
				}
				resp.Ranges = []Range{{Upper: maxKey.item(), Mode: ModeIdList, Items: items}}
				return true
			},
			want: ErrMalformed,
		},
		{
			name: "item outside its range",
			tamper: func(req, resp *Message) bool {
				from, _, ok := firstSplit(req, resp)
				if !ok || from+1 >= len(resp.Ranges) {
					return false
				}
				// The first sub-range's items cannot reach past its own upper bound.
				up := resp.Ranges[from].Upper.key()
				resp.Ranges[from].Mode = ModeIdList
				resp.Ranges[from].Fingerprint = Fingerprint{}
				resp.Ranges[from].Items = []Item{up.next().item()}
				return true
			},
			want: ErrMalformed,
		},
		{
			name: "defers forever",
			tamper: func(req, resp *Message) bool {
				of := entryOf(req, resp)
				var out []Range
				for j, r := range resp.Ranges {
					if req.Ranges[of[j]].Mode == ModeSkip {
						out = append(out, r)
					} else if r.Upper == req.Ranges[of[j]].Upper {
						out = append(out, Range{Upper: r.Upper, Mode: ModeDeferred})
					}
				}
				resp.Ranges = out
				return true
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			applied := false
			srv := func(ctx context.Context, req *Message) (*Message, error) {
				resp, err := honest.Respond(ctx, req)
				if err == nil && tc.tamper(req, resp) {
					applied = true
				}
				return resp, err
			}
			o, err := drive(t.Context(), client, srv, direct)
			if !applied {
				t.Fatalf("tamper never applied (session: %v)", err)
			}
			if tc.want == nil {
				if err != nil || o.complete || o.rounds > MaxRounds {
					t.Fatalf("session = %v, complete=%v after %d rounds; want incomplete after at most %d",
						err, o.complete, o.rounds, MaxRounds)
				}
				return
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tc.want) {
				t.Fatalf("session error = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestEndlessSplitsEnd plays a server that answers every range with a consistent split in two,
// forever: the session must stop at its bounds, not loop.
func TestEndlessSplitsEnd(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	client := openIndex(t)
	load(t, client, randItems(rng, 2000, oneSecond))
	srv := func(ctx context.Context, req *Message) (*Message, error) {
		var out []Range
		var lo key
		for _, r := range req.Ranges {
			hi := r.Upper.key()
			if r.Mode == ModeSkip {
				out = append(out, Range{Upper: r.Upper, Mode: ModeSkip})
			} else if mid, ok := halve(lo, hi); ok {
				out = append(out,
					Range{Upper: mid.item(), Mode: ModeFingerprint, Fingerprint: Fingerprint{1}},
					Range{Upper: r.Upper, Mode: ModeFingerprint, Fingerprint: Fingerprint{2}})
			} else {
				out = append(out, Range{Upper: r.Upper, Mode: ModeDeferred})
			}
			if hi != maxKey {
				lo = hi.next()
			}
		}
		return &Message{Ranges: out}, nil
	}
	o, err := drive(t.Context(), client, srv, wire)
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	if o.complete || o.rounds > MaxRounds {
		t.Fatalf("complete=%v after %d rounds, want incomplete after at most %d", o.complete, o.rounds, MaxRounds)
	}
	t.Logf("ended after %d rounds, %d bytes", o.rounds, o.bytes)
}

// halve returns the end of the first half of the aligned range [lo, hi], keeping both halves
// aligned.
func halve(lo, hi key) (key, bool) {
	l, _ := span(&lo, &hi)
	from, to := prefixLen[l], keySize
	if l < leafLevel {
		to = prefixLen[l+1]
	}
	a := new(big.Int).SetBytes(lo[from:to])
	b := new(big.Int).SetBytes(hi[from:to])
	if a.Cmp(b) == 0 {
		return key{}, false
	}
	mid := hi
	a.Add(a, b).Rsh(a, 1).FillBytes(mid[from:to])
	for i := to; i < keySize; i++ {
		mid[i] = 0xff
	}
	return mid, true
}
