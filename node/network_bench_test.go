package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The peer network's figures (docs/BENCHMARKS.md, "Peer network"). They run many real nodes on
// loopback or fill a store with a million documents, so they run only when asked:
//
//	go test ./node/ -run TestFigurePropagation -v -timeout 30m -netfigures
//	go test ./node/ -run TestFigureCatchUp -v -timeout 30m -netfigures
//	go test ./node/ -run TestFigureStartup -v -timeout 3h -startupdocs 1000000 [-startupdir DIR]
var (
	netFigures  = flag.Bool("netfigures", false, "measure gossip propagation over 50 nodes and the catch-up of 10,000 documents")
	startupDocs = flag.Int("startupdocs", 0, "fill a node's store with this many documents, then time its start-up and read its idle RSS")
	startupDir  = flag.String("startupdir", "", "data directory of -startupdocs, kept and reused between runs (default under os.TempDir())")
)

// hourSync makes a node reconcile only when it admits a peer (and when a figure calls Sync):
// the periodic round waits an hour, so that only gossip delivers in the gossip figure.
func hourSync(c *Config) { c.SyncInterval = time.Hour }

// registration is a service registration of a realistic size, distinct for each i.
func registration(i int) *schakelv1.IssueCredentialRequest_ServiceRegistration {
	return &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
		Endpoints: []*schakelv1.Endpoint{
			{Type: "fhir", Url: fmt.Sprintf("https://ehr.example.nl/fhir/r4/location-%d", i)},
			{Type: "oauth", Url: fmt.Sprintf("https://ehr.example.nl/oauth/location-%d/token", i)},
		},
		DataCategories: []string{"medication", "allergies", "problems"},
		Purposes:       []string{"treatment"},
	}}
}

// documentCount is how many public documents n holds (the reconciliation set).
func documentCount(t *testing.T, n *netNode) uint64 {
	t.Helper()
	c, err := n.catalog.Index().Count(t.Context())
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return c
}

// spread formats the nearest-rank quantiles of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := slices.Sorted(slices.Values(ds))
	q := func(p float64) time.Duration {
		i := max(int(math.Ceil(p*float64(len(s))))-1, 0)
		return s[i].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("min %v, p50 %v, p90 %v, p99 %v, max %v (n=%d)", s[0].Round(100*time.Microsecond), q(0.5), q(0.9), q(0.99), s[len(s)-1].Round(100*time.Microsecond), len(s))
}

// procField reads a numeric field ("wchar", "VmRSS") from a /proc file of the form "name: value".
func procField(t *testing.T, path, field string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, err := strconv.ParseInt(strings.Fields(value)[0], 10, 64)
		if err != nil {
			t.Fatalf("%s %s: %v", path, field, err)
		}
		return v
	}
	t.Fatalf("%s has no %s", path, field)
	return 0
}

// written is how many bytes this process has passed to write(2): with every node of a figure in
// the process and in-memory stores, that is what the nodes sent each other over loopback TCP,
// transport framing included.
func written(t *testing.T) int64 { return procField(t, "/proc/self/io", "wchar") }

// cpuTime is the CPU time (user and system) this process has used, from /proc/self/stat in
// clock ticks of 10 ms (USER_HZ is 100 on Linux).
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatalf("read /proc/self/stat: %v", err)
	}
	// Fields after the command name in parentheses: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("/proc/self/stat: %v", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// metric sums the samples of n's /metrics lines that start with prefix and contain every one of
