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
	"net"
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
	"github.com/schakel-health/schakel/internal/register"
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

// startFigureNode is startNetNode with the reconciliation interval chosen: the gossip figure sets
// it to an hour so that only gossip delivers. Logs are discarded.
func startFigureNode(t *testing.T, reg *register.Register, dir, name string, syncInterval time.Duration) *netNode {
	t.Helper()
	cfg := DefaultConfig()
	cfg.InMemory = dir == ""
	cfg.DataDir = dir
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = []string{reg.DID()}
	cfg.SyncInterval = syncInterval
	n, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return &netNode{Node: n}
}

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
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, max %v (n=%d)", q(0.5), q(0.9), q(0.99), s[len(s)-1].Round(100*time.Microsecond), len(s))
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

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// metric sums the samples of n's /metrics lines that start with prefix.
func metric(t *testing.T, n *netNode, prefix string) float64 {
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
		if !strings.HasPrefix(line, prefix) {
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
		nodes[i] = startFigureNode(t, reg, "", name, time.Hour)
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
	for pass := 0; pass < 10 && !converged; pass++ {
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
	// Background traffic (gossip heartbeats, pings) measured over an idle window.
	const idle = 5 * time.Second
	w0 := written(t)
	time.Sleep(idle)
	idleRate := float64(written(t)-w0) / idle.Seconds()

	var (
		perNode []time.Duration // each delivery to a node other than the issuer
		toAll   []time.Duration // each document, to the last node
		issue   []time.Duration // IssueCredential on the issuing node
		docSize int
		missed  int
	)
	w0, t0 := written(t), time.Now()
	for k := range docs {
		src := rng.IntN(size)
		start := time.Now()
		resp, err := nodes[src].IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: nodes[src].org, Subject: registration(k)})
		if err != nil {
			t.Fatalf("IssueCredential: %v", err)
		}
		issue = append(issue, time.Since(start))
		jwt := []byte(resp.GetCredential().GetJwt())
		docSize += len(jwt)
		id := network.DocumentID(jwt)
		var pending []*netNode
		for i, n := range nodes {
			if i != src {
				pending = append(pending, n)
			}
		}
		var last time.Duration
		deadline := start.Add(30 * time.Second)
		for len(pending) > 0 && time.Now().Before(deadline) {
			for i := 0; i < len(pending); {
				if ok, _ := pending[i].catalog.Has(ctx, id); ok {
					last = time.Since(start)
					perNode = append(perNode, last)
					pending = slices.Delete(pending, i, i+1)
					continue
				}
				i++
			}
			time.Sleep(2 * time.Millisecond)
		}
		if len(pending) > 0 {
			missed += len(pending)
			continue
		}
		toAll = append(toAll, last)
		time.Sleep(time.Duration(100+rng.IntN(100)) * time.Millisecond) // documents one at a time
	}
	time.Sleep(4 * time.Second) // gossip announcements (IHAVE) of the last document end
	elapsed := time.Since(t0)
	sent := float64(written(t)-w0) - idleRate*elapsed.Seconds()

	t.Logf("load average at end: %s", loadavg())
	t.Logf("%d nodes, %d links, %d documents of %d bytes on average, from random nodes", size, sumInts(degree)/2, docs, docSize/docs)
	t.Logf("IssueCredential on the issuing node: %s", spread(issue))
	t.Logf("time until every node holds the document: %s", spread(toAll))
	t.Logf("time until a node holds the document (each delivery): %s", spread(perNode))
	t.Logf("deliveries missing after 30 s: %d of %d", missed, docs*(size-1))
	t.Logf("bytes written to sockets: %.0f per document (idle rate %.0f B/s subtracted) = %.1f bytes per delivery = %.2f× the document per delivery",
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
	a := startFigureNode(t, reg, "", "Huisartsenpraktijk Jansen", time.Hour)
	a.org = hostOrganization(t, a.Node, reg, "Huisartsenpraktijk Jansen", true)
	dir := t.TempDir()
	if _, err := Init(dir); err != nil {
		t.Fatalf("Init: %v", err)
	}
	b := startFigureNode(t, reg, dir, "Apotheek Janssens", time.Hour)
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
	aOut0, aIn0 := metric(t, a, `schakel_sync_bytes_total{direction="out"}`), metric(t, a, `schakel_sync_bytes_total{direction="in"}`)

	start = time.Now()
	b2 := startFigureNode(t, reg, dir, "Apotheek Janssens", time.Hour)
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
			t.Fatalf("B holds %d of %d documents after 5 minutes", documentCount(t, b2), want)
		}
		time.Sleep(2 * time.Millisecond)
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
	bOut, bIn := metric(t, b2, `schakel_sync_bytes_total{direction="out"}`), metric(t, b2, `schakel_sync_bytes_total{direction="in"}`)
	aOut, aIn := metric(t, a, `schakel_sync_bytes_total{direction="out"}`)-aOut0, metric(t, a, `schakel_sync_bytes_total{direction="in"}`)-aIn0
	fetched := metric(t, b2, `schakel_documents_received_total{result="stored",source="sync"}`) +
		metric(t, b2, `schakel_documents_received_total{result="duplicate",source="sync"}`)
	// B's "in" counts the reconciliation answers and the fetched documents; every document
	// was fetched once when fetched == behind.
	recon := bOut + bIn - float64(payload) + aOut + aIn

	// A reconciliation between the two, now in sync.
	r, err := b2.Network().Sync(ctx, a.PeerID())
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}

	t.Logf("load average at end: %s", loadavg())
	t.Logf("A issued %d service registrations in %v (%.0f µs each); B was behind by %d documents, %d bytes (%.0f B each)",
		docs, issued.Round(time.Millisecond), float64(issued.Microseconds())/docs, behind, payload, float64(payload)/float64(behind))
	t.Logf("B restarted in %v; from dialling A to holding all %d documents: %v (%.0f µs per document)",
		restart.Round(time.Millisecond), want, caughtUp.Round(time.Millisecond), float64(caughtUp.Microseconds())/float64(behind))
	t.Logf("documents B fetched by sync: %.0f (behind: %d)", fetched, behind)
	t.Logf("sync bytes: B out %.0f, B in %.0f (reconciliation answers and documents), A out %.0f, A in %.0f", bOut, bIn, aOut, aIn)
	t.Logf("reconciliation bytes (all but the documents): %.0f = %.1f B per delivered document", recon, recon/float64(behind))
	t.Logf("application bytes / payload = %.3f; bytes written to sockets / payload = %.3f (transport framing, Hello and gossip included)",
		(bOut+bIn+aOut+aIn)/float64(payload), float64(sent)/float64(payload))
	t.Logf("in-sync reconciliation of %d documents afterwards: %d rounds, %d bytes out, %d bytes in, %d missing",
		want, r.Rounds, r.BytesOut, r.BytesIn, r.Missing)
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
	t.Logf("load average: %s", loadavg())
	for _, c := range []struct {
		name, dir string
	}{{"empty node", empty}, {fmt.Sprintf("%d documents", docs), dir}} {
		for range 3 {
			ready, rss := startOnce(t, bin, c.dir)
			t.Logf("%s: ready after %v; after 15 s idle %s", c.name, ready.Round(time.Millisecond), rss)
		}
	}
	t.Logf("load average: %s", loadavg())
}

// startOnce runs `schakel run` on dir and returns the time from exec until /readyz answers 200,
// and its memory after 15 s idle.
func startOnce(t *testing.T, bin, dir string) (time.Duration, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "run", "--data", dir, "--api-addr", addr, "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--log-level", "warn")
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
	return ready, rss
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
	n := startFigureNode(t, reg, dir, "Huisartsenpraktijk Jansen", time.Hour)
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
