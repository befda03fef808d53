// The custodian's goroutines and memory, read from its /metrics while bench mix runs.

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// quiesced closes this process's idle connections to the custodian's API, gives the custodian
// a moment to see them closed, and samples it.
func (m *mixTarget) quiesced(ctx context.Context, at time.Duration) (metricsSample, error) {
	m.conns.CloseIdleConnections()
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	return m.sample(ctx, at+2*time.Second)
}

// sample reads the custodian's goroutines and resident memory from its /metrics.
func (m *mixTarget) sample(ctx context.Context, at time.Duration) (metricsSample, error) {
	ctx, cancel := context.WithTimeout(ctx, mixOpTimeout)
	defer cancel()
	s := metricsSample{at: at, goroutines: -1, rss: -1}
	goal, gogc := int64(-1), int64(100)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.api+"/metrics", nil)
	if err != nil {
		return s, err
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	// The Prometheus text format: "name value" for a metric without labels.
	into := map[string]*int64{"go_goroutines": &s.goroutines, "process_resident_memory_bytes": &s.rss,
		"go_memstats_next_gc_bytes": &goal, "go_gc_gogc_percent": &gogc}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		p := into[name]
		if !ok || p == nil {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return s, fmt.Errorf("/metrics: %s: %w", name, err)
		}
		*p = int64(v)
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if s.goroutines < 0 || s.rss < 0 {
		return s, errors.New("/metrics lacks go_goroutines or process_resident_memory_bytes")
	}
	// The GC sets its next goal to the heap it found live times 1 + GOGC/100.
	s.heap = -1
	if goal > 0 && gogc > 0 {
		s.heap = goal * 100 / (100 + gogc)
	}
	return s, nil
}

// metricsSample is one read of the custodian's /metrics, at some time after the load started:
// goroutines, resident memory and, to tell what the memory is, the Go heap found live by the
// last garbage collection (from its next goal; -1 when unknown).
type metricsSample struct {
	at                    time.Duration
	goroutines, rss, heap int64
}

func (s metricsSample) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB RSS (Go heap live at the last GC %.1f MiB)", s.goroutines, float64(s.rss)/(1<<20), float64(s.heap)/(1<<20))
}

// sampler reads the custodian's /metrics every interval while the load runs.
type sampler struct {
	m     *mixTarget
	every time.Duration
	say   func(string, ...any)

	mu       sync.Mutex
	samples  []metricsSample
	failures atomic.Int64
	firstErr error
	done     func() int64 // operations finished so far, for the progress lines
}

func (s *sampler) run(ctx context.Context, start time.Time) {
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	lastSaid, lastOps := time.Duration(0), int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		at := time.Since(start)
		m, err := s.m.sample(ctx, at)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if err != nil {
			if s.failures.Add(1) == 1 {
				s.firstErr = err
			}
		} else {
			s.samples = append(s.samples, m)
		}
		s.mu.Unlock()
		if err == nil && at-lastSaid >= mixProgressEvery {
			ops := s.done()
			s.say("  %4s: %d operations, %.0f/s since the last line; custodian %s", at.Round(time.Second), ops,
				float64(ops-lastOps)/(at-lastSaid).Seconds(), m)
			lastSaid, lastOps = at, ops
		}
	}
}

// report prints the custodian's goroutines and resident memory over the run and returns the
// bounds of o they exceeded after the warm-up.
//
// Goroutines are compared between two samples with nothing in flight and no client connection
// open: paused, the soak's sample with the load paused after the warm-up, and end, after the
// load. Without paused the first periodic sample after the warm-up stands in, taken under load.
// Resident memory is compared between the lowest sample of the first minute after the warm-up
// and the lowest of the last minute of the load (each window at most a third of the time after
// the warm-up): single samples would measure where each one fell in the store's cycle of
// filling and flushing a memtable, and a collection that has not yet run after a peak; a leak
// raises the lowest sample too.
func (s *sampler) report(say func(string, ...any), o mixOptions, start metricsSample, paused *metricsSample, end metricsSample) []string {
	s.mu.Lock()
	samples := slices.Clone(s.samples)
	s.mu.Unlock()
	peak := start
	for _, m := range append(samples, end) {
		peak.goroutines, peak.rss, peak.heap = max(peak.goroutines, m.goroutines), max(peak.rss, m.rss), max(peak.heap, m.heap)
	}
	say("custodian at the start: %s", start)
	say("custodian at the end, the load drained and its connections closed (%s): %s", end.at.Round(time.Second), end)
	say("custodian's peak over %d samples every %s during the load: %s", len(samples), o.sampleEvery, peak)
	base := paused
	what := "the load paused and drained, its connections closed"
	if base == nil {
		what = "under load"
		if i := slices.IndexFunc(samples, func(m metricsSample) bool { return m.at >= o.warmup }); i >= 0 {
			base = &samples[i]
		}
	}
	if base == nil || len(samples) == 0 {
		say("no sample after the %s warm-up: no growth measured", o.warmup)
		return nil
	}
	say("custodian after the %s warm-up, %s (%s): %s", o.warmup, what, base.at.Round(time.Second), base)
	last := samples[len(samples)-1]
	say("custodian's last sample during the load (%s): %s", last.at.Round(time.Second), last)

	window := max(o.sampleEvery, min(time.Minute, (last.at-o.warmup)/3))
	early, late := *base, end
	for _, m := range samples {
		if m.at >= o.warmup && m.at <= o.warmup+window && m.rss < early.rss {
			early = m
		}
		if m.at >= last.at-window && m.rss < late.rss {
			late = m
		}
	}
	dg, dr := end.goroutines-base.goroutines, late.rss-early.rss
	say("lowest RSS in the %s after the warm-up: %.1f MiB (%s); in the last %s: %.1f MiB (%s)",
		window.Round(time.Second), float64(early.rss)/(1<<20), early.at.Round(time.Second),
		window.Round(time.Second), float64(late.rss)/(1<<20), late.at.Round(time.Second))
	enforced := ""
	if !o.soak {
		enforced = "; bounds not enforced without --soak"
	}
	say("growth after the warm-up: %+d goroutines (bound %d), %+.1f MiB RSS (bound %d MiB)%s",
		dg, o.maxGoroutineGrowth, float64(dr)/(1<<20), o.maxRSSGrowth>>20, enforced)
	var over []string
	if dg > int64(o.maxGoroutineGrowth) {
		over = append(over, fmt.Sprintf("the custodian's goroutines grew by %d, more than %d", dg, o.maxGoroutineGrowth))
	}
	if dr > o.maxRSSGrowth {
		over = append(over, fmt.Sprintf("the custodian's resident memory grew by %.1f MiB, more than %d MiB", float64(dr)/(1<<20), o.maxRSSGrowth>>20))
	}
	return over
}
