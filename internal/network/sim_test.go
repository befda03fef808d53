//go:build simnet

// The 1,000-node simulation of gossip and catch-up (DESIGN.md §4, docs/BENCHMARKS.md "Peer
// network: 1,000 nodes in virtual time"). It needs the build tag and the node count:
//
//	SCHAKEL_SIM_NODES=1000 go test -tags simnet -run TestSimGossip -v -timeout 60m ./internal/network/
//
// The tag keeps go-libp2p's x/simlibp2p (and the github.com/marcopolo/simnet module it is built
// on) out of the ordinary test build.

package network_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	lpnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/x/simlibp2p"
	"github.com/marcopolo/simnet"

	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/network/reconcile"
	"github.com/schakel-health/schakel/internal/store"
)

// The simulated network and workload.
const (
	// simLatency is the one-way delay of every packet between any two nodes (a round trip is
	// twice that; the test pings once to check).
	simLatency = 10 * time.Millisecond
	// simBandwidth is each node's uplink and downlink (the figure go-libp2p-pubsub's own
	// simulations use).
	simBandwidth = 20 * simlibp2p.OneMbps
	// simDials is how many random other nodes each node dials: about 2·simDials connections
	// a node.
	simDials = 8
	// simMeshWarmup lets meshes form (heartbeats every second) before anything is published.
	simMeshWarmup = 5 * time.Second
	simDocs       = 50
	simDocSize    = 2048 // an OrganizationCredential is ≈1 KB, a key event less
	simPublishGap = 100 * time.Millisecond
	// simDrain bounds how long gossip gets, after the last publish, to reach every connected
	// node.
	simDrain = 30 * time.Second
	// simIsolated nodes lose all their connections before the publishes and catch up by
	// reconciliation once reconnected.
	simIsolated = 10
	// simValidate models the validator's cost on each node before it forwards a document: a
	// credential verification (62 µs, docs/BENCHMARKS.md) plus one fsynced badger commit of
	// the document (~0.3 ms alone on this machine), rounded up. The CPU the simulation itself
	// spends takes no virtual time.
	simValidate = 500 * time.Microsecond
	// simBaseItems is the set every node already holds before the run (older documents), so
	// that reconciliation works on an index of realistic size.
	simBaseItems = 10_000
	// simCatchUpConcurrency bounds the catch-ups (each with two in-memory stores) in flight.
	simCatchUpConcurrency = 32
)

const simSyncProtocol = "/schakel-sim/sync/1"

func TestSimGossip(t *testing.T) {
	nodes, _ := strconv.Atoi(os.Getenv("SCHAKEL_SIM_NODES"))
	if nodes == 0 {
		t.Skip("set SCHAKEL_SIM_NODES (e.g. 100 or 1000) to run the simulation")
	}
	if nodes < 4*simIsolated {
		t.Fatalf("SCHAKEL_SIM_NODES=%d: need at least %d", nodes, 4*simIsolated)
	}
	seed, _ := strconv.ParseUint(os.Getenv("SCHAKEL_SIM_SEED"), 10, 64)
	base := simBase(seed)
	// What one node's index costs, measured here where nothing else runs: why only the nodes
	// that catch up, and the neighbours they ask, get one in the simulation.
	before, built := heapInUse(), time.Now()
	one, err := (&simRun{base: base}).openStore(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cost, took := heapInUse()-before, time.Since(built)
	one.db.Close()
	t.Logf("one node's in-memory store and index of %d items: %.1f MiB of heap, built in %v (every node: %.1f GiB, %v)",
		len(base), float64(cost)/(1<<20), took.Round(time.Millisecond), float64(cost)*float64(nodes)/(1<<30),
		(took * time.Duration(nodes)).Round(time.Second))
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		runSim(t, nodes, seed, base)
	})
	t.Logf("wall time %v; %s", time.Since(wall).Round(time.Second), memStats())
}

type simNode struct {
	i     int
	h     host.Host
	topic *pubsub.Topic
	adj   []int // topology neighbours (dialed or dialing)
}