// labels.
func metric(t *testing.T, n *netNode, prefix string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(line, l) }) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestFigurePropagation measures how long one document takes to reach every node of a 50-node
// network by gossip alone, and the bytes the network sends for it.
func TestFigurePropagation(t *testing.T) {
	if !*netFigures {
		t.Skip("starts 50 nodes; run with -netfigures")
	}
	const size, docs, fanout = 50, 100, 4
	ctx := t.Context()
	t.Logf("load average at start: %s", loadavg())
	reg := newRegister(t)
	rng := rand.New(rand.NewPCG(7, 8))
	nodes := make([]*netNode, size)
	for i := range nodes {
		name := fmt.Sprintf("Praktijk %d", i)
		nodes[i] = startNetNode(t, reg, "", name, hourSync)
		nodes[i].org = hostOrganization(t, nodes[i].Node, reg, name, true)
	}
	// Each node dials up to fanout random earlier ones: a connected graph of ~4·size links.
	degree := make([]int, size)
	for i := 1; i < size; i++ {
		for _, j := range rng.Perm(i)[:min(i, fanout)] {
			link(t, nodes[i], nodes[j])
			degree[i]++
			degree[j]++
		}
	}
	for i, n := range nodes {
		eventually(t, time.Minute, fmt.Sprintf("node %d admits its %d peers", i, degree[i]), func() bool { return admittedCount(n) == degree[i] })
	}
	// Periodic reconciliation is off: bring every node to the same set by explicit syncs, so that
	// every node can verify every organisation's documents when the measurement starts.
	converged := false
	for range 10 {
		want := documentCount(t, nodes[0])
		converged = true
		for _, n := range nodes {
			converged = converged && documentCount(t, n) == want
		}
		if converged {
			break
		}
		for _, n := range nodes {
			for _, p := range n.Network().AdmittedPeers() {
				if _, err := n.Network().Sync(ctx, p); err != nil {
					t.Logf("Sync: %v", err)
				}
			}
		}
	}
	if !converged {
		t.Fatalf("the nodes hold different sets after 10 passes of syncs")
	}
	time.Sleep(3 * time.Second) // gossip meshes form over a few heartbeats

	// propagate issues a service registration at node src and returns how long each other node
	// took to store it, and the nodes that did not within 10 s (gossip takes milliseconds;
	// reconciliation, which would bring the rest, is off).
	issue := []time.Duration{} // IssueCredential on the issuing node
	docSize := 0
	propagate := func(src, k int) (took []time.Duration, missing []int) {
		start := time.Now()
		resp, err := nodes[src].IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: nodes[src].org, Subject: registration(k)})
		if err != nil {
			t.Fatalf("IssueCredential: %v", err)
		}
		issue = append(issue, time.Since(start))
		jwt := []byte(resp.GetCredential().GetJwt())
		docSize += len(jwt)
		id := network.DocumentID(jwt)
		for i := range nodes {
			if i != src {
				missing = append(missing, i)
			}
		}
		for deadline := start.Add(10 * time.Second); len(missing) > 0 && time.Now().Before(deadline); {
			for i := 0; i < len(missing); {
				if ok, _ := nodes[missing[i]].catalog.Has(ctx, id); ok {
					took = append(took, time.Since(start))
					missing = slices.Delete(missing, i, i+1)
					continue
				}
				i++
			}
			time.Sleep(2 * time.Millisecond)
		}
		return took, missing
	}

	// An organisation's first registration also makes its status list, gossiped just before
	// it; a node that validates the registration first holds it until the list is stored, and
	// a document stored from the held queue is not forwarded.
	firstReached, firstMissed := 0, 0
	for k, src := range rng.Perm(size) {
		took, missing := propagate(src, k)
		firstReached += len(took)
		if len(missing) > 0 {
			firstMissed++
			t.Logf("first registration of node %d's organisation did not reach %d nodes within 10 s: %v", src, len(missing), missing)
		}
	}
	t.Logf("first registrations of the %d organisations: %d of %d deliveries within 10 s; %d registrations missed some node",
		size, firstReached, size*(size-1), firstMissed)
	heldByGossip := func() float64 {
		var held float64
		for _, n := range nodes {
			held += metric(t, n, `schakel_documents_received_total{`, `source="gossip"`, `result="held"`)
		}
		return held
	}
	held := heldByGossip()
	t.Logf("documents gossip brought before what they depend on (held on arrival), all nodes: %.0f", held)
	issue, docSize = issue[:0], 0

	// Background traffic (gossip heartbeats, pings) measured over an idle window.
	const idle = 5 * time.Second
	w0, c0 := written(t), cpuTime(t)
	time.Sleep(idle)
	idleRate := float64(written(t)-w0) / idle.Seconds()
	idleCPU := float64(cpuTime(t)-c0) / float64(idle)
	var (
		perNode []time.Duration // each delivery to a node other than the issuer
		toAll   []time.Duration // each document, to the last node
		missed  int
	)
	w0, c0, t0 := written(t), cpuTime(t), time.Now()
	for k := range docs {
		src := rng.IntN(size)
		took, missing := propagate(src, size+k)
		perNode = append(perNode, took...)
		if len(missing) > 0 {
			missed += len(missing)
			t.Logf("registration %d from node %d did not reach nodes %v within 10 s", k, src, missing)
		} else {
			toAll = append(toAll, slices.Max(took))
		}
		time.Sleep(time.Duration(100+rng.IntN(100)) * time.Millisecond) // documents one at a time
	}
	time.Sleep(4 * time.Second) // gossip announcements (IHAVE) of the last document end
	elapsed := time.Since(t0)
	sent := float64(written(t)-w0) - idleRate*elapsed.Seconds()
	cpu := time.Duration(float64(cpuTime(t)-c0) - idleCPU*float64(elapsed))

	t.Logf("load average at end: %s", loadavg())
	t.Logf("%d nodes, %d links, %d later registrations of %d bytes on average, from random nodes", size, sumInts(degree)/2, docs, docSize/docs)
	t.Logf("IssueCredential on the issuing node: %s", spread(issue))
	t.Logf("time until every node holds the registration: %s", spread(toAll))
	t.Logf("time until a node holds the registration (each delivery): %s", spread(perNode))
	t.Logf("deliveries missing after 10 s: %d of %d; documents held on arrival meanwhile: %.0f", missed, docs*(size-1), heldByGossip()-held)
	t.Logf("CPU: %.0f%% of one core while idle; %v per registration beyond that (%v per delivery, the test's polling included)",
		100*idleCPU, (cpu / docs).Round(10*time.Microsecond), (cpu / time.Duration(docs*(size-1))).Round(time.Microsecond))
	t.Logf("bytes written to sockets: %.0f per registration (idle rate %.0f B/s subtracted) = %.1f bytes per delivery = %.2f× the registration per delivery",
		sent/docs, idleRate, sent/float64(docs*(size-1)), sent/float64(docs*(size-1))/(float64(docSize)/docs))
}

