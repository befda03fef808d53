package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

func newBenchMixCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mix",
		Short: "A mix of token requests, introspections and log appends at a custodian in its own process",
		Long: `bench mix sets up what bench access does — a register, a GP practice (the custodian) holding
one consent per patient, a hospital (the requester), the GP practice's node restarted as its own
'schakel run' process — and drives the custodian with a mix of three operations:

  token       a token request over the peer RPC, signed and encrypted ahead of use by this
              process (the hospital's node); its signed receipt is checked
  introspect  POST /oauth2/introspect of a recently granted token at the custodian's API, as its
              FHIR server does (RFC 7662); the token must be active
  record      LogService.RecordAccess at the custodian's internal API (Connect over HTTP/1.1),
              an actual data access recorded in its access log

--mix weighs them ("token=1,introspect=4,record=1"). The load is closed loop (--inflight
operations at a time for --duration) or open loop (--rate operations per second for --duration,
each started on schedule). SCHAKEL_API_TOKEN, when set, is the custodian's API token and is sent
with every HTTP call.

It reports, per kind and overall, the count, errors, throughput and latency percentiles; the
custodian's CPU per operation; and the custodian's goroutines and resident memory, read from its
/metrics every --sample-every and at the end. At the end it exports the custodian's access log,
verifies it (what 'schakel log verify' checks) and checks that every acknowledged decision is
the entry its receipt names and every acknowledged append is the entry at its returned index.
With --soak the load pauses once after --warmup, until nothing is in flight, and the command
fails when, from then to the end, the custodian's goroutines (counted with nothing in flight and
no connection open, after the warm-up and after the load) grew by more than
--max-goroutine-growth, or its resident memory (the lowest sample of the first minute after the
warm-up against the lowest of the last minute) by more than --max-rss-growth.
It exits 1 on any failed operation, lost acknowledgement, invalid log or exceeded bound.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var o mixOptions
			f := cmd.Flags()
			mix, _ := f.GetString("mix")
			o.inflight, _ = f.GetInt("inflight")
			o.rate, _ = f.GetInt("rate")
			o.duration, _ = f.GetDuration("duration")
			o.patients, _ = f.GetInt("patients")
			o.dir, _ = f.GetString("data")
			o.soak, _ = f.GetBool("soak")
			o.warmup, _ = f.GetDuration("warmup")
			o.sampleEvery, _ = f.GetDuration("sample-every")
			o.maxGoroutineGrowth, _ = f.GetInt("max-goroutine-growth")
			rssMiB, _ := f.GetInt("max-rss-growth")
			o.maxRSSGrowth = int64(rssMiB) << 20
			var err error
			if o.weights, err = parseMix(mix); err != nil {
				return &exitError{2, fmt.Errorf("bench mix: --mix: %w", err)}
			}
			if err := o.check(); err != nil {
				return &exitError{2, fmt.Errorf("bench mix: %w", err)}
			}
			keep := o.dir != ""
			if !keep {
				tmp, err := os.MkdirTemp("", "schakel-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				o.dir = tmp
			}
			if err := benchMix(cmd.Context(), cmd.OutOrStdout(), o, keep); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("mix", "token=1,introspect=4,record=1", "weights of the operations: token, introspect, record")
	f.Int("inflight", 256, "operations in flight at a time (closed loop)")
	f.Int("rate", 0, "offer this many operations per second instead (open loop: each starts on schedule)")
	f.Duration("duration", 10*time.Second, "how long to offer the load")
	f.Int("patients", 1000, "patients with a consent at the custodian; operations cycle through them")
	f.String("data", "", "keep the nodes' data directories and the log export under this one (default: a temporary directory)")
	f.Bool("soak", false, "fail when the custodian's goroutines or resident memory grow beyond the bounds below")
	f.Duration("warmup", 30*time.Second, "growth is measured from the first sample at least this long after the load started")
	f.Duration("sample-every", 5*time.Second, "how often to read the custodian's /metrics")
	f.Int("max-goroutine-growth", 50, "with --soak: the most the custodian's goroutine count may grow")
	f.Int("max-rss-growth", 64, "with --soak: the most the custodian's resident memory may grow, in MiB")
	return cmd
}

// mixKind is one kind of operation of the mix.
type mixKind int

const (
	mixToken mixKind = iota
	mixIntrospect
	mixRecord
	mixKinds
)

var mixKindNames = [mixKinds]string{"token", "introspect", "record"}

// Bounds of the mix's work.
const (
	// mixOpTimeout bounds one operation, and one read of /metrics.
	mixOpTimeout = 30 * time.Second
	// mixAssertionAge is how old a prepared token request may be when it is sent: they expire
	// after five minutes, and the custodian refuses one that expires while it is decided.
	mixAssertionAge = 4 * time.Minute
	// mixPool is how many of the most recently granted tokens introspections choose from.
	mixPool = 256
	// mixProgressEvery is how often a long run prints how it is going.
	mixProgressEvery = 30 * time.Second
)

type mixOptions struct {
	weights                       [mixKinds]int
	inflight, rate, patients      int
	duration, warmup, sampleEvery time.Duration
	dir                           string
	soak                          bool
	maxGoroutineGrowth            int
	maxRSSGrowth                  int64
}

func (o *mixOptions) check() error {
	switch {
	case o.inflight <= 0 || o.patients <= 0 || o.duration <= 0 || o.sampleEvery <= 0:
		return errors.New("--inflight, --patients, --duration and --sample-every must be positive")
	case o.rate < 0 || o.warmup < 0:
		return errors.New("--rate and --warmup must not be negative")
	case o.soak && o.duration < o.warmup+2*o.sampleEvery:
		return fmt.Errorf("--soak needs a --duration of at least --warmup + 2 × --sample-every (%s)", o.warmup+2*o.sampleEvery)
	case o.weights[mixIntrospect] > 0 && o.weights[mixToken] == 0 && o.duration > mixAssertionAge:
		// Without token requests in the mix, introspections use tokens granted before the run.
		return errors.New("introspections without token requests use tokens granted before the run, which expire: keep --duration under 4m")
	}
	return nil
}

// parseMix reads "token=1,introspect=4,record=1"; a kind left out weighs nothing.
func parseMix(s string) ([mixKinds]int, error) {
	var w [mixKinds]int
	seen := 0
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		k := slices.Index(mixKindNames[:], name)
		if !ok || k < 0 {
			return w, fmt.Errorf("%q: want KIND=WEIGHT with KIND one of %s", part, strings.Join(mixKindNames[:], ", "))
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 1000 {
			return w, fmt.Errorf("%q: the weight must be a whole number from 0 to 1000", part)
		}
		if seen&(1<<k) != 0 {
			return w, fmt.Errorf("%s given twice", name)
		}
		seen |= 1 << k
		w[k] = n
	}
	if w[mixToken]+w[mixIntrospect]+w[mixRecord] == 0 {
		return w, errors.New("every weight is zero")
	}
	return w, nil
}

// mixPattern spreads the kinds over one cycle of sum(w) operations in proportion to their
// weights, each as evenly as it can (smooth weighted round-robin): 1,4,1 gives
// introspect, token, introspect, introspect, record, introspect.
func mixPattern(w [mixKinds]int) []mixKind {
	total := 0
	for _, n := range w {
		total += n
	}
	var cur [mixKinds]int
	out := make([]mixKind, 0, total)
	for range total {
		best := -1
		for k, n := range w {
			cur[k] += n
			if n > 0 && (best < 0 || cur[k] > cur[best]) {
				best = k
			}
		}
		cur[best] -= total
		out = append(out, mixKind(best))
	}
	return out
}

// benchMix runs `schakel bench mix`; keep says the data directory is the user's.
func benchMix(ctx context.Context, out io.Writer, o mixOptions, keep bool) error {
	d := &demo{out: io.Discard, dir: o.dir, nodes: map[string]*orgNode{}}
	defer d.closeAll()
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("schakel %s bench mix — data in %s, %d cores, load average %s", node.Version, o.dir, runtime.NumCPU(), loadAverage())
	gp, hosp, child, req, err := benchNetwork(ctx, d, o.dir, o.patients, say)
	if err != nil {
		return err
	}
	defer child.stop()
	tokenNote := "no API token"
	if tok, _ := envLookup("SCHAKEL_API_TOKEN"); tok != "" {
		tokenNote = "API token from SCHAKEL_API_TOKEN"
	}
	say("custodian: 'schakel run' as process %d, API %s (%s)", child.cmd.Process.Pid, child.api, tokenNote)

	m := &mixTarget{
		hosp: hosp.n, custodian: gp.org, requester: hosp.org, api: child.api,
		bsns: make([]string, o.patients),
		req:  req,
	}
	for i := range m.bsns {
		m.bsns[i] = benchBSN(i)
	}
	// One connection per operation in flight, kept alive: an EHR's or FHIR server's pool.
	conns := 1024
	if o.rate == 0 {
		conns = o.inflight
	}
	m.hc, m.conns = mixHTTPClient(conns)
	defer m.conns.CloseIdleConnections()
	m.logs = schakelv1connect.NewLogServiceClient(m.hc, m.api)

	// The first request waits for the two nodes to admit each other again.
	probe := func() (bool, error) {
		a, err := hosp.n.PrepareTokenRequests(ctx, m.req, m.bsns[:1])
		if err != nil {
			return false, err
		}
		_, err = m.sendToken(ctx, a[0], 0)
		return err == nil, nil
	}
	if err := waitFor(ctx, 60*time.Second, probe); err != nil {
		return fmt.Errorf("the custodian's process did not grant a token request: %w", err)
	}
	if o.weights[mixIntrospect] > 0 {
		if err := m.fillPool(ctx, 64); err != nil {
			return fmt.Errorf("granting the tokens to introspect: %w", err)
		}
	}

	// Token requests are prepared by this process during the run, a stock ahead: all of them
	// beforehand would expire during a long run.
	stock := 2048
	if o.rate > 0 {
		perSecond := float64(o.rate) * float64(o.weights[mixToken]) / float64(o.weights[mixToken]+o.weights[mixIntrospect]+o.weights[mixRecord])
		stock = min(max(int(perSecond*20), 64), 2048)
	}
	src := &assertionSource{n: hosp.n, req: m.req, bsns: m.bsns, ch: make(chan preparedAssertion, stock), done: make(chan struct{})}
	m.src = src
	if o.weights[mixToken] > 0 {
		prepCtx, stopPrep := context.WithCancel(ctx)
		defer stopPrep()
		go src.run(prepCtx)
		if err := waitFor(ctx, 60*time.Second, func() (bool, error) { return len(src.ch) == cap(src.ch), src.failure() }); err != nil {
			return fmt.Errorf("preparing token requests: %w", err)
		}
		say("token requests are signed and encrypted by this process during the run, %d ahead", stock)
	}

	logBefore, err := child.logSize(ctx, gp.org)
	if err != nil {
		return err
	}
	decisionsBefore, appendsBefore := m.acks.counts()
	start, err := m.sample(ctx, 0)
	if err != nil {
		return fmt.Errorf("reading the custodian's /metrics: %w", err)
	}
	pattern := mixPattern(o.weights)
	if o.rate > 0 {
		say("open loop: %d operations/s offered for %s, mix %s", o.rate, o.duration, mixString(o.weights))
	} else {
		say("closed loop: %d in flight for %s, mix %s", o.inflight, o.duration, mixString(o.weights))
	}

	cpuBefore, err := processCPU(child.cmd.Process.Pid)
	if err != nil {
		return err
	}
	selfBefore := selfCPU()
	preparedBefore := src.prepared.Load()
	r := &mixRun{}
	samples := &sampler{m: m, every: o.sampleEvery, say: say, done: r.done.Load}
	loadStart := time.Now()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		samples.run(sampleCtx, loadStart)
	}()
	// A soak pauses the load once after the warm-up for its first sample, so that the first
	// and the last sample see the custodian in the same state: nothing in flight, no client
	// connection open.
	var pause func()
	var base *metricsSample
	var baseErr error
	if o.soak {
		pause = func() {
			s, err := m.quiesced(ctx, time.Since(loadStart))
			base, baseErr = &s, err
		}
	}
	runMix(ctx, o, pattern, m.op, r, pause)
	stopSampling()
	<-sampled
	cpuAfter, err := processCPU(child.cmd.Process.Pid)
	if err != nil {
		return err
	}
	selfUsed := selfCPU() - selfBefore
	end, endErr := m.quiesced(ctx, time.Since(loadStart))
	logAfter, err := child.logSize(ctx, gp.org)
	if err != nil {
		return err
	}

	// Throughput and latency.
	total := 0
	var all []time.Duration
	var failed []string
	say("%-11s %9s %7s %9s  %s", "operation", "count", "errors", "per s", "latency, send to answer")
	for k := range mixKinds {
		s := &r.stats[k]
		if o.weights[k] == 0 {
			continue
		}
		say("%-11s %9d %7d %9.0f  %s", mixKindNames[k], len(s.lat), s.errors, float64(len(s.lat))/r.elapsed.Seconds(), percentiles(s.lat))
		total += len(s.lat)
		all = append(all, s.lat...)
		if s.errors > 0 {
			failed = append(failed, fmt.Sprintf("%d %s operations failed, the first %s after the start: %v", s.errors, mixKindNames[k], s.firstErrAt.Round(time.Millisecond), s.firstErr))
		}
	}
	say("%-11s %9d %7d %9.0f  %s", "all", total, r.errors(), float64(total)/r.elapsed.Seconds(), percentiles(all))
	pausedNote := ""
	if r.paused > 0 {
		pausedNote = fmt.Sprintf(" (besides %s paused)", r.paused.Round(time.Millisecond))
	}
	say("in %s%s; custodian CPU %s = %s per operation (all kinds together); this process %s",
		r.elapsed.Round(time.Millisecond), pausedNote, (cpuAfter - cpuBefore).Round(time.Millisecond),
		((cpuAfter - cpuBefore) / time.Duration(max(total, 1))).Round(time.Microsecond), selfUsed.Round(time.Millisecond))
	if o.weights[mixToken] > 0 {
		say("token requests prepared during the load: %d; sends that waited for one: %d; discarded as too old: %d",
			src.prepared.Load()-preparedBefore, src.waits.Load(), src.stale.Load())
	}
	say("load average %s", loadAverage())

	// Goroutines and resident memory.
	var growthFailures []string
	switch {
	case endErr != nil:
		failed = append(failed, fmt.Sprintf("reading the custodian's /metrics at the end: %v", endErr))
	case baseErr != nil:
		failed = append(failed, fmt.Sprintf("reading the custodian's /metrics after the warm-up: %v", baseErr))
	default:
		growthFailures = samples.report(say, o, start, base, end)
	}
	if n := samples.failures.Load(); n > 0 {
		failed = append(failed, fmt.Sprintf("%d reads of the custodian's /metrics failed, the first: %v", n, samples.firstErr))
	}

	// Every acknowledgement in the log, and the log verifies.
	decisions, appends := m.acks.counts()
	decisions, appends = decisions-decisionsBefore, appends-appendsBefore
	say("custodian's log: %d → %d entries; acknowledged during the load: %d decisions, %d appends", logBefore, logAfter, decisions, appends)
	exportDir := filepath.Join(o.dir, "gp-log-export")
	if err := os.RemoveAll(exportDir); err != nil {
		return err
	}
	rep, err := checkMixLog(ctx, child.c, gp.org, exportDir, m.acks.sorted())
	if err != nil {
		return err
	}
	say("the export of %d entries and %d checkpoints verifies; every acknowledged decision and append is its entry in it", rep.Entries, rep.Checkpoints)
	if keep {
		say("check it yourself: schakel log verify %s", exportDir)
	}
	if rep.Entries < logAfter {
		return fmt.Errorf("the export holds %d entries, the log %d", rep.Entries, logAfter)
	}
	if r.errors() == 0 && logAfter-logBefore != int64(decisions+appends) {
		// With no failed operation, each new entry is one acknowledged operation's.
		return fmt.Errorf("%d acknowledged decisions and appends but %d new log entries", decisions+appends, logAfter-logBefore)
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	if o.soak && len(growthFailures) > 0 {
		return errors.New(strings.Join(growthFailures, "; "))
	}
	return nil
}

// mixString writes the weights as --mix takes them.
func mixString(w [mixKinds]int) string {
	parts := make([]string, 0, mixKinds)
	for k, n := range w {
		parts = append(parts, fmt.Sprintf("%s=%d", mixKindNames[k], n))
	}
	return strings.Join(parts, ",")
}

// mixHTTPClient keeps up to conns connections to the custodian's API alive and sends the API
// token, when one is set. It returns the transport too, whose idle connections the client
// cannot close once wrapped.
func mixHTTPClient(conns int) (*http.Client, *http.Transport) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = conns, conns
	var rt http.RoundTripper = tr
	if tok, ok := envLookup("SCHAKEL_API_TOKEN"); ok && tok != "" {
		rt = bearer{token: tok, next: tr}
	}
	return &http.Client{Transport: rt, Timeout: mixOpTimeout}, tr
}

// mixTarget is the custodian under load and what the operations need.
type mixTarget struct {
	hosp                 *node.Node // the requester's node, in this process
	custodian, requester string     // organisation DIDs
	api                  string     // the custodian's API URL
	hc                   *http.Client
	conns                *http.Transport // hc's connections
	logs                 schakelv1connect.LogServiceClient
	req                  *schakelv1.RequestTokenRequest
	bsns                 []string
	src                  *assertionSource

	// granted holds the most recently granted tokens, for introspection; grants counts them.
	granted [mixPool]atomic.Pointer[grantedToken]
	grants  atomic.Int64

	acks ackList
}

type grantedToken struct {
	token, id string
	at        time.Time
}

// op does operation i and returns the time from sending it to the answer.
func (m *mixTarget) op(ctx context.Context, k mixKind, i int) (time.Duration, error) {
	switch k {
	case mixToken:
		a, err := m.src.take(ctx)
		if err != nil {
			return 0, err
		}
		return m.sendToken(ctx, a, i)
	case mixIntrospect:
		return m.introspect(ctx, i)
	default:
		return m.record(ctx, i)
	}
}

// sendToken sends one prepared token request, checks the answer's receipt, and keeps the
// acknowledgement and the token.
func (m *mixTarget) sendToken(ctx context.Context, assertion []byte, i int) (time.Duration, error) {
	t := time.Now()
	resp, err := m.hosp.SendTokenRequest(ctx, m.custodian, assertion)
	took := time.Since(t)
	if err != nil {
		return took, err
	}
	rc, err := m.hosp.VerifyReceipt(ctx, resp.GetReceipt())
	if err != nil {
		return took, err
	}
	granted := resp.GetAccessToken() != ""
	switch {
	case rc.Issuer != m.custodian || rc.Subject != m.requester:
		return took, fmt.Errorf("a receipt from %s to %s", rc.Issuer, rc.Subject)
	case granted != (rc.Outcome == verify.OutcomeGranted) || granted != (rc.TokenID != ""):
		return took, fmt.Errorf("the receipt says %s (token %q), the answer has a token: %t", rc.Outcome, rc.TokenID, granted)
	}
	m.acks.add(mixAck{index: int64(rc.Index), leaf: rc.LeafHash, tokenID: rc.TokenID, op: -1})
	if !granted {
		return took, fmt.Errorf("refused: %s (%s)", resp.GetError(), resp.GetErrorDescription())
	}
	n := m.grants.Add(1)
	m.granted[(n-1)%mixPool].Store(&grantedToken{token: resp.GetAccessToken(), id: rc.TokenID, at: time.Now()})
	return took, nil
}

// fillPool grants n tokens before the run, so that introspections have tokens from the start.
func (m *mixTarget) fillPool(ctx context.Context, n int) error {
	bsns := make([]string, n)
	for i := range bsns {
		bsns[i] = m.bsns[i%len(m.bsns)]
	}
	as, err := m.hosp.PrepareTokenRequests(ctx, m.req, bsns)
	if err != nil {
		return err
	}
	for i, a := range as {
		if _, err := m.sendToken(ctx, a, i); err != nil {
			return err
		}
	}
	return nil
}

// recentToken returns one of the most recently granted tokens, chosen by i, or nil if none was
// granted yet. One granted more than mixAssertionAge ago is passed over for the newest, so that
// none has expired.
func (m *mixTarget) recentToken(i int) *grantedToken {
	n := m.grants.Load()
	if n == 0 {
		return nil
	}
	g := m.granted[int64(i)%min(n, mixPool)].Load()
	if g == nil || time.Since(g.at) > mixAssertionAge {
		g = m.granted[(n-1)%mixPool].Load()
	}
	if g == nil {
		// A slot counted but not yet stored by its grant; the first grant's is stored before
		// any later one is counted only when grants come one at a time, as before the run.
		g = m.granted[0].Load()
	}
	return g
}

// introspect asks the custodian about a granted token as its FHIR server does.
func (m *mixTarget) introspect(ctx context.Context, i int) (time.Duration, error) {
	g := m.recentToken(i)
	if g == nil {
		return 0, errors.New("no granted token to introspect")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.api+"/oauth2/introspect", strings.NewReader(url.Values{"token": {g.token}}.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	t := time.Now()
	resp, err := m.hc.Do(req)
	if err != nil {
		return time.Since(t), err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	took := time.Since(t)
	if err != nil {
		return took, err
	}
	if resp.StatusCode != http.StatusOK {
		return took, fmt.Errorf("introspection: HTTP %d: %s", resp.StatusCode, body)
	}
	var in struct {
		Active bool   `json:"active"`
		ID     string `json:"jti"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return took, fmt.Errorf("introspection: %w", err)
	}
	if !in.Active || in.ID != g.id {
		return took, fmt.Errorf("token %s granted %s ago introspects %s", g.id, time.Since(g.at).Round(time.Millisecond), body)
	}
	return took, nil
}

// mixQuery is what append i records as read; the log check finds it again by it.
func mixQuery(i int) string { return "MedicationStatement?patient=…&bench-mix-op=" + strconv.Itoa(i) }

// record appends a data access to the custodian's log through its internal API.
func (m *mixTarget) record(ctx context.Context, i int) (time.Duration, error) {
	req := &schakelv1.RecordAccessRequest{
		Organization: m.custodian,
		Requester:    &schakelv1.Requester{Did: m.requester, Ura: "03456789"},
		Employee:     &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
		Purpose:      "TREAT",
		Bsn:          m.bsns[i%len(m.bsns)],
		DataCategory: "medication",
		Query:        mixQuery(i),
	}
	if g := m.recentToken(i); g != nil {
		req.TokenId = g.id
	}
	t := time.Now()
	resp, err := call(ctx, m.logs.RecordAccess, req)
	took := time.Since(t)
	if err != nil {
		return took, err
	}
	m.acks.add(mixAck{index: resp.GetIndex(), op: i})
	return took, nil
}