// simRun holds what the simulation records: recv[d*n+i] is the virtual time (Unix ns) at which
// node i accepted document d, 0 if it has not.
type simRun struct {
	n       int
	nodes   []*simNode
	docs    [][]byte
	docIdx  map[string]int // message id (SHA-256 of the document) → index
	docTime []time.Time    // when each was published
	from    []int          // publisher of each
	recv    []atomic.Int64
	caught  []atomic.Int64 // the same, for documents received by catch-up
	base    []reconcile.Item
}

// got reports whether node i holds document d: it published it or received it.
func (r *simRun) got(d, i int) bool {
	return r.from[d] == i || r.recv[d*r.n+i].Load() != 0 || r.caught[d*r.n+i].Load() != 0
}

// simBase returns the items every node holds before the run: simBaseItems documents of the
// year before the simulation's clock starts (2000-01-01 UTC).
func simBase(seed uint64) []reconcile.Item {
	rng := rand.New(rand.NewPCG(seed, 0xba5e))
	epoch := time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	base := make([]reconcile.Item, simBaseItems)
	for k := range base {
		base[k].Time = uint64(epoch + rng.Int64N(364*24*3600))
		for b := range base[k].ID {
			base[k].ID[b] = byte(rng.Uint32())
		}
	}
	return base
}