func sumInts(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// TestFigureCatchUp measures how a node that was offline while its peer stored 10,000
// documents catches up when it comes back: wall time and bytes, by the reconciliation the
// connection starts.
func TestFigureCatchUp(t *testing.T) {
	if !*netFigures {
		t.Skip("stores 10,000 documents; run with -netfigures")
	}
	const docs = 10_000
	ctx := t.Context()
	t.Logf("load average at start: %s", loadavg())
	reg := newRegister(t)
	a := startNetNode(t, reg, "", "Huisartsenpraktijk Jansen", hourSync)
	a.org = hostOrganization(t, a.Node, reg, "Huisartsenpraktijk Jansen", true)
	dir := t.TempDir()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	b := startNetNode(t, reg, dir, "Apotheek Janssens", hourSync)
	b.org = hostOrganization(t, b.Node, reg, "Apotheek Janssens", true)
	link(t, b, a)
	eventually(t, 20*time.Second, "the nodes admit each other and hold the same documents", func() bool {
		return admittedCount(a) == 1 && admittedCount(b) == 1 && documentCount(t, a) == documentCount(t, b)
	})
	held := documentCount(t, b)
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	var payload int
	var first []byte
	start := time.Now()
	for i := range docs {
		resp, err := a.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: a.org, Subject: registration(i)})
		if err != nil {
			t.Fatalf("IssueCredential %d: %v", i, err)
		}
		jwt := []byte(resp.GetCredential().GetJwt())
		payload += len(jwt)
		if first == nil {
			first = jwt
		}
	}
	issued := time.Since(start)
	// The first registration also made A's status list, a document B lacks too.
	c, err := vc.Parse(first)
	if err != nil {
		t.Fatalf("vc.Parse: %v", err)
	}
	list, err := a.creds.StatusList(ctx, c.Status.StatusListCredential)
	if err != nil {
		t.Fatalf("StatusList: %v", err)
	}
	payload += len(list)
	want := documentCount(t, a)
	behind := int(want - held)
	start = time.Now()
	b2 := startNetNode(t, reg, dir, "Apotheek Janssens", hourSync)
	b2.org = b.org
	restart := time.Since(start)
	w0, t0 := written(t), time.Now()
	link(t, b2, a)
	var caughtUp time.Duration
	for {
		if documentCount(t, b2) == want {
			caughtUp = time.Since(t0)
			break
		}
		if time.Since(t0) > 5*time.Minute {
			t.Fatalf("B holds %d of %d documents after 5 minutes; B's peers: %+v", documentCount(t, b2), want, b2.Network().Peers())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Both sides reconcile when they admit each other; wait for both to have recorded it.
	synced := func(n *netNode) bool {
		for _, p := range n.Network().Peers() {
			if p.Admitted && p.Syncs > 0 {
				return true
			}
		}
		return false
	}
	eventually(t, time.Minute, "both nodes finish their syncs", func() bool { return synced(a) && synced(b2) })
	sent := written(t) - w0
	for _, c := range b2.Network().Host().Network().ConnsToPeer(a.PeerID()) {
		t.Logf("B's connection to A: %s, security %s, muxer %s", c.RemoteMultiaddr(), c.ConnState().Security, c.ConnState().StreamMultiplexer)
	}
	// Every sync byte between the two passes B, as the client of its own session or the server
	// of A's: B's counters are the whole exchange (A's mirror them).
	bOut, bIn := metric(t, b2, `schakel_sync_bytes_total{direction="out"}`), metric(t, b2, `schakel_sync_bytes_total{direction="in"}`)
	// Documents fetched by sync are stored at once or, when they arrive before what they depend
	// on (registrations before A's status list), held and stored a moment later.
	bySync := metric(t, b2, `schakel_documents_received_total{`, `source="sync"`)
	heldDocs := metric(t, b2, `schakel_documents_received_total{`, `source="sync"`, `result="held"`)
	byGossip := metric(t, b2, `schakel_documents_received_total{`, `source="gossip"`)
	// The documents are alike in size: what sync fetched is bySync average documents.
	recon := bOut + bIn - bySync*float64(payload)/float64(behind)

	// A reconciliation between the two, now in sync.
	r, err := b2.Network().Sync(ctx, a.PeerID())
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}

	// A newcomer in memory catches up the same way without an fsync per stored document.
	cn := startNetNode(t, reg, "", "Praktijk Nieuw", hourSync)
	hostOrganization(t, cn.Node, reg, "Praktijk Nieuw", true)
	t0 = time.Now()
	link(t, cn, a)
	eventually(t, 5*time.Minute, "the newcomer holds everything A holds", func() bool {
		ca := documentCount(t, a)
		return ca > want && documentCount(t, cn) == ca
	})
	inMemory := time.Since(t0)

	t.Logf("load average at end: %s", loadavg())
	t.Logf("A issued %d service registrations in %v (%.0f µs each); B was behind by %d documents, %d bytes (%.0f B each)",
		docs, issued.Round(time.Millisecond), float64(issued.Microseconds())/docs, behind, payload, float64(payload)/float64(behind))
	t.Logf("B restarted in %v; from dialling A to holding all %d documents: %v (%.0f µs per document)",
		restart.Round(time.Millisecond), want, caughtUp.Round(time.Millisecond), float64(caughtUp.Microseconds())/float64(behind))
	t.Logf("documents B received: %.0f by sync (%.0f of them held until A's status list came), %.0f by gossip", bySync, heldDocs, byGossip)
	t.Logf("sync bytes between A and B: %.0f out of B, %.0f into B; reconciliation (all but the documents) ≈ %.0f = %.1f B per delivered document",
		bOut, bIn, recon, recon/float64(behind))
	t.Logf("sync bytes / payload = %.3f; bytes written to sockets / payload = %.3f (all traffic, security, muxer and connect framing included; connect gzips the fetched batches)",
		(bOut+bIn)/float64(payload), float64(sent)/float64(payload))
	t.Logf("in-sync reconciliation of %d documents afterwards: %d rounds, %d bytes out, %d bytes in, %d missing",
		want, r.Rounds, r.BytesOut, r.BytesIn, r.Missing)
	t.Logf("a newcomer with an in-memory store (no fsync) caught up on the same documents in %v", inMemory.Round(time.Millisecond))
}

