package reconcile

import (
	"context"
	"fmt"

	"github.com/schakel-health/schakel/internal/store"
)

// Server-side choices. They shape answers, not the protocol: a client accepts any answer within
// the protocol's bounds, so they can change without a new Version.
const (
	// splitFanout is the number of sub-ranges, by item count, a differing range is split into.
	// Fewer means fewer bytes per difference (about B/ln B fingerprints per factor e of the
	// set) but more round trips (log_B n). Measured with 10 differences among 100,000 items:
	// B=4 takes 8.2 KiB in 8 round trips, B=8 8.5 KiB in 6, B=16 12.4 KiB in 5.
	splitFanout = 8
	// listThreshold is the largest count for which the server answers a differing fingerprint
	// with its items rather than a split; a range this small costs less listed than split.
	listThreshold = 4
	// listDiffMax is the largest count for which the server answers a client's list with the
	// difference rather than a split. It is large so that a node far behind fetches ids in
	// few rounds; such an answer stays under 41 KiB.
	listDiffMax = 1024
	// expandFactor: a split descends into a child only when it holds more than expandFactor
	// shares (total/splitFanout). With 1, a child just above one share would become two
	// sub-ranges, one of them tiny; measured on 100,000 items, 2 saves 3 to 7% of the bytes.
	expandFactor = 2
	// maxExpand bounds how many nodes one split descends into. At least the number of levels,
	// so that a range whose items all sit in one leaf bucket can always be split; small enough
	// that a split stays below MaxSplit sub-ranges (at most 2·splitFanout+1 by count, plus 3
	// per descent).
	maxExpand = 8
	// maxRespondReads bounds the rows and items one Respond reads; ranges left when it is
	// spent are deferred to the next round.
	maxRespondReads = 1 << 18
)