func runSim(t *testing.T, n int, seed uint64, base []reconcile.Item) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, 0x5c4a4e1))
	quiet := slog.New(slog.DiscardHandler)
	r := &simRun{n: n, docIdx: map[string]int{}, base: base}
	r.recv = make([]atomic.Int64, simDocs*n)
	r.caught = make([]atomic.Int64, simDocs*n)
	phase := phaseTimer(t)

	// Hosts on one simulated network: QUIC over simnet, every packet delayed simLatency.
	link := simnet.LinkSettings{BitsPerSecond: simBandwidth}
	nw, meta, err := simlibp2p.SimpleLibp2pNetwork(
		[]simlibp2p.NodeLinkSettingsAndCount{{
			LinkSettings: simnet.NodeBiDiLinkSettings{Downlink: link, Uplink: link},
			Count:        n,
		}},
		simnet.StaticLatency(simLatency),
		simlibp2p.NetworkSettings{UseBlankHost: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	nw.Logger = quiet
	nw.Start()
	t.Cleanup(func() {
		cancel()
		for _, h := range meta.Nodes {
			h.Close()
		}
		nw.Close()
	})

	// Documents, made up front so that validators can look them up without locks.
	for d := range simDocs {
		doc := make([]byte, simDocSize)
		for k := range doc {
			doc[k] = byte(rng.Uint32())
		}
		id := network.DocumentID(doc)
		r.docIdx[string(id[:])] = d
		r.docs = append(r.docs, doc)
	}
	r.docTime = make([]time.Time, simDocs)
	r.from = make([]int, simDocs)
	for d := range r.from {
		r.from[d] = -1
	}

	// gossipsub on every host with the nodes' own options; everyone is admitted.
	admitted := func(peer.ID) bool { return true }
	for i, h := range meta.Nodes {
		ps, err := pubsub.NewGossipSub(ctx, h, network.GossipOptions(admitted, network.DefaultMaxDocumentSize, quiet)...)
		if err != nil {
			t.Fatal(err)
		}
		nd := &simNode{i: i, h: h}
		if err := ps.RegisterTopicValidator(network.TopicDocuments, r.validator(nd), pubsub.WithValidatorTimeout(30*time.Second)); err != nil {
			t.Fatal(err)
		}
		if nd.topic, err = ps.Join(network.TopicDocuments); err != nil {
			t.Fatal(err)
		}
		sub, err := nd.topic.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			// As in the node: documents are handled in the validator; the subscription keeps
			// the node in the mesh.
			for {
				if _, err := sub.Next(ctx); err != nil {
					sub.Cancel()
					return
				}
			}
		}()
		r.nodes = append(r.nodes, nd)
	}
	phase("hosts and gossipsub up")

	// A sparse random topology: each node dials simDials distinct others.
	dials := make([][]int, n)
	adj := make([]map[int]bool, n)
	for i := range adj {
		adj[i] = map[int]bool{}
	}
	for i := range n {
		for len(dials[i]) < simDials {
			j := rng.IntN(n)
			if j == i || slices.Contains(dials[i], j) {
				continue
			}
			dials[i] = append(dials[i], j)
			adj[i][j], adj[j][i] = true, true
		}
	}
	for i, nd := range r.nodes {
		for j := range adj[i] {
			nd.adj = append(nd.adj, j)
		}
		slices.Sort(nd.adj)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var dialErrs atomic.Int64
	for i := range n {
		wg.Go(func() {
			for _, j := range dials[i] {
				if err := r.connect(ctx, i, j); err != nil {
					dialErrs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if e := dialErrs.Load(); e > 0 {
		t.Fatalf("%d of %d dials failed", e, n*simDials)
	}
	conns := make([]int, n)
	for i, nd := range r.nodes {
		conns[i] = len(nd.h.Network().Peers())
	}
	slices.Sort(conns)
	t.Logf("topology: %d nodes, %d dials each; peers a node: min %d, median %d, max %d; dialing took %v virtual",
		n, simDials, conns[0], conns[n/2], conns[n-1], time.Since(start))
	phase("connected")

	// The link as configured: one ping round trip.
	ping.NewPingService(r.nodes[r.nodes[0].adj[0]].h)
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	res := <-ping.Ping(pctx, r.nodes[0].h, r.nodes[r.nodes[0].adj[0]].h.ID())
	pcancel()
	if res.Error != nil {
		t.Fatalf("ping: %v", res.Error)
	}
	t.Logf("link: %v one way, %d Mbit/s up and down; ping round trip %v", simLatency, simBandwidth/simlibp2p.OneMbps, res.RTT)

	time.Sleep(simMeshWarmup)
	phase("meshes formed")

	// Isolate simIsolated nodes: they drop every connection and take no part in the publishes.
	perm := rng.Perm(n)
	isolated := perm[:simIsolated]
	isIsolated := make([]bool, n)
	for _, x := range isolated {
		isIsolated[x] = true
	}
	// Each side also forgets the other's addresses: a stream opened as the connection closes
	// (gossipsub reopening one) would otherwise dial again.
	isolate := func() (left int) {
		for _, x := range isolated {
			hx := r.nodes[x].h
			for _, p := range hx.Network().Peers() {
				hx.Peerstore().ClearAddrs(p)
				for _, j := range r.nodes[x].adj {
					if r.nodes[j].h.ID() == p {
						r.nodes[j].h.Peerstore().ClearAddrs(hx.ID())
					}
				}
				hx.Network().ClosePeer(p)
			}
		}
		time.Sleep(time.Second) // and the neighbours' meshes replace them
		for _, x := range isolated {
			left += len(r.nodes[x].h.Network().Peers())
		}
		return left
	}
	for try := 0; isolate() > 0; try++ {
		if try == 5 {
			t.Fatal("isolated nodes keep being reconnected")
		}
	}
	time.Sleep(time.Second)

	// Publish from random connected nodes, one document every simPublishGap.
	online := perm[simIsolated:]
	for d := range simDocs {
		p := online[rng.IntN(len(online))]
		r.from[d] = p
		r.docTime[d] = time.Now()
		if err := r.nodes[p].topic.Publish(ctx, r.docs[d]); err != nil {
			t.Fatalf("publish %d: %v", d, err)
		}
		time.Sleep(simPublishGap)
	}
	lastPublish := time.Now()
	complete := func() bool {
		for d := range simDocs {
			for _, i := range online {
				if !r.got(d, i) {
					return false
				}
			}
		}
		return true
	}
	for !complete() && time.Since(lastPublish) < simDrain {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // anything late still counts, as gossip
	phase("published")

	// Gossip figures: per (document, receiving node), publisher excluded.
	var lat, spread []time.Duration
	var missedOnline, missedIsolated int
	var last time.Time
	for d := range simDocs {
		var slowest time.Duration
		for i := range n {
			if i == r.from[d] {
				continue
			}
			v := r.recv[d*n+i].Load()
			switch {
			case v != 0:
				at := time.Unix(0, v)
				lat = append(lat, at.Sub(r.docTime[d]))
				slowest = max(slowest, at.Sub(r.docTime[d]))
				last = later(last, at)
			case isIsolated[i]:
				missedIsolated++
			default:
				missedOnline++
			}
		}
		spread = append(spread, slowest)
	}
	pairs := simDocs * (n - 1)
	onlinePairs := simDocs * (n - simIsolated - 1)
	slices.Sort(lat)
	t.Logf("gossip: %d nodes (%d isolated), %d documents of %d B, validation %v a hop",
		n, simIsolated, simDocs, simDocSize, simValidate)
	t.Logf("gossip: latency p50 %v, p90 %v, p99 %v, max %v over %d deliveries",
		pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 100), len(lat))
	t.Logf("gossip: delivered %d of %d pairs (%.3f %%); to connected nodes %d of %d (%.3f %%); missed %d connected, %d isolated",
		len(lat), pairs, 100*float64(len(lat))/float64(pairs),
		onlinePairs-missedOnline, onlinePairs, 100*float64(onlinePairs-missedOnline)/float64(onlinePairs),
		missedOnline, missedIsolated)
	slices.Sort(spread)
	// The floor: a document cannot reach a node sooner than the shortest path of connections
	// to it from its publisher, each hop one link delay plus one validation.
	var floor []time.Duration
	var hops []int
	for d := range simDocs {
		dist := bfs(r.nodes, r.from[d], isIsolated)
		for i := range n {
			if i != r.from[d] && !isIsolated[i] && dist[i] > 0 {
				hops = append(hops, dist[i])
				floor = append(floor, time.Duration(dist[i])*(simLatency+simValidate))
			}
		}
	}
	slices.Sort(floor)
	t.Logf("gossip: floor (shortest path × (link + validation)): p50 %v, p99 %v, max %v; hops %s",
		pct(floor, 50), pct(floor, 99), pct(floor, 100), span(hops))
	t.Logf("gossip: a document reached its last connected node after p50 %v, max %v", pct(spread, 50), pct(spread, 100))
	if !last.IsZero() {
		t.Logf("gossip: last delivery %v after the last publish", last.Sub(r.docTime[simDocs-1]))
	}

	// Catch-up: the isolated nodes reconnect to their neighbours; every node that misses a
	// document reconciles with a neighbour that has them all, then fetches what it lacks.
	for _, nd := range r.nodes {
		nd.h.SetStreamHandler(simSyncProtocol, r.serve)
	}
	reconnect := time.Now()
	for _, x := range isolated {
		for _, j := range r.nodes[x].adj {
			if isIsolated[j] {
				continue
			}
			wg.Go(func() {
				if err := r.connect(ctx, x, j); err != nil {
					dialErrs.Add(1)
				}
			})
		}
	}
	wg.Wait()
	t.Logf("catch-up: %d isolated nodes reconnected in %v virtual (%d dial errors)", simIsolated, time.Since(reconnect), dialErrs.Load())
	var behind []int
	for i := range n {
		for d := range simDocs {
			if !r.got(d, i) {
				behind = append(behind, i)
				break
			}
		}
	}
	full := func(i int) bool {
		for d := range simDocs {
			if !r.got(d, i) {
				return false
			}
		}
		return true
	}
	var (
		mu      sync.Mutex
		results []syncResult
		failed  []error
	)
	sem := make(chan struct{}, simCatchUpConcurrency)
	for _, x := range behind {
		server := -1
		for _, j := range r.nodes[x].adj {
			if full(j) {
				server = j
				break
			}
		}
		if server < 0 {
			mu.Lock()
			failed = append(failed, fmt.Errorf("node %d: no neighbour holds every document", x))
			mu.Unlock()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := r.catchUp(ctx, x, server)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, fmt.Errorf("node %d from %d: %w", x, server, err))
				return
			}
			results = append(results, res)
		})
	}
	wg.Wait()
	phase("caught up")
	for _, err := range failed {
		t.Error(err)
	}
	delivered := 0
	for d := range simDocs {
		for i := range n {
			if i != r.from[d] && r.got(d, i) {
				delivered++
			}
		}
	}
	if len(results) > 0 {
		var rounds, out, in, fetched, missing []int
		var took []time.Duration
		for _, s := range results {
			rounds = append(rounds, s.rounds)
			out = append(out, s.bytesOut)
			in = append(in, s.bytesIn)
			fetched = append(fetched, s.fetchedBytes)
			missing = append(missing, s.missing)
			took = append(took, s.took)
		}
		slices.Sort(took)
		t.Logf("catch-up: %d nodes, each against a neighbour, over an index of %d + %d items", len(results), simBaseItems, simDocs)
		t.Logf("catch-up: missing a node %s; rounds %s; reconciliation bytes out %s, in %s; documents fetched %s bytes",
			span(missing), span(rounds), span(out), span(in), span(fetched))
		t.Logf("catch-up: a node took %v–%v virtual (reconciliation + fetch, from its first request); all done %v after reconnecting; in-sync check afterwards: %s rounds, %s bytes",
			took[0], took[len(took)-1], time.Since(reconnect), span(collect(results, func(s syncResult) int { return s.checkRounds })),
			span(collect(results, func(s syncResult) int { return s.checkBytes })))
	}
	t.Logf("after catch-up: delivered %d of %d pairs (%.3f %%)", delivered, pairs, 100*float64(delivered)/float64(pairs))
	if delivered != pairs {
		t.Errorf("delivery after catch-up %d of %d", delivered, pairs)
	}
	phase("done")
}

// validator models the node's document validator: it costs simValidate and records when the
// node first accepted each document.
func (r *simRun) validator(nd *simNode) func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
	return func(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if from == nd.h.ID() {
			return pubsub.ValidationAccept // published by this node after storing it
		}
		d, ok := r.docIdx[m.ID]
		if !ok {
			return pubsub.ValidationReject
		}
		time.Sleep(simValidate)
		r.recv[d*r.n+nd.i].CompareAndSwap(0, time.Now().UnixNano())
		return pubsub.ValidationAccept
	}
}

func (r *simRun) connect(ctx context.Context, i, j int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b := r.nodes[j].h
	return r.nodes[i].h.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()})
}