// TestFigureStartup fills an on-disk node with N public documents (kept in -startupdir for
// later runs), then starts `schakel run` on it in a separate process: the time from exec until
// /readyz answers, and the RSS once idle. An empty node is measured alongside.
func TestFigureStartup(t *testing.T) {
	if *startupDocs <= 0 {
		t.Skip("fills a store; run with -startupdocs N")
	}
	docs := *startupDocs
	dir := *startupDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("schakel-startup-%d", docs))
	}
	marker := filepath.Join(dir, "figure-filled")
	if _, err := os.Stat(marker); err != nil {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatalf("RemoveAll: %v", err)
		}
		fillNode(t, dir, docs)
		if err := os.WriteFile(marker, []byte(strconv.Itoa(docs)), 0o600); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
	}
	out, err := exec.Command("du", "-sh", filepath.Join(dir, dbDir)).Output()
	if err != nil {
		t.Fatalf("du: %v", err)
	}
	t.Logf("data directory %s, database %s", dir, strings.Fields(string(out))[0])

	bin := filepath.Join(t.TempDir(), "schakel")
	build := exec.Command("go", "build", "-o", bin, "github.com/schakel-health/schakel/cmd/schakel")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	empty := t.TempDir()
	if _, err := Init(empty); err != nil {
		t.Fatalf("Init: %v", err)
	}
	// The first start after a bulk fill compacts what the fill left in badger's level 0; it is
	// reported apart, with badger's log lines about compaction counted.
	if _, err := os.Stat(filepath.Join(dir, "figure-settled")); err != nil {
		ready, rss, logs := startOnce(t, bin, dir, "debug")
		t.Logf("first start after the fill: ready after %v; after 15 s %s; %d log lines about compaction",
			ready.Round(time.Millisecond), rss, strings.Count(logs, "ompact"))
		if err := os.WriteFile(filepath.Join(dir, "figure-settled"), nil, 0o600); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
	}
	t.Logf("load average: %s", loadavg())
	for _, c := range []struct {
		name, dir string
	}{{"empty node", empty}, {fmt.Sprintf("%d documents", docs), dir}} {
		// Warm: the files are in the page cache, as after a restart. Cold: the data directory's
		// files are dropped from the page cache first (the binary stays cached).
		for _, cold := range []bool{false, true, false, true} {
			cache := "warm"
			if cold {
				cache = "cold"
				evict(t, c.dir)
			}
			ready, rss, _ := startOnce(t, bin, c.dir, "warn")
			t.Logf("%s, %s: ready after %v; after 15 s idle %s", c.name, cache, ready.Round(time.Millisecond), rss)
		}
	}
	t.Logf("load average: %s", loadavg())

	// In process: New and Start, and the node holds what was filled.
	start := time.Now()
	n := startNetNode(t, newRegister(t), dir, "", hourSync)
	started := time.Since(start)
	if c := documentCount(t, n); c < uint64(docs) {
		t.Fatalf("the node holds %d documents, want at least %d", c, docs)
	}
	t.Logf("in process, New and Start took %v; the node holds %d public documents", started.Round(time.Millisecond), documentCount(t, n))
}

