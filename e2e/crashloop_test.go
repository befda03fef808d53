package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// crashJKT stands for the EHR's DPoP key thumbprint (RFC 7638: base64url of a SHA-256).
const crashJKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

// TestCrashLoop runs a GP practice (the custodian), a hospital (the requester) and a pharmacy as
// three `schakel run` processes on loopback, set up as `schakel setup` does, and then, in each
// round, puts them under mixed load — accesses recorded at the GP practice and the pharmacy,
// service registrations published (gossiped) by all three, token requests from the hospital to
// the GP practice (granted and refused), consents recorded and revoked at the GP practice — and
// kills one node (the GP practice's most often) with SIGKILL at a random moment. After each
// restart the network must form again and every write acknowledged so far, in any round, must
// hold: each access and decision at the index its answer named, each consent change in force
// (a token request is granted exactly while the patient's last acknowledged change is a
// recording) and in the custodian's log, each registration at every node; every log verifies.
//
// SCHAKEL_CRASH_LOOPS sets the number of rounds (default 5); SCHAKEL_CRASH_SEED replays the
// schedule of a run, whose seed the test logs.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three nodes and kills them")
	}
	rounds := 5
	if v := os.Getenv("SCHAKEL_CRASH_LOOPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SCHAKEL_CRASH_LOOPS=%q: want a positive number", v)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SCHAKEL_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SCHAKEL_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (SCHAKEL_CRASH_SEED=%d replays the schedule), %d rounds", seed, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	c := newCrashNet(t)
	began := time.Now()
	kills := map[string]int{}
	for round := 1; round <= rounds; round++ {
		victim := c.gp
		switch p := rng.Float64(); {
		case p >= 0.85:
			victim = c.pharmacy
		case p >= 0.6:
			victim = c.hospital
		}
		delay := 300*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
		acked := c.load(t, round, rng.Uint64(), victim, delay)
		kills[victim.key]++
		c.restart(t, victim)
		c.check(t, round)
		t.Logf("round %d: kill -9 of %s after %s; %d writes acknowledged in the round, %d so far; %d problems",
			round, victim.key, delay.Round(time.Millisecond), acked, c.acknowledged(), len(c.reported))
	}
	t.Logf("%d rounds in %s (kills: GP practice %d, hospital %d, pharmacy %d); %d acknowledged writes, each checked after every later kill: %d checks in all",
		rounds, time.Since(began).Round(time.Second), kills["gp"], kills["hospital"], kills["pharmacy"], c.acknowledged(), c.checks)
	for _, n := range c.nodes {
		n.d.stop(t)
	}
}

// crashNode is one organisation's node in the crash loop.
type crashNode struct {
	key, name, ura, typ string
	data, api, p2p      string
	peerID, org         string
	d                   *daemon
	node                schakelv1connect.NodeServiceClient
	logs                schakelv1connect.LogServiceClient
	acc                 schakelv1connect.AccessServiceClient
	cred                schakelv1connect.CredentialServiceClient
}

// crashNet is the network under test and what it acknowledged.
type crashNet struct {
	reg, regDID            string
	gp, hospital, pharmacy *crashNode
	nodes                  []*crashNode
	granted, refused       string // patients with a standing consent and with none
	// fixed are those two patients' consents; patients are those the load changes.
	fixed, patients []*patientConsents
	mu              sync.Mutex
	entries         []wantEntry
	published       map[string]*crashNode // registration id → issuing node
	checks          int
	// reported holds the problems reported so far, so that each is reported once although
	// every later round checks again.
	reported map[string]bool
}

// errorf reports a problem once, under key.
func (c *crashNet) errorf(t *testing.T, key, format string, args ...any) {
	t.Helper()
	if !c.reported[key] {
		c.reported[key] = true
		t.Errorf(format, args...)
	}
}

// wantEntry is an acknowledged log entry: what the node's log must hold at index.
type wantEntry struct {
	node                   *crashNode
	index                  int64
	event, action, outcome string
	query                  string // exact query, when set
	prefix                 string // query prefix, when set
	token                  bool   // a granted decision carries a token id
	what                   string
}

