package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/schakel-health/schakel/internal/store"
)

// Client-side choices. Like the server's, they shape requests within the protocol's bounds.
const (
	// clientListThreshold is the largest count for which the client sends its items rather
	// than a fingerprint: the server then answers with the exact difference in one step.
	clientListThreshold = 4
	// maxRequestSize keeps requests small enough that the server's answer, which must leave
	// room to defer every range asked, has most of MaxMessageSize for real answers.
	maxRequestSize = MaxMessageSize / 4
	// maxPending and maxMissing bound what a session keeps between rounds, whatever the server
	// sends: past them the session ends incomplete. An honest server reaches them only when the
	// client is far behind (more than a million items missing), and the next session goes on
	// from what this one fetched.
	maxPending = 1 << 17
	maxMissing = 1 << 20
)

type sessionState int

const (
	stateNew sessionState = iota
	stateWaiting
	stateDone
	stateFailed
)

// Session is the client's side of one reconciliation with one server. It is driven by the
// caller: Start gives the first request; each answer goes to Next, which gives the next request
// until it reports done. Each Start and Next reads the index in one read transaction, so items
// added meanwhile may be reported missing (and fetched again) or missed (until the next
// session). A Session is not safe for concurrent use.
type Session struct {
	idx   *Index
	state sessionState
	// req is the request awaiting an answer; sent are its ranges in question, in order.
	req  *Message
	sent []pend
	// pending are the ranges still in question that the next request asks about.
	pending        []pend
	missing, extra []Item
	rounds         int
	complete       bool
}

// pend is a range in question with the client's summary of it.
type pend struct {
	lo, hi key
	acc    acc
	// items are the client's items when it sends them (acc.count <= clientListThreshold).
	items []Item
	// stale marks a range deferred by the server: its summary is recomputed before it is sent.
	stale bool
}

// NewSession returns a session that reconciles idx with a server.
func NewSession(idx *Index) *Session {
	return &Session{idx: idx}
}