// Respond answers one request of a client's Session from the index as it is now, in one read
// transaction; the server keeps no state between requests. Every range in question gets an
// answer: ModeSkip when the server's items equal the client's, the difference for a client's
// list, the server's items for a small range, or a split into sub-ranges with their
// fingerprints. Ranges that would take the answer above MaxMessageSize, or come after the
// server's read budget is spent, are answered ModeDeferred; the read budget never defers the
// first range in question, and the size budget leaves it room unless the request itself is
// near MaxMessageSize, so a Session always makes progress. A request that breaks the
// protocol's rules fails with ErrMalformed.
func (x *Index) Respond(ctx context.Context, req *Message) (*Message, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	var out *Message
	err := x.db.View(ctx, func(tx *store.Txn) error {
		var err error
		out, err = respond(&reader{tx: tx}, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: respond: %w", err)
	}
	return out, nil
}

// checkRequest enforces the rules of requests on top of Message.check: only skip, fingerprint
// and idlist ranges, no two skips in a row (they would be one), at most MaxRanges in question,
// each aligned with the index hierarchy.
func checkRequest(req *Message) error {
	if err := req.check(); err != nil {
		return err
	}
	asked := 0
	var lo key
	for i := range req.Ranges {
		r := &req.Ranges[i]
		hi := r.Upper.key()
		switch r.Mode {
		case ModeSkip:
			if i > 0 && req.Ranges[i-1].Mode == ModeSkip {
				return fmt.Errorf("reconcile: request range %d: two skips in a row: %w", i, ErrMalformed)
			}
		case ModeFingerprint, ModeIdList:
			if asked++; asked > MaxRanges {
				return fmt.Errorf("reconcile: request asks about more than %d ranges: %w", MaxRanges, ErrMalformed)
			}
			if _, ok := span(&lo, &hi); !ok {
				return fmt.Errorf("reconcile: request range %d not aligned with the index: %w", i, ErrMalformed)
			}
		default:
			return fmt.Errorf("reconcile: request range %d: %s in a request: %w", i, r.Mode, ErrMalformed)
		}
		if hi != maxKey {
			lo = hi.next()
		}
	}
	return nil
}

// respond builds the answer to a checked request. It keeps room for a skip or deferred answer
// to every range not yet answered (their bounds cost what they cost in the request), so that
// deferring the rest always fits.
func respond(r *reader, req *Message) (*Message, error) {
	reserve := 0
	var prev *key
	for i := range req.Ranges {
		hi := req.Ranges[i].Upper.key()
		reserve += boundSize(prev, &hi) + 1
		prev = &hi
	}
	out := &Message{Ranges: make([]Range, 0, len(req.Ranges))}
	used, asked := 1, 0
	prev = nil
	var lo key
	for i := range req.Ranges {
		e := &req.Ranges[i]
		hi := e.Upper.key()
		reserve -= boundSize(prev, &hi) + 1
		ans := []Range{{Upper: e.Upper, Mode: ModeSkip}}
		if e.Mode != ModeSkip {
			ans[0].Mode = ModeDeferred
			if asked == 0 || r.reads < maxRespondReads {
				a, err := answer(r, &lo, &hi, e)
				if err != nil {
					return nil, err
				}
				rest := len(req.Ranges) - i - 1
				if used+answerSize(prev, &lo, a)+reserve <= MaxMessageSize && len(out.Ranges)+len(a)+rest <= MaxEntries {
					ans = a
				}
			}
			asked++
		}
		used += answerSize(prev, &lo, ans)
		out.Ranges = append(out.Ranges, ans...)
		prev = &hi
		if hi != maxKey {
			lo = hi.next()
		}
	}
	return out, nil
}

// answerSize returns the encoded size of the ranges a, which start at lo after prev.
func answerSize(prev, lo *key, a []Range) int {
	n := 0
	l := *lo
	for i := range a {
		n += rangeSize(prev, &l, &a[i])
		hi := a[i].Upper.key()
		prev = &hi
		if hi != maxKey {
			l = hi.next()
		}
	}
	return n
}

// answer answers the request range e covering [lo, hi].
func answer(r *reader, lo, hi *key, e *Range) ([]Range, error) {
	a, err := r.summary(lo, hi)
	if err != nil {
		return nil, err
	}
	switch e.Mode {
	case ModeFingerprint:
		if a.fingerprint() == e.Fingerprint {
			return []Range{{Upper: e.Upper, Mode: ModeSkip}}, nil
		}
		if a.count <= listThreshold {
			items, err := r.itemList(lo, hi)
			return []Range{{Upper: e.Upper, Mode: ModeIdList, Items: items}}, err
		}
	case ModeIdList:
		if a.count <= listDiffMax {
			items, err := r.itemList(lo, hi)
			if err != nil {
				return nil, err
			}
			missing, lacks := diff(items, e.Items)
			if len(missing) == 0 && len(lacks) == 0 {
				return []Range{{Upper: e.Upper, Mode: ModeSkip}}, nil
			}
			return []Range{{Upper: e.Upper, Mode: ModeListDiff, Items: missing, Lacks: lacks}}, nil
		}
	}
	return split(r, lo, hi, a.count)
}

// diff returns the items of have that want lacks, and the positions in want of the items have
// lacks. Both lists are increasing.
func diff(have, want []Item) (missing []Item, lacks []int) {
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		switch {
		case j == len(want) || (i < len(have) && have[i].Compare(want[j]) < 0):
			missing = append(missing, have[i])
			i++
		case i == len(have) || have[i].Compare(want[j]) > 0:
			lacks = append(lacks, j)
			j++
		default:
			i++
			j++
		}
	}
	return missing, lacks
}

// split cuts the aligned range [lo, hi], holding total items, into sub-ranges of about
// total/splitFanout items each. Each sub-range is an aligned run of the children of one node,
// so the client can summarise it from its own rows: consecutive children are grouped, and a
// child holding more than expandFactor shares is descended into (at most maxExpand times) and
// its own children grouped. The space around a descended child that holds none of the server's items
// becomes a sub-range of its own with an empty list.
func split(r *reader, lo, hi *key, total uint64) ([]Range, error) {
	s := splitter{r: r, target: (total + splitFanout - 1) / splitFanout}
	l, _ := span(lo, hi)
	if err := s.run(l, lo, hi); err != nil {
		return nil, err
	}
	if len(s.out) < 2 || len(s.out) > MaxSplit {
		return nil, fmt.Errorf("split of %d items gave %d sub-ranges", total, len(s.out))
	}
	return s.out, nil
}

type splitter struct {
	r       *reader
	target  uint64
	expands int
	out     []Range
}

// run splits the run [lo, hi] of the children of a level-l node.
func (s *splitter) run(l int, lo, hi *key) error {
	var kids []piece
	if err := s.r.children(l, lo, hi, func(p piece) error {
		kids = append(kids, p)
		return nil
	}); err != nil {
		return err
	}
	// The current group covers [from, ...]; open is false once the run's end is covered.
	from, open := *lo, true
	var cur acc
	var last *piece
	for i := range kids {
		k := &kids[i]
		if k.level <= leafLevel && k.acc.count > expandFactor*s.target && s.expands < maxExpand {
			s.expands++
			if from.less(k.lo) {
				s.emit(k.lo.prev(), &cur)
			}
			if err := s.run(k.level, &k.lo, &k.hi); err != nil {
				return err
			}
			cur, last = acc{}, nil
			if open = k.hi != *hi; open {
				from = k.hi.next()
			}
			continue
		}
		if last != nil && cur.count+k.acc.count > s.target {
			h := between(&last.hi, &k.lo)
			s.emit(h, &cur)
			cur, from = acc{}, h.next()
		}
		cur.merge(&k.acc)
		last = k
	}
	if open {
		s.emit(*hi, &cur)
	}
	return nil
}

func (s *splitter) emit(upper key, a *acc) {
	r := Range{Upper: upper.item(), Mode: ModeIdList}
	if a.count > 0 {
		r.Mode, r.Fingerprint = ModeFingerprint, a.fingerprint()
	}
	s.out = append(s.out, r)
}

// between returns the key with the shortest encoding in [x, y), for x < y: x up to and
// including the first byte where it differs from y, then 0xff. When x and y are the last and
// first keys of sibling nodes it is the end of a sibling, so the groups stay aligned.
func between(x, y *key) key {
	h := *x
	for i := commonPrefix(x, y) + 1; i < keySize; i++ {
		h[i] = 0xff
	}
	return h
}