// evict drops the files under dir from the page cache (GNU dd's nocache flag, which calls
// posix_fadvise DONTNEED), so that a start reads them from disk.
func evict(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if out, err := exec.Command("dd", "if="+path, "iflag=nocache", "count=0", "status=none").CombinedOutput(); err != nil {
			return fmt.Errorf("dd %s: %v: %s", path, err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("evict: %v", err)
	}
}

// startOnce runs `schakel run` on dir and returns the time from exec until /readyz answers 200,
// its memory after 15 s idle, and its logs.
func startOnce(t *testing.T, bin, dir, logLevel string) (time.Duration, string, string) {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "run", "--data", dir, "--api-addr", addr, "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--log-level", logLevel)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start schakel run: %v", err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	client := &http.Client{Timeout: time.Second}
	var ready time.Duration
	for ready == 0 {
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready = time.Since(start)
			}
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("not ready after a minute; logs:\n%s", logs.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(15 * time.Second)
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	mib := func(field string) string {
		return fmt.Sprintf("%s %.1f MiB", field, float64(procField(t, status, field))/1024)
	}
	rss := strings.Join([]string{mib("VmRSS"), mib("RssAnon"), mib("RssFile"), mib("VmHWM")}, ", ")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("schakel run: %v; logs:\n%s", err, logs.String())
	}
	return ready, rss, logs.String()
}