// patientConsents is the GP practice's consents for one patient as acknowledged: at most one in
// force at a time, for the hospital and the medication. Changes go one at a time per patient.
type patientConsents struct {
	bsn     string
	active  string   // the acknowledged consent in force, "" when none
	revoked []string // acknowledged revocations
	// recorded are the consents whose recording was acknowledged or seen committed.
	recorded []string
	// unsure is the change in flight when its node went down: "record", or "revoke" of active.
	unsure string
}

func newCrashNet(t *testing.T) *crashNet {
	t.Helper()
	dir := t.TempDir()
	c := &crashNet{reg: filepath.Join(dir, "register"), published: map[string]*crashNode{}, reported: map[string]bool{}}
	c.regDID = schakel(t, 0, "register", "init", "--dir", c.reg, "--name", "Register Zorgaanbieders")
	c.gp = &crashNode{key: "gp", name: "Huisartsenpraktijk Jansen", ura: "01234567", typ: "Z3"}
	c.hospital = &crashNode{key: "hospital", name: "Ziekenhuis Rijnoever", ura: "03456789", typ: "V6"}
	c.pharmacy = &crashNode{key: "pharmacy", name: "Apotheek Janssens", ura: "02345678", typ: "J8"}
	c.nodes = []*crashNode{c.gp, c.hospital, c.pharmacy}
	// As `schakel setup` does: each node on its own creates its organisation and is admitted by
	// the register; then all start with the others as bootstrap peers. Started together before
	// they are admitted, they would refuse one another for the deny period.
	for _, n := range c.nodes {
		n.data = filepath.Join(dir, n.key)
		out := schakel(t, 0, "init", "--data", n.data)
		_, id, ok := strings.Cut(out, "peer id ")
		if !ok {
			t.Fatalf("init printed %q", out)
		}
		n.peerID = strings.TrimSpace(id)
		n.api = freePort(t)
		_, port, _ := net.SplitHostPort(freePort(t))
		n.p2p = "/ip4/127.0.0.1/tcp/" + port
		url := "http://" + n.api
		n.node = schakelv1connect.NewNodeServiceClient(http.DefaultClient, url)
		n.logs = schakelv1connect.NewLogServiceClient(http.DefaultClient, url)
		n.acc = schakelv1connect.NewAccessServiceClient(http.DefaultClient, url)
		n.cred = schakelv1connect.NewCredentialServiceClient(http.DefaultClient, url)
		// startNode's own --p2p-addr comes first; the later flag wins.
		n.d = startNode(t, n.data, n.api, "--p2p-addr", n.p2p, "--trusted-register", c.regDID)
		node := "--node=" + n.d.url
		n.org = schakel(t, 0, "org", "create", node, "--name", n.name)
		schakel(t, 0, "register", "issue", "--dir", c.reg, node, "--subject", n.org, "--name", n.name,
			"--ura", n.ura, "--type", n.typ, "--city", "Utrecht")
		n.d.stop(t)
	}
	for _, n := range c.nodes {
		c.start(t, n)
	}
	c.waitFormed(t)

	c.granted, c.refused = patientBSN(0), patientBSN(1)
	for i := range 12 {
		c.patients = append(c.patients, &patientConsents{bsn: patientBSN(2 + i)})
	}
	id, err := c.recordConsent(t.Context(), c.granted)
	if err != nil {
		t.Fatalf("RecordConsent: %v", err)
	}
	c.fixed = []*patientConsents{{bsn: c.granted, active: id, recorded: []string{id}}, {bsn: c.refused}}
	// The hospital's node needs the GP practice's keys, which reach it by reconciliation.
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, err := c.requestToken(t.Context(), c.granted)
		if err == nil && a.GetAccessToken() != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hospital's first token request was not granted within 60 s: %v %v", a, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

// start runs n's node with the others as bootstrap peers and reconciliation every 2 s.
func (c *crashNet) start(t *testing.T, n *crashNode) {
	t.Helper()
	args := []string{"--p2p-addr", n.p2p, "--trusted-register", c.regDID, "--sync-interval", "2s"}
	for _, o := range c.nodes {
		if o != n {
			args = append(args, "--bootstrap", o.p2p+"/p2p/"+o.peerID)
		}
	}
	n.d = startNode(t, n.data, n.api, args...)
}

// restart starts n's node again after its kill.
func (c *crashNet) restart(t *testing.T, n *crashNode) {
	t.Helper()
	c.start(t, n)
	c.waitFormed(t)
}

// waitFormed waits until every node has the two others admitted and connected.
func (c *crashNet) waitFormed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range c.nodes {
		for {
			missing, err := c.missingPeers(t.Context(), n)
			if err == nil && missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the network did not form again within 60 s: %s lacks %s (%v); its log:\n%s", n.key, missing, err, tail(n.d.logs.String(), 40))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (c *crashNet) missingPeers(ctx context.Context, n *crashNode) (string, error) {
	resp, err := n.node.ListPeers(ctx, connect.NewRequest(&schakelv1.ListPeersRequest{}))
	if err != nil {
		return "its API", err
	}
	ok := map[string]bool{}
	for _, p := range resp.Msg.GetPeers() {
		ok[p.GetPeerId()] = p.GetAdmitted() && p.GetConnected()
	}
	var missing []string
	for _, o := range c.nodes {
		if o != n && !ok[o.peerID] {
			missing = append(missing, o.key)
		}
	}
	return strings.Join(missing, ", "), nil
}

func (c *crashNet) recordConsent(ctx context.Context, bsn string) (string, error) {
	resp, err := c.gp.acc.RecordConsent(ctx, connect.NewRequest(&schakelv1.RecordConsentRequest{Bsn: bsn, Consent: &schakelv1.Consent{
		Custodian: c.gp.org, Decision: "permit", GranteeOrg: c.hospital.org, DataCategories: []string{"medication"},
		Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}}))
	if err != nil {
		return "", err
	}
	return resp.Msg.GetConsent().GetId(), nil
}

func (c *crashNet) requestToken(ctx context.Context, bsn string) (*schakelv1.RequestTokenResponse, error) {
	resp, err := c.hospital.acc.RequestToken(ctx, connect.NewRequest(&schakelv1.RequestTokenRequest{
		Organization: c.hospital.org, Custodian: c.gp.org, Bsn: bsn, DataCategory: "medication", Purpose: "TREAT",
		Employee: &schakelv1.AccessEmployee{Uzi: "900012345", Role: "01.015", Name: "A. de Vries", Assurance: "high"},
		DpopJkt:  crashJKT}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// ackToken records an answered token request: the decision at the custodian's index, the
// receipt at the requester's.
func (c *crashNet) ackToken(a *schakelv1.RequestTokenResponse, what string) {
	outcome := "refused"
	if a.GetAccessToken() != "" {
		outcome = "granted"
	}
	c.ack(wantEntry{node: c.gp, index: a.GetCustodianLogIndex(), event: "access-decision", action: "token", outcome: outcome,
		token: outcome == "granted", what: what})
	c.ack(wantEntry{node: c.hospital, index: a.GetRequesterLogIndex(), event: "access-decision", action: "request", outcome: outcome,
		prefix: "receipt: ", query: fmt.Sprintf(" entry %d leaf ", a.GetCustodianLogIndex()), what: what + " (receipt)"})
}

func (c *crashNet) ack(w wantEntry) {
	c.mu.Lock()
	c.entries = append(c.entries, w)
	c.mu.Unlock()
}

// acknowledged counts the acknowledged writes: log entries, registrations and consent changes.
func (c *crashNet) acknowledged() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.entries) + len(c.published)
	for _, p := range append(c.fixed, c.patients...) {
		n += len(p.recorded) + len(p.revoked)
	}
	return n
}

// load runs the mixed load until victim has been killed, delay after the start, and a moment
// longer, and returns how many writes were acknowledged. Calls that fail while every node they
// involve is up fail the test.
func (c *crashNet) load(t *testing.T, round int, seed uint64, victim *crashNode, delay time.Duration) int {
	t.Helper()
	before := c.acknowledged()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var killed atomic.Bool
	var wg sync.WaitGroup
	// failed reports a call's error; it returns true when the worker should stop, which it
	// always should: after the kill the error is expected when the call involved the victim.
	failed := func(what string, err error, involved ...*crashNode) bool {
		if ctx.Err() != nil {
			return true
		}
		for _, n := range involved {
			if n == victim && killed.Load() {
				return true
			}
		}
		t.Errorf("round %d: %s while its nodes were up: %v", round, what, err)
		return true
	}
	appender := func(n *crashNode, w int) {
		for i := 0; ctx.Err() == nil; i++ {
			q := fmt.Sprintf("round %d writer %d read %d", round, w, i)
			resp, err := n.logs.RecordAccess(ctx, connect.NewRequest(&schakelv1.RecordAccessRequest{
				Organization: n.org, Bsn: c.granted, DataCategory: "medication", Purpose: "TREAT", Query: q}))
			if err != nil {
				if failed("RecordAccess at "+n.key, err, n) {
					return
				}
				continue
			}
			c.ack(wantEntry{node: n, index: resp.Msg.GetIndex(), event: "data-access", action: "read", outcome: "granted", query: q, what: q})
		}
	}
	wg.Go(func() { appender(c.gp, 1) })
	wg.Go(func() { appender(c.gp, 2) })
	wg.Go(func() { appender(c.pharmacy, 3) })
	wg.Go(func() {
		// The hospital asks for a patient with a standing consent (granted) or with none (refused).
		r := rand.New(rand.NewPCG(seed, 1))
		for i := 0; ctx.Err() == nil; i++ {
			bsn, want := c.granted, "granted"
			if r.IntN(3) == 0 {
				bsn, want = c.refused, "refused"
			}
			a, err := c.requestToken(ctx, bsn)
			if err != nil {
				if failed("RequestToken", err, c.hospital, c.gp) {
					return
				}
				continue
			}
			what := fmt.Sprintf("round %d token request %d", round, i)
			if got := outcomeOf(a); got != want {
				t.Errorf("%s: %s, want %s: %v", what, got, want, a)
			}
			c.ackToken(a, what)
		}
	})
	wg.Go(func() {
		// Registrations, published by each organisation in turn, a few a second.
		for i := 0; ctx.Err() == nil; i++ {
			n := c.nodes[i%len(c.nodes)]
			resp, err := n.cred.IssueCredential(ctx, connect.NewRequest(&schakelv1.IssueCredentialRequest{
				Organization: n.org, Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
					Endpoints:      []*schakelv1.Endpoint{{Type: "fhir", Url: fmt.Sprintf("https://%s.example/fhir/%d/%d", n.key, round, i)}},
					DataCategories: []string{"medication"}, Purposes: []string{"TREAT"}}}}))
			if err != nil {
				if failed("IssueCredential at "+n.key, err, n) {
					return
				}
				continue
			}
			c.mu.Lock()
			c.published[resp.Msg.GetCredential().GetId()] = n
			c.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(150 * time.Millisecond):
			}
		}
	})
	wg.Go(func() {
		// Consent changes at the GP practice, one at a time: a patient without a consent in
		// force gets one, a patient with one revokes it.
		r := rand.New(rand.NewPCG(seed, 2))
		for ctx.Err() == nil {
			p := c.patients[r.IntN(len(c.patients))]
			c.mu.Lock()
			unsure, active := p.unsure != "", p.active
			c.mu.Unlock()
			if unsure {
				continue // resolved after the restart
			}
			if active == "" {
				id, err := c.recordConsent(ctx, p.bsn)
				c.mu.Lock()
				if err == nil {
					p.active, p.recorded = id, append(p.recorded, id)
				} else {
					p.unsure = "record"
				}
				c.mu.Unlock()
				if err != nil && failed("RecordConsent", err, c.gp) {
					return
				}
				continue
			}
			_, err := c.gp.acc.RevokeConsent(ctx, connect.NewRequest(&schakelv1.RevokeConsentRequest{Custodian: c.gp.org, Id: active, Reason: "revoked by the patient"}))
			c.mu.Lock()
			if err == nil {
				p.active, p.revoked = "", append(p.revoked, active)
			} else {
				p.unsure = "revoke"
			}
			c.mu.Unlock()
			if err != nil && failed("RevokeConsent", err, c.gp) {
				return
			}
		}
	})
	time.Sleep(delay)
	killed.Store(true)
	if err := victim.d.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 %s: %v", victim.key, err)
	}
	_ = victim.d.cmd.Wait()
	// The others go on for a moment without the victim.
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	return c.acknowledged() - before
}

