package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newBenchCmd() *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Measure a node under load from a separate process",
	}
	access := &cobra.Command{
		Use:   "access",
		Short: "Token decisions per second at a custodian node running in its own process",
		Long: `bench access sets up, on loopback, a register, a GP practice (the custodian) holding one
consent per patient and a hospital (the requester). The GP practice's node then runs as its own
'schakel run' process; this process keeps the hospital's node, signs every token request
beforehand and sends them over the peer RPC, closed loop (--inflight requests at a time) or open
loop (--rate requests per second for --duration). It reports throughput, latency percentiles,
the custodian's CPU time per decision, the cryptography limit measured on the same machine, and
checks that every answer has its entry in the custodian's access log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var o benchOptions
			f := cmd.Flags()
			o.requests, _ = f.GetInt("requests")
			o.inflight, _ = f.GetInt("inflight")
			o.rate, _ = f.GetInt("rate")
			o.duration, _ = f.GetDuration("duration")
			o.patients, _ = f.GetInt("patients")
			o.dir, _ = f.GetString("data")
			if o.requests <= 0 || o.inflight <= 0 || o.patients <= 0 || o.rate < 0 || o.duration <= 0 {
				return &exitError{2, errors.New("bench access: --requests, --inflight, --patients and --duration must be positive, --rate not negative")}
			}
			if o.rate > 0 {
				o.requests = int(float64(o.rate) * o.duration.Seconds())
			}
			if o.dir == "" {
				tmp, err := os.MkdirTemp("", "schakel-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				o.dir = tmp
			}
			if err := benchAccess(cmd.Context(), cmd.OutOrStdout(), o); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	access.Flags().Int("requests", 30000, "token requests to send (closed loop)")
	access.Flags().Int("inflight", 1024, "requests in flight at a time (closed loop)")
	access.Flags().Int("rate", 0, "offer this many requests per second for --duration instead (open loop: each starts on schedule)")
	access.Flags().Duration("duration", 10*time.Second, "how long to offer --rate")
	access.Flags().Int("patients", 1000, "patients with a consent at the custodian; requests cycle through them")
	access.Flags().String("data", "", "keep the nodes' data directories under this one (default: a temporary directory)")
	bench.AddCommand(access, newBenchMixCmd())
	return bench
}

type benchOptions struct {
	requests, inflight, rate, patients int
	duration                           time.Duration
	dir                                string
}

// benchAccess runs `schakel bench access`.
func benchAccess(ctx context.Context, out io.Writer, o benchOptions) error {
	d := &demo{out: io.Discard, dir: o.dir, nodes: map[string]*orgNode{}}
	defer d.closeAll()
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("schakel %s bench access — data in %s, %d cores", node.Version, o.dir, runtime.NumCPU())
	gp, hosp, child, req, err := benchNetwork(ctx, d, o.dir, o.patients, say)
	if err != nil {
		return err
	}
	defer child.stop()
	say("custodian: 'schakel run' as process %d, API %s", child.cmd.Process.Pid, child.api)

	// The first request waits for the two nodes to admit each other again.
	probe := func() (bool, error) {
		a, err := hosp.n.PrepareTokenRequests(ctx, req, []string{benchBSN(0)})
		if err != nil {
			return false, err
		}
		resp, err := hosp.n.SendTokenRequest(ctx, gp.org, a[0])
		return err == nil && resp.GetAccessToken() != "", nil
	}
	if err := waitFor(ctx, 60*time.Second, probe); err != nil {
		return fmt.Errorf("the custodian's process did not answer a token request: %w", err)
	}

	bsns := make([]string, o.requests)
	for i := range bsns {
		bsns[i] = benchBSN(i % o.patients)
	}
	start := time.Now()
	assertions, err := hosp.n.PrepareTokenRequests(ctx, req, bsns)
	if err != nil {
		return err
	}
	say("prepared %d signed, encrypted token requests in %s (they expire in 5 minutes)", len(assertions), time.Since(start).Round(time.Millisecond))

	a, err := node.NewAccessCrypto()
	if err != nil {
		return err
	}
	limit, err := a.Rate(runtime.NumCPU(), 3*time.Second)
	if err != nil {
		return err
	}
	say("crypto limit (JWE decrypt, EdDSA verify, 2 EdDSA signs on %d goroutines, 3 s): %.0f decisions/s", runtime.NumCPU(), limit)

	logBefore, err := child.logSize(ctx, gp.org)
	if err != nil {
		return err
	}
	cpuBefore, err := processCPU(child.cmd.Process.Pid)
	if err != nil {
		return err
	}
	selfBefore := selfCPU()
	r := runLoad(ctx, o, func(i int) (bool, error) {
		resp, err := hosp.n.SendTokenRequest(ctx, gp.org, assertions[i])
		if err != nil {
			return false, err
		}
		return resp.GetAccessToken() != "", nil
	})
	cpuAfter, err := processCPU(child.cmd.Process.Pid)
	if err != nil {
		return err
	}
	selfUsed := selfCPU() - selfBefore
	logAfter, err := child.logSize(ctx, gp.org)
	if err != nil {
		return err
	}

	n := len(r.latencies)
	rate := float64(n) / r.elapsed.Seconds()
	if o.rate > 0 {
		say("open loop, %d requests/s offered for %s: %d answered in %s = %.0f decisions/s", o.rate, o.duration, n, r.elapsed.Round(time.Millisecond), rate)
	} else {
		say("closed loop, %d in flight: %d answered in %s = %.0f decisions/s", o.inflight, n, r.elapsed.Round(time.Millisecond), rate)
	}
	say("ratio to the crypto limit: %.2f", rate/limit)
	say("latency (send to answer, over the peer RPC): %s", percentiles(r.latencies))
	say("custodian CPU: %s for %d decisions = %s per decision; this process: %s",
		(cpuAfter - cpuBefore).Round(time.Millisecond), n, ((cpuAfter - cpuBefore) / time.Duration(max(n, 1))).Round(time.Microsecond), selfUsed.Round(time.Millisecond))
	say("granted %d, refused %d, failed %d", r.granted.Load(), int64(n)-r.granted.Load()-r.failed.Load(), r.failed.Load())
	say("custodian's log: %d → %d entries", logBefore, logAfter)
	switch {
	case r.failed.Load() > 0:
		return fmt.Errorf("%d requests failed, the first: %v", r.failed.Load(), r.firstErr)
	case r.granted.Load() != int64(n):
		return fmt.Errorf("%d of %d requests refused", int64(n)-r.granted.Load(), n)
	case logAfter-logBefore != int64(n):
		return fmt.Errorf("%d answers but %d new log entries at the custodian", n, logAfter-logBefore)
	}
	say("every answer has its entry in the custodian's log")
	return nil
}

// benchNetwork sets up what the bench commands drive: a register, the GP practice (the custodian)
// holding one consent per patient for the hospital (the requester), and the GP practice's node
// restarted as its own 'schakel run' process under dir, which the caller stops. req is the
// hospital's token request, without its BSN.
func benchNetwork(ctx context.Context, d *demo, dir string, patients int, say func(string, ...any)) (gp, hosp *orgNode, child *custodianProcess, req *schakelv1.RequestTokenRequest, err error) {
	if _, err = d.stepRegister(ctx); err != nil {
		return
	}
	for _, org := range []demoOrg{demoOrgs[0], demoOrgs[2]} {
		if _, err = d.startOrg(ctx, org); err != nil {
			return
		}
		if err = d.admit(ctx, org); err != nil {
			return
		}
	}
	gp, hosp = d.nodes["gp"], d.nodes["hospital"]
	if err = hosp.n.Network().Connect(ctx, d.p2pAddr()); err != nil {
		return
	}
	if err = benchRecordConsents(ctx, gp, hosp.org, patients); err != nil {
		return
	}
	say("set up: register, GP practice (custodian) with %d patients' consents, hospital (requester)", patients)
	// The custodian goes on in a process of its own.
	if err = d.stopNode(ctx, "gp"); err != nil {
		return
	}
	if child, err = startCustodian(ctx, filepath.Join(dir, "gp"), d.reg.DID(), hosp.n.Network().Addrs()[0]); err != nil {
		return
	}
	jkt, err := d.ehrKey()
	if err != nil {
		child.stop()
		return
	}
	req = &schakelv1.RequestTokenRequest{Organization: hosp.org, Custodian: gp.org, DataCategory: "medication", Purpose: "TREAT",
		Employee: &schakelv1.AccessEmployee{Uzi: "900012345", Role: "01.015", Name: "A. de Vries", Assurance: "high"}, DpopJkt: jkt}
	return gp, hosp, child, req, nil
}

// benchRecordConsents records, at the GP practice, a desk consent for grantee for each of n
// patients, several at a time.
func benchRecordConsents(ctx context.Context, gp *orgNode, grantee string, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				_, err := call(ctx, gp.c.acc.RecordConsent, &schakelv1.RecordConsentRequest{Bsn: benchBSN(i), Consent: &schakelv1.Consent{
					Custodian: gp.org, Decision: "permit", GranteeOrg: grantee, DataCategories: []string{"medication"},
					Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// benchBSN returns the i-th test BSN: the first number from 100,000,000 + 1,000·i that passes
// the 11-proof.
func benchBSN(i int) string {
	for n := 100000000 + i*1000; ; n++ {
		s := strconv.Itoa(n)
		if crypto.ValidBSN(s) == nil {
			return s
		}
	}
}

// custodianProcess is a `schakel run` child process.
type custodianProcess struct {
	cmd  *exec.Cmd
	api  string
	c    *client
	done chan error
}

// startCustodian runs `schakel run` on dir and waits until it reports its API address.
func startCustodian(ctx context.Context, dir, register, bootstrap string) (*custodianProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "run", "--data", dir, "--api-addr", "127.0.0.1:0", "--p2p-addr", "/ip4/127.0.0.1/tcp/0",
		"--trusted-register", register, "--bootstrap", bootstrap, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &custodianProcess{cmd: cmd, done: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case line := <-lines:
		// "schakel <version> running: api http://<addr> peer <id>"
		_, rest, ok := strings.Cut(line, "api ")
		api, _, _ := strings.Cut(rest, " ")
		if !ok || api == "" {
			p.stop()
			return nil, fmt.Errorf("custodian process said %q", line)
		}
		p.api, p.c = api, dial(api)
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("custodian process exited: %v", err)
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, errors.New("custodian process did not start within 60 s")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

func (p *custodianProcess) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *custodianProcess) logSize(ctx context.Context, org string) (int64, error) {
	info, err := call(ctx, p.c.logs.GetLogInfo, &schakelv1.GetLogInfoRequest{Organization: org})
	if err != nil {
		return 0, err
	}
	return info.GetSize(), nil
}

// loadResult is what runLoad measured.
type loadResult struct {
	latencies []time.Duration
	elapsed   time.Duration
	granted   atomic.Int64
	failed    atomic.Int64
	firstErr  error
}

// runLoad calls send for every request index, closed loop with o.inflight workers or, when
// o.rate is set, open loop: request i starts at i/rate seconds whatever the others do.
func runLoad(ctx context.Context, o benchOptions, send func(i int) (granted bool, err error)) *loadResult {
	r := &loadResult{latencies: make([]time.Duration, o.requests)}
	var errOnce sync.Once
	one := func(i int) {
		t := time.Now()
		granted, err := send(i)
		r.latencies[i] = time.Since(t)
		switch {
		case err != nil:
			r.failed.Add(1)
			errOnce.Do(func() { r.firstErr = err })
		case granted:
			r.granted.Add(1)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	if o.rate > 0 {
		for i := range o.requests {
			at := start.Add(time.Duration(float64(i) / float64(o.rate) * float64(time.Second)))
			if wait := time.Until(at); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					r.latencies = r.latencies[:i]
					wg.Wait()
					r.elapsed = time.Since(start)
					return r
				}
			}
			wg.Go(func() { one(i) })
		}
	} else {
		var next atomic.Int64
		for range o.inflight {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < o.requests && ctx.Err() == nil; i = int(next.Add(1) - 1) {
					one(i)
				}
			})
		}
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// percentiles formats p50, p90, p99, p99.9 and the maximum of ls.
func percentiles(ls []time.Duration) string {
	if len(ls) == 0 {
		return "no requests"
	}
	s := slices.Clone(ls)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, p99.9 %s, max %s", r(at(0.50)), r(at(0.90)), r(at(0.99)), r(at(0.999)), r(s[len(s)-1]))
}

// processCPU returns the user and system CPU time process pid has used (Linux /proc).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// utime and stime are fields 14 and 15 of stat, in clock ticks (USER_HZ, 100 on Linux).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