// fillNode makes an on-disk node in dir that hosts one organisation and holds docs DID genesis
// events of other organisations, each verified and indexed for reconciliation like a document
// received from a peer.
func fillNode(t *testing.T, dir string, docs int) {
	t.Helper()
	ctx := t.Context()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	reg := newRegister(t)
	n := startNetNode(t, reg, dir, "Huisartsenpraktijk Jansen", hourSync)
	hostOrganization(t, n.Node, reg, "Huisartsenpraktijk Jansen", true)
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// The node's own wiring of store, catalog and DID registry: every event is verified and
	// stored with its reconciliation index rows and catalog copy in one transaction. Only
	// SyncWrites is off, for the fill: an fsync per document would make it take an hour, and
	// the stored data is the same.
	off := false
	db, err := store.Open(store.Config{Dir: filepath.Join(dir, dbDir), SyncWrites: &off, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer db.Close()
	cat, err := network.NewCatalog(db)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	dids, err := did.New(did.Config{OnChange: cat.OnChange}, db)
	if err != nil {
		t.Fatalf("did.New: %v", err)
	}
	// Events signed in parallel, issued over the last two years, stored by one writer (every
	// store updates the root row of the index, so concurrent writers would only conflict).
	events := make(chan []byte, 4096)
	var wg sync.WaitGroup
	workers := runtime.NumCPU()
	now := time.Now()
	var genErr error
	var once sync.Once
	for w := range workers {
		wg.Go(func() {
			for i := w; i < docs; i += workers {
				sig, enc, err := did.GenerateKeys()
				if err == nil {
					var ev []byte
					ev, _, err = did.NewGenesis(sig, enc.Public(), now.Add(-time.Duration(rand.Int64N(int64(2*365*24*time.Hour)))))
					if err == nil {
						select {
						case events <- ev:
							continue
						case <-ctx.Done():
							err = ctx.Err()
						}
					}
				}
				once.Do(func() { genErr = err })
				return
			}
		})
	}
	go func() { wg.Wait(); close(events) }()
	start, stored := time.Now(), 0
	for ev := range events {
		if _, _, err := dids.AddEvent(ctx, ev); err != nil {
			t.Fatalf("AddEvent: %v", err)
		}
		if stored++; stored%100_000 == 0 {
			t.Logf("filled %d documents in %v", stored, time.Since(start).Round(time.Second))
		}
	}
	if genErr != nil && !errors.Is(genErr, context.Canceled) {
		t.Fatalf("generate events: %v", genErr)
	}
	if stored != docs {
		t.Fatalf("stored %d documents, want %d", stored, docs)
	}
	t.Logf("filled %d documents in %v", stored, time.Since(start).Round(time.Second))
}