func outcomeOf(a *schakelv1.RequestTokenResponse) string {
	if a.GetAccessToken() != "" {
		return "granted"
	}
	return "refused"
}

// check runs after a restart: consents as acknowledged (settling the change in flight at the
// kill), every node serving, every registration at every node, every log verifying with every
// acknowledged entry in place.
func (c *crashNet) check(t *testing.T, round int) {
	t.Helper()
	ctx := t.Context()
	consentEntries := map[string]bool{} // "<action> <consent id>" expected in the GP practice's log
	for _, p := range append(c.fixed, c.patients...) {
		resp, err := c.gp.acc.ListConsents(ctx, connect.NewRequest(&schakelv1.ListConsentsRequest{Custodian: c.gp.org, Bsn: p.bsn}))
		if err != nil {
			t.Fatalf("ListConsents: %v", err)
		}
		status := map[string]string{}
		for _, cs := range resp.Msg.GetConsents() {
			status[cs.GetId()] = cs.GetStatus()
		}
		known := map[string]bool{}
		for _, id := range p.recorded {
			known[id] = true
		}
		// The change in flight at the kill may or may not have committed.
		switch p.unsure {
		case "record":
			for id, s := range status {
				if !known[id] {
					if s != "active" {
						c.errorf(t, id, "patient %s: consent %s recorded unacknowledged is %s", p.bsn, id, s)
					}
					p.active, p.recorded, known[id] = id, append(p.recorded, id), true
				}
			}
		case "revoke":
			if status[p.active] == "revoked" {
				p.revoked, p.active = append(p.revoked, p.active), ""
			}
		}
		p.unsure = ""
		for id := range status {
			if !known[id] {
				c.errorf(t, id, "patient %s: consent %s (%s) at the GP practice was never recorded", p.bsn, id, status[id])
			}
		}
		for _, id := range p.revoked {
			consentEntries["revoked "+id] = true
			if status[id] != "revoked" {
				c.errorf(t, id, "patient %s: acknowledged revocation of %s lost: it is %q", p.bsn, id, status[id])
			}
		}
		for _, id := range p.recorded {
			consentEntries["record "+id] = true
		}
		if p.active != "" && status[p.active] != "active" {
			c.errorf(t, p.active, "patient %s: acknowledged consent %s lost: it is %q", p.bsn, p.active, status[p.active])
		}
		// The decision follows: granted exactly while a consent is in force.
		a, err := c.requestToken(ctx, p.bsn)
		if err != nil {
			t.Fatalf("RequestToken after the restart: %v", err)
		}
		want := "refused"
		if p.active != "" {
			want = "granted"
		}
		if got := outcomeOf(a); got != want {
			t.Errorf("patient %s after the restart: %s, want %s (consent in force: %q)", p.bsn, got, want, p.active)
		}
		c.ackToken(a, fmt.Sprintf("round %d check of patient %s", round, p.bsn))
		c.checks += 2 + len(p.revoked) + len(p.recorded)
	}
	// Every node takes writes again.
	for _, n := range c.nodes {
		q := fmt.Sprintf("round %d after the restart", round)
		resp, err := n.logs.RecordAccess(ctx, connect.NewRequest(&schakelv1.RecordAccessRequest{
			Organization: n.org, Bsn: c.granted, DataCategory: "medication", Purpose: "TREAT", Query: q}))
		if err != nil {
			t.Fatalf("RecordAccess at %s after the restart: %v", n.key, err)
		}
		c.ack(wantEntry{node: n, index: resp.Msg.GetIndex(), event: "data-access", action: "read", outcome: "granted", query: q, what: q})
	}
	c.checkPublished(t)
	for _, n := range c.nodes {
		dir := filepath.Join(t.TempDir(), n.key)
		schakel(t, 0, "log", "export", "--node="+n.d.url, "--org", n.org, "--out", dir)
		schakel(t, 0, "log", "verify", dir)
		entries := exportedEntries(t, dir)
		for _, w := range c.entries {
			if w.node != n {
				continue
			}
			c.checks++
			e, ok := entries[w.index]
			switch {
			case !ok:
				c.errorf(t, fmt.Sprint(n.key, w.index), "%s's log lost acknowledged entry %d (%s)", n.key, w.index, w.what)
			case e.Event != w.event || e.Action != w.action || e.Outcome != w.outcome || (w.token && e.TokenID == "") ||
				(w.prefix == "" && w.query != "" && e.Query != w.query) ||
				(w.prefix != "" && (!strings.HasPrefix(e.Query, w.prefix) || !strings.Contains(e.Query, w.query))):
				c.errorf(t, fmt.Sprint(n.key, w.index), "%s's entry %d is %+v, want the acknowledged %s (%s %s %s %q)", n.key, w.index, e, w.what, w.event, w.action, w.outcome, w.query)
			}
		}
		if n != c.gp {
			continue
		}
		// Every consent change that committed is in the custodian's log.
		for _, e := range entries {
			if e.Event == "consent-change" && e.Basis != nil && len(e.Basis.ConsentIDs) == 1 {
				delete(consentEntries, e.Action+" "+e.Basis.ConsentIDs[0])
			}
		}
		for k := range consentEntries {
			c.errorf(t, k, "consent change %q is in force at the GP practice but not in its log", k)
		}
	}
}