// A node's reconciliation state, built for a catch-up: the base set plus the documents it has.
type simStore struct {
	db   *store.DB
	idx  *reconcile.Index
	docs map[[32]byte][]byte
}

func (r *simRun) openStore(ctx context.Context, i int) (*simStore, error) {
	db, err := store.Open(store.Config{InMemory: true, MemTableSize: 2 << 20, MaxValueSize: 4 << 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	s := &simStore{db: db, docs: map[[32]byte][]byte{}}
	if s.idx, err = reconcile.NewIndex(db); err != nil {
		db.Close()
		return nil, err
	}
	items := slices.Clone(r.base)
	for d, doc := range r.docs {
		if r.got(d, i) {
			id := network.DocumentID(doc)
			s.docs[id] = doc
			items = append(items, reconcile.Item{Time: uint64(r.docTime[d].Unix()), ID: id})
		}
	}
	// Each Add touches six summary rows: 100 random items stay well inside the transaction
	// limit of a 2 MiB memtable.
	for start := 0; start < len(items); start += 100 {
		err := db.Update(ctx, func(tx *store.Txn) error {
			for _, it := range items[start:min(start+100, len(items))] {
				if _, err := s.idx.Add(tx, it); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

type syncResult struct {
	rounds, bytesOut, bytesIn, missing, fetchedBytes int
	checkRounds, checkBytes                          int
	took                                             time.Duration
}

// simServers maps (server, client) to the server's store during a catch-up.
var (
	simServersMu sync.Mutex
	simServers   = map[[2]peer.ID]*simStore{}
)

// catchUp reconciles node x with node server over a stream of the simulated network and
// fetches what x lacks: the messages of the node's Reconcile and FetchDocuments calls, framed
// simply (a type byte and a length).
func (r *simRun) catchUp(ctx context.Context, x, server int) (syncResult, error) {
	var res syncResult
	cs, err := r.openStore(ctx, x)
	if err != nil {
		return res, err
	}
	defer cs.db.Close()
	ss, err := r.openStore(ctx, server)
	if err != nil {
		return res, err
	}
	defer ss.db.Close()
	sid := r.nodes[server].h.ID()
	pair := [2]peer.ID{sid, r.nodes[x].h.ID()}
	simServersMu.Lock()
	simServers[pair] = ss
	simServersMu.Unlock()
	defer func() {
		simServersMu.Lock()
		delete(simServers, pair)
		simServersMu.Unlock()
	}()

	st, err := r.nodes[x].h.NewStream(ctx, sid, simSyncProtocol)
	if err != nil {
		return res, err
	}
	defer st.Close()
	rw := bufio.NewReadWriter(bufio.NewReader(st), bufio.NewWriter(st))
	start := time.Now()
	reconcileOnce := func() (rounds, out, in int, missing []reconcile.Item, err error) {
		s := reconcile.NewSession(cs.idx)
		msg, err := s.Start(ctx)
		if err != nil {
			return 0, 0, 0, nil, err
		}
		for {
			if rounds++; rounds > 64 {
				return rounds, out, in, nil, errors.New("reconciliation did not end")
			}
			b, err := msg.MarshalBinary()
			if err != nil {
				return rounds, out, in, nil, err
			}
			reply, err := exchange(rw, 'R', b)
			if err != nil {
				return rounds, out, in, nil, err
			}
			out, in = out+len(b), in+len(reply)
			m, err := reconcile.ParseMessage(reply)
			if err != nil {
				return rounds, out, in, nil, err
			}
			next, done, err := s.Next(ctx, m)
			if err != nil {
				return rounds, out, in, nil, err
			}
			if done {
				if !s.Complete() {
					return rounds, out, in, nil, errors.New("session incomplete")
				}
				return rounds, out, in, s.Missing(), nil
			}
			msg = next
		}
	}
	var missing []reconcile.Item
	res.rounds, res.bytesOut, res.bytesIn, missing, err = reconcileOnce()
	if err != nil {
		return res, err
	}
	res.missing = len(missing)
	if len(missing) > 0 {
		ids := make([]byte, 0, 32*len(missing))
		for _, it := range missing {
			ids = append(ids, it.ID[:]...)
		}
		if _, err := write(rw, 'F', ids); err != nil {
			return res, err
		}
		var stored []reconcile.Item
		for _, it := range missing {
			doc, err := readFrame(rw)
			if err != nil {
				return res, err
			}
			res.fetchedBytes += len(doc)
			if network.DocumentID(doc) != it.ID {
				return res, errors.New("fetched a document that is not the one asked for")
			}
			d, ok := r.docIdx[string(it.ID[:])]
			if !ok {
				return res, errors.New("fetched an unknown document")
			}
			time.Sleep(simValidate)
			cs.docs[it.ID] = doc
			stored = append(stored, it)
			r.caught[d*r.n+x].CompareAndSwap(0, time.Now().UnixNano())
		}
		err := cs.db.Update(ctx, func(tx *store.Txn) error {
			for _, it := range stored {
				if _, err := cs.idx.Add(tx, it); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	res.took = time.Since(start)
	// Once caught up, the two sets are equal: one more session says so.
	rounds, out, in, again, err := reconcileOnce()
	if err != nil {
		return res, err
	}
	if len(again) != 0 {
		return res, fmt.Errorf("still missing %d after catch-up", len(again))
	}
	res.checkRounds, res.checkBytes = rounds, out+in
	return res, nil
}

// serve answers reconciliation and fetch requests from the store registered for this host.
func (r *simRun) serve(st lpnet.Stream) {
	defer st.Close()
	simServersMu.Lock()
	ss := simServers[[2]peer.ID{st.Conn().LocalPeer(), st.Conn().RemotePeer()}]
	simServersMu.Unlock()
	if ss == nil {
		st.Reset()
		return
	}
	rw := bufio.NewReadWriter(bufio.NewReader(st), bufio.NewWriter(st))
	ctx := context.Background()
	for {
		kind, err := rw.ReadByte()
		if err != nil {
			return
		}
		b, err := readFrame(rw)
		if err != nil {
			return
		}
		switch kind {
		case 'R':
			m, err := reconcile.ParseMessage(b)
			if err != nil {
				st.Reset()
				return
			}
			out, err := ss.idx.Respond(ctx, m)
			if err != nil {
				st.Reset()
				return
			}
			ob, err := out.MarshalBinary()
			if err != nil {
				st.Reset()
				return
			}
			if _, err := write(rw, 0, ob); err != nil {
				return
			}
		case 'F':
			for k := 0; k+32 <= len(b); k += 32 {
				doc := ss.docs[[32]byte(b[k:k+32])]
				if doc == nil {
					st.Reset()
					return
				}
				if _, err := write(rw, 0, doc); err != nil {
					return
				}
			}
		default:
			st.Reset()
			return
		}
	}
}

// write sends one frame: a type byte (none if 0), the length as a uvarint, the bytes.
func write(w *bufio.ReadWriter, kind byte, b []byte) (int, error) {
	if kind != 0 {
		w.WriteByte(kind)
	}
	w.Write(binary.AppendUvarint(nil, uint64(len(b))))
	w.Write(b)
	return len(b), w.Flush()
}

func readFrame(r *bufio.ReadWriter) ([]byte, error) {
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if l > 1<<20 {
		return nil, errors.New("frame too large")
	}
	b := make([]byte, l)
	_, err = io.ReadFull(r, b)
	return b, err
}

func exchange(rw *bufio.ReadWriter, kind byte, b []byte) ([]byte, error) {
	if _, err := write(rw, kind, b); err != nil {
		return nil, err
	}
	return readFrame(rw)
}

// bfs returns the number of connections from node src to every node, skipping those excluded
// (0 for src and for nodes it cannot reach).
func bfs(nodes []*simNode, src int, excluded []bool) []int {
	dist := make([]int, len(nodes))
	seen := make([]bool, len(nodes))
	seen[src] = true
	queue := []int{src}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, j := range nodes[i].adj {
			if !seen[j] && !excluded[j] {
				seen[j] = true
				dist[j] = dist[i] + 1
				queue = append(queue, j)
			}
		}
	}
	return dist
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pct returns the p-th percentile of sorted durations (nearest rank).
func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	k := (len(s)*p + 99) / 100
	return s[max(k, 1)-1]
}

func collect(rs []syncResult, f func(syncResult) int) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// span formats the range and median of s.
func span(s []int) string {
	s = slices.Clone(s)
	slices.Sort(s)
	if len(s) == 0 {
		return "-"
	}
	if s[0] == s[len(s)-1] {
		return strconv.Itoa(s[0])
	}
	return fmt.Sprintf("%d–%d (median %d)", s[0], s[len(s)-1], s[len(s)/2])
}

// phaseTimer logs, at each phase, the virtual and the real time it took and the memory in use.
func phaseTimer(t *testing.T) func(string) {
	virtual, real := time.Now(), realNow()
	return func(name string) {
		t.Logf("phase %q: %v virtual, %v real; %s", name, time.Since(virtual).Round(time.Millisecond),
			realNow().Sub(real).Round(time.Millisecond), memStats())
		virtual, real = time.Now(), realNow()
	}
}

// realNow reads the real clock, which time.Now does not inside the bubble.
func realNow() time.Time {
	var tv syscall.Timeval
	if err := syscall.Gettimeofday(&tv); err != nil {
		return time.Time{}
	}
	return time.Unix(tv.Unix())
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func memStats() string {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return fmt.Sprintf("heap in use %d MiB, from the OS %d MiB, goroutines %d", m.HeapInuse>>20, m.Sys>>20, runtime.NumGoroutine())
}
