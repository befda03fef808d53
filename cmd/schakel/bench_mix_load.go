// Driving the load of bench mix: closed or open loop, and the token requests signed ahead of use.

package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// mixStats are one kind's results.
type mixStats struct {
	mu         sync.Mutex
	lat        []time.Duration
	errors     int
	firstErr   error
	firstErrAt time.Duration // since the load started
}

// mixRun is what runMix measured.
type mixRun struct {
	stats   [mixKinds]mixStats
	done    atomic.Int64
	elapsed time.Duration // without the pause
	paused  time.Duration

	// gate is held shared by every operation and alone by the pause, which so waits for the
	// operations in flight and holds back new ones.
	gate sync.RWMutex
}

// pause runs fn with no operation in flight and returns how long that took.
func (r *mixRun) pause(fn func()) time.Duration {
	t := time.Now()
	r.gate.Lock()
	defer r.gate.Unlock()
	fn()
	return time.Since(t)
}

func (r *mixRun) errors() int {
	n := 0
	for k := range r.stats {
		n += r.stats[k].errors
	}
	return n
}

// runMix does operation i of kind pattern[i % len(pattern)] with op: closed loop with
// o.inflight workers for o.duration or, when o.rate is set, open loop: operation i starts at
// i/rate seconds whatever the others do, for o.duration. When pause is not nil, it is called
// once after o.warmup with no operation in flight, and the load then goes on for the rest of
// o.duration. It fills r.
func runMix(ctx context.Context, o mixOptions, pattern []mixKind, op func(context.Context, mixKind, int) (time.Duration, error), r *mixRun, pause func()) {
	t0 := time.Now()
	one := func(i int) {
		k := pattern[i%len(pattern)]
		octx, cancel := context.WithTimeout(ctx, mixOpTimeout)
		r.gate.RLock()
		took, err := op(octx, k, i)
		r.gate.RUnlock()
		cancel()
		st := &r.stats[k]
		st.mu.Lock()
		st.lat = append(st.lat, took)
		if err != nil {
			if st.errors == 0 {
				st.firstErr, st.firstErrAt = err, time.Since(t0)
			}
			st.errors++
		}
		st.mu.Unlock()
		r.done.Add(1)
	}
	var wg sync.WaitGroup
	if o.rate > 0 {
		n := int(float64(o.rate) * o.duration.Seconds())
		start := t0
	schedule:
		for i := range n {
			offset := time.Duration(float64(i) / float64(o.rate) * float64(time.Second))
			if pause != nil && offset >= o.warmup {
				// The schedule resumes where it paused, without a burst of what it held back.
				r.paused = r.pause(pause)
				start = start.Add(r.paused)
				pause = nil
			}
			at := start.Add(offset)
			if wait := time.Until(at); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					break schedule
				}
			}
			wg.Go(func() { one(i) })
		}
	} else {
		var stop atomic.Int64
		stop.Store(t0.Add(o.duration).UnixNano())
		if pause != nil {
			wg.Go(func() {
				select {
				case <-time.After(o.warmup):
				case <-ctx.Done():
					return
				}
				r.paused = r.pause(pause)
				stop.Add(int64(r.paused))
			})
		}
		var next atomic.Int64
		for range o.inflight {
			wg.Go(func() {
				for ctx.Err() == nil && time.Now().UnixNano() < stop.Load() {
					one(int(next.Add(1) - 1))
				}
			})
		}
	}
	wg.Wait()
	r.elapsed = time.Since(t0) - r.paused
}

// preparedAssertion is a signed, encrypted token request and when it was made.
type preparedAssertion struct {
	jwe []byte
	at  time.Time
}

// assertionSource prepares token requests a stock ahead of their use, cycling through the
// patients.
type assertionSource struct {
	n    *node.Node
	req  *schakelv1.RequestTokenRequest
	bsns []string
	ch   chan preparedAssertion

	prepared, waits, stale atomic.Int64
	done                   chan struct{} // closed when run returns
	err                    error         // why run returned, read after done
}

// run prepares token requests in batches until ctx ends or one cannot be prepared.
func (s *assertionSource) run(ctx context.Context) {
	defer close(s.done)
	const batch = 64
	bsns := make([]string, batch)
	for next := 0; ; {
		for j := range bsns {
			bsns[j] = s.bsns[(next+j)%len(s.bsns)]
		}
		next += batch
		as, err := s.n.PrepareTokenRequests(ctx, s.req, bsns)
		if err != nil {
			s.err = err
			return
		}
		at := time.Now()
		s.prepared.Add(int64(len(as)))
		for _, a := range as {
			select {
			case s.ch <- preparedAssertion{jwe: a, at: at}:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}
}

// failure returns why preparing stopped, or nil while it goes on.
func (s *assertionSource) failure() error {
	select {
	case <-s.done:
		return fmt.Errorf("preparing token requests stopped: %w", s.err)
	default:
		return nil
	}
}

// take returns a prepared token request that has not grown too old, waiting for one if needed.
func (s *assertionSource) take(ctx context.Context) ([]byte, error) {
	waited := false
	for {
		var p preparedAssertion
		select {
		case p = <-s.ch:
		default:
			if !waited {
				s.waits.Add(1)
				waited = true
			}
			select {
			case p = <-s.ch:
			case <-s.done:
				return nil, s.failure()
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if time.Since(p.at) <= mixAssertionAge {
			return p.jwe, nil
		}
		s.stale.Add(1)
	}
}