// checkPublished waits until every node holds every acknowledged registration.
func (c *crashNet) checkPublished(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range c.nodes {
		for {
			resp, err := n.cred.ListCredentials(t.Context(), connect.NewRequest(&schakelv1.ListCredentialsRequest{Type: "ServiceRegistrationCredential"}))
			if err != nil {
				t.Fatalf("ListCredentials at %s: %v", n.key, err)
			}
			held := map[string]bool{}
			for _, cr := range resp.Msg.GetCredentials() {
				held[cr.GetId()] = true
			}
			var missing []string
			for id, from := range c.published {
				if !held[id] {
					missing = append(missing, id+" from "+from.key)
				}
			}
			if len(missing) == 0 {
				c.checks += len(c.published)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lacks %d acknowledged registrations 60 s after the restart, among them %s", n.key, len(missing), missing[0])
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// exportedEntry holds the fields of an exported log entry that the checks compare.
type exportedEntry struct {
	Index   int64  `json:"index"`
	Event   string `json:"event"`
	Action  string `json:"action"`
	Outcome string `json:"outcome"`
	Query   string `json:"query"`
	TokenID string `json:"tokenId"`
	Basis   *struct {
		ConsentIDs []string `json:"consentIds"`
	} `json:"basis"`
}

// exportedEntries reads an export's entries by index.
func exportedEntries(t *testing.T, dir string) map[int64]exportedEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "entries.jsonl"))
	if err != nil {
		t.Fatalf("open export: %v", err)
	}
	defer f.Close()
	out := map[int64]exportedEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e exportedEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("entry in %s: %v", dir, err)
		}
		out[e.Index] = e
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read export: %v", err)
	}
	return out
}

// patientBSN returns the i-th test BSN: the first number from 100,000,000 + 1,000·i that passes
// the 11-proof (9·d1 + 8·d2 + … + 2·d8 − d9 divisible by 11).
func patientBSN(i int) string {
	for n := 100000000 + i*1000; ; n++ {
		s := strconv.Itoa(n)
		sum := 0
		for k := range 8 {
			sum += (9 - k) * int(s[k]-'0')
		}
		if (sum-int(s[8]-'0'))%11 == 0 {
			return s
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