// Start returns the first request: the fingerprint of the whole set, or the items themselves
// when the client holds at most a few. It MUST be called once, before Next.
func (s *Session) Start(ctx context.Context) (*Message, error) {
	if s.state != stateNew {
		return nil, fmt.Errorf("reconcile: start: %w", ErrSession)
	}
	s.state = stateFailed
	err := s.idx.db.View(ctx, func(tx *store.Txn) error {
		r := &reader{tx: tx}
		a, err := r.row(0, &key{})
		if err != nil {
			return err
		}
		s.pending = []pend{{hi: maxKey, acc: a}}
		return s.request(r)
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: start: %w", err)
	}
	s.state = stateWaiting
	return s.req, nil
}

// Next takes the server's answer to the last request. It returns the next request, or done
// once every range is settled or the session's bounds are reached (see Complete). An answer
// that does not fit the request fails with ErrInconsistent, a malformed one with ErrMalformed;
// the session is then over.
func (s *Session) Next(ctx context.Context, resp *Message) (next *Message, done bool, err error) {
	if s.state != stateWaiting {
		return nil, false, fmt.Errorf("reconcile: next: %w", ErrSession)
	}
	s.state = stateFailed
	if err := resp.check(); err != nil {
		return nil, false, fmt.Errorf("reconcile: next: answer: %w", err)
	}
	s.rounds++
	err = s.idx.db.View(ctx, func(tx *store.Txn) error {
		r := &reader{tx: tx}
		if err := s.absorb(r, resp); err != nil {
			return err
		}
		switch {
		case len(s.pending) == 0:
			s.complete, done = true, true
		case s.rounds >= MaxRounds || len(s.pending) > maxPending || len(s.missing) > maxMissing:
			done = true
		default:
			return s.request(r)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("reconcile: next: round %d: %w", s.rounds, err)
	}
	if done {
		s.state, s.req, s.sent, s.pending = stateDone, nil, nil, nil
		return nil, true, nil
	}
	s.state = stateWaiting
	return s.req, false, nil
}

// Missing returns the items the server holds and the client lacks, in order: the documents to
// fetch. After an incomplete session it is part of them.
func (s *Session) Missing() []Item { return sorted(s.missing) }

// Extra returns the items the client holds and the server lacks, in order.
func (s *Session) Extra() []Item { return sorted(s.extra) }

// Complete reports whether the session ended with every range settled, so that Missing and
// Extra are the whole differences (as of the snapshots each round read). It is false while the
// session runs and when it stopped at MaxRounds or its memory bounds.
func (s *Session) Complete() bool { return s.complete }

// Rounds returns the number of answers the session has taken.
func (s *Session) Rounds() int { return s.rounds }

func sorted(items []Item) []Item {
	out := slices.Clone(items)
	slices.SortFunc(out, Item.Compare)
	return out
}

// request builds the next request from the pending ranges, in key order, as many as fit in
// MaxRanges and maxRequestSize; the rest wait for a later round.
func (s *Session) request(r *reader) error {
	slices.SortFunc(s.pending, func(a, b pend) int { return bytes.Compare(a.lo[:], b.lo[:]) })
	m := &Message{}
	size := 1 + boundSize(&key{}, &maxKey) + 1 // room for the closing skip
	var prev *key
	var lo key
	n := 0
	for ; n < len(s.pending) && n < MaxRanges; n++ {
		p := &s.pending[n]
		if err := p.refresh(r); err != nil {
			return err
		}
		var add []Range
		if lo.less(p.lo) {
			add = append(add, Range{Upper: p.lo.prev().item(), Mode: ModeSkip})
		}
		q := Range{Upper: p.hi.item(), Mode: ModeFingerprint, Fingerprint: p.acc.fingerprint()}
		if p.items != nil || p.acc.count == 0 {
			q = Range{Upper: q.Upper, Mode: ModeIdList, Items: p.items}
		}
		add = append(add, q)
		grow := answerSize(prev, &lo, add)
		if n > 0 && size+grow > maxRequestSize {
			break
		}
		size += grow
		m.Ranges = append(m.Ranges, add...)
		prev = &p.hi
		if p.hi != maxKey {
			lo = p.hi.next()
		}
	}
	if prev == nil || *prev != maxKey {
		m.Ranges = append(m.Ranges, Range{Upper: maxKey.item(), Mode: ModeSkip})
	}
	s.req = m
	s.sent = slices.Clone(s.pending[:n])
	s.pending = slices.Delete(s.pending, 0, n)
	return nil
}

// refresh recomputes a deferred range's summary and loads the client's items of a small range.
func (p *pend) refresh(r *reader) error {
	if p.stale {
		a, err := r.summary(&p.lo, &p.hi)
		if err != nil {
			return err
		}
		p.acc, p.items, p.stale = a, nil, false
	}
	if p.acc.count > 0 && p.acc.count <= clientListThreshold && p.items == nil {
		items, err := r.itemList(&p.lo, &p.hi)
		if err != nil {
			return err
		}
		p.items = items
	}
	return nil
}

// absorb settles the ranges of the last request from the server's answer, checking that it
// answers exactly what was asked.
func (s *Session) absorb(r *reader, resp *Message) error {
	rs := resp.Ranges
	j, asked := 0, 0
	for i := range s.req.Ranges {
		e := &s.req.Ranges[i]
		if j == len(rs) {
			return fmt.Errorf("answer ends before range %d: %w", i, ErrInconsistent)
		}
		if e.Mode == ModeSkip {
			if rs[j].Upper != e.Upper || rs[j].Mode != ModeSkip {
				return fmt.Errorf("range %d was skipped, answer has %s up to %d/%x: %w",
					i, rs[j].Mode, rs[j].Upper.Time, rs[j].Upper.ID, ErrInconsistent)
			}
			j++
		} else {
			p := &s.sent[asked]
			asked++
			n, err := s.settle(r, p, e.Mode, rs[j:])
			if err != nil {
				return fmt.Errorf("range %d: %w", i, err)
			}
			j += n
		}
	}
	if j != len(rs) {
		return fmt.Errorf("answer has %d ranges beyond the request: %w", len(rs)-j, ErrInconsistent)
	}
	return nil
}

// settle takes the answer to the range in question p, asked with mode asked, from the start of
// rs, and returns how many ranges of rs it used.
func (s *Session) settle(r *reader, p *pend, asked Mode, rs []Range) (int, error) {
	first := &rs[0]
	if first.Upper.key() == p.hi {
		switch {
		case first.Mode == ModeSkip:
		case first.Mode == ModeDeferred:
			s.pending = append(s.pending, pend{lo: p.lo, hi: p.hi, stale: true})
		case first.Mode == ModeIdList && asked == ModeFingerprint:
			return 1, s.compareList(r, &p.lo, &p.hi, first.Items)
		case first.Mode == ModeListDiff && asked == ModeIdList:
			return 1, s.applyDiff(p, first)
		default:
			return 0, fmt.Errorf("%s answer to a %s range: %w", first.Mode, asked, ErrInconsistent)
		}
		return 1, nil
	}
	// A split: at least two sub-ranges, each a fingerprint or the server's items, ending at
	// p.hi. Message.check already made them increasing.
	lo := p.lo
	for n := 0; n < len(rs); n++ {
		sub := &rs[n]
		hi := sub.Upper.key()
		if p.hi.less(hi) {
			return 0, fmt.Errorf("sub-range beyond the range asked: %w", ErrInconsistent)
		}
		if n == MaxSplit {
			return 0, fmt.Errorf("more than %d sub-ranges: %w", MaxSplit, ErrInconsistent)
		}
		switch sub.Mode {
		case ModeFingerprint:
			if _, ok := span(&lo, &hi); !ok {
				return 0, fmt.Errorf("sub-range not aligned with the index: %w", ErrInconsistent)
			}
			a, err := r.summary(&lo, &hi)
			if err != nil {
				return 0, err
			}
			if a.fingerprint() != sub.Fingerprint {
				s.pending = append(s.pending, pend{lo: lo, hi: hi, acc: a})
			}
		case ModeIdList:
			if err := s.compareList(r, &lo, &hi, sub.Items); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("%s sub-range in a split: %w", sub.Mode, ErrInconsistent)
		}
		if hi == p.hi {
			return n + 1, nil
		}
		lo = hi.next()
	}
	return 0, fmt.Errorf("split does not end where the range asked does: %w", ErrInconsistent)
}

// compareList settles [lo, hi] from the server's items in it.
func (s *Session) compareList(r *reader, lo, hi *key, theirs []Item) error {
	ours, err := r.itemList(lo, hi)
	if err != nil {
		return err
	}
	missing, lacks := diff(theirs, ours)
	s.missing = append(s.missing, missing...)
	for _, i := range lacks {
		s.extra = append(s.extra, ours[i])
	}
	return nil
}

// applyDiff settles p, sent as a list, from the server's difference.
func (s *Session) applyDiff(p *pend, a *Range) error {
	if n := len(a.Lacks); n > 0 && a.Lacks[n-1] >= len(p.items) {
		return fmt.Errorf("lacks position %d of a list of %d: %w", a.Lacks[n-1], len(p.items), ErrInconsistent)
	}
	if _, fresh := diff(p.items, a.Items); len(fresh) != len(a.Items) {
		return fmt.Errorf("server lists as missing an item the client sent: %w", ErrInconsistent)
	}
	s.missing = append(s.missing, a.Items...)
	for _, i := range a.Lacks {
		s.extra = append(s.extra, p.items[i])
	}
	return nil
}
