package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/schakel-health/schakel/internal/authz"
	"github.com/schakel-health/schakel/internal/did"
	"github.com/schakel-health/schakel/internal/network"
	"github.com/schakel-health/schakel/internal/store"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// tapped is one message a node's network sent or received.
type tapped struct {
	kind string // a gossip topic, network.TapGossipControl, or a peer RPC procedure
	data []byte
}

func (m tapped) rpc() bool { return strings.HasPrefix(m.kind, "/") }

// capture keeps what a node's network tap shows it.
type capture struct {
	mu   sync.Mutex
	msgs []tapped
}

func (c *capture) tap(kind string, data []byte) {
	d := bytes.Clone(data)
	c.mu.Lock()
	c.msgs = append(c.msgs, tapped{kind, d})
	c.mu.Unlock()
}

func (c *capture) snapshot() []tapped {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// needle is a secret that must be found only at its parties.
type needle struct {
	what    string
	value   []byte
	parties map[string]bool // nodes that may hold it and exchange it over peer RPC
	// inClear is whether it may be in the clear in a party's peer RPC traffic and log lines: a
	// BSN travels only inside JWEs and MUST NOT reach logs.
	inClear bool
}

// pairNeedle is a relationship: two organisations named together in one value.
type pairNeedle struct {
	what    string
	a, b    int // marker indexes
	parties map[string]bool
}

// scanner finds needles in bytes and in what base64 in them decodes to (JWS payloads, JSON
// bodies, base64 inside protobuf).
type scanner struct {
	needles []needle
	markers [][]byte
	pairs   []pairNeedle
	heads   [1 << 16]bool             // first two bytes of some needle or marker
	byHead  map[[minNeedle]byte][]int // first minNeedle bytes → needle index, or -1-marker index
}

// minNeedle is the shortest needle: a BSN is nine digits.
const minNeedle = 8

// minRun is the shortest base64 run decoded: shorter runs are words, not encodings.
const minRun = 16

// decodeDepth is how deep encodings nest: a stored message's JSON holds base64 of a body whose
// JSON holds a JWT whose payload holds the pseudonym.
const decodeDepth = 4

func newScanner(needles []needle, markers [][]byte, pairs []pairNeedle) (*scanner, error) {
	s := &scanner{needles: needles, markers: markers, pairs: pairs, byHead: map[[minNeedle]byte][]int{}}
	add := func(v []byte, id int) error {
		if len(v) < minNeedle {
			return fmt.Errorf("needle %q is shorter than %d bytes", v, minNeedle)
		}
		s.heads[int(v[0])<<8|int(v[1])] = true
		k := [minNeedle]byte(v[:minNeedle])
		s.byHead[k] = append(s.byHead[k], id)
		return nil
	}
	for i, n := range needles {
		if err := add(n.value, i); err != nil {
			return nil, fmt.Errorf("%s: %w", n.what, err)
		}
	}
	for i, m := range markers {
		if err := add(m, -1-i); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

// views appends b and, to depth, what each base64 run in it decodes to. A run is decoded from
// each of its first four offsets: in protobuf a length or field tag byte may look like base64
// and run on into the encoding.
func views(b []byte, depth int, out [][]byte) [][]byte {
	out = append(out, b)
	if depth == 0 {
		return out
	}
	for i := 0; i < len(b); {
		if !isB64(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isB64(b[j]) {
			j++
		}
		run := b[i:j]
		i = j
		if len(run) < minRun {
			continue
		}
		enc := base64.RawStdEncoding
		if bytes.ContainsAny(run, "-_") {
			if bytes.ContainsAny(run, "+/") {
				continue // neither alphabet
			}
			enc = base64.RawURLEncoding
		}
		for off := 0; off < 4 && len(run)-off >= minRun; off++ {
			r := run[off:]
			if len(r)%4 == 1 {
				r = r[:len(r)-1]
			}
			d := make([]byte, enc.DecodedLen(len(r)))
			n, err := enc.Decode(d, r)
			if err != nil {
				continue
			}
			out = views(d[:n], depth-1, out)
		}
	}
	return out
}

// hits returns the needles and markers found in unit or in what it decodes to.
func (s *scanner) hits(unit []byte) (needles map[int]bool, markers map[int]bool) {
	needles, markers = map[int]bool{}, map[int]bool{}
	for _, v := range views(unit, decodeDepth, nil) {
		for i := 0; i+minNeedle <= len(v); i++ {
			if !s.heads[int(v[i])<<8|int(v[i+1])] {
				continue
			}
			for _, id := range s.byHead[[minNeedle]byte(v[i:i+minNeedle])] {
				if id >= 0 {
					if bytes.HasPrefix(v[i:], s.needles[id].value) {
						needles[id] = true
					}
				} else if bytes.HasPrefix(v[i:], s.markers[-1-id]) {
					markers[-1-id] = true
				}
			}
		}
	}
	return needles, markers
}

// channel is where a unit was found, which decides what may be in it.
type channel int

const (
	inGossip channel = iota // nothing may be in it
	inRPC                   // a party's peer RPC traffic: its needles that travel in the clear
	atRest                  // a party's storage: its needles
	inFile                  // a party's files: its needles; relationships are not looked for
	inLog                   // a party's log lines: its needles that may be in the clear
)

// finding is a needle found where it must not be.
type finding struct{ where, what string }

func (f finding) String() string { return f.where + ": " + f.what }

// check returns the findings in one unit (a gossip message, an RPC message or one document of
// it, a stored key and value, a file) that holder sees, and the needles it holds rightly.
func (s *scanner) check(where, holder string, ch channel, unit []byte) (out, rightful []finding) {
	ns, ms := s.hits(unit)
	ids := make([]int, 0, len(ns))
	for id := range ns {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		n := s.needles[id]
		ok := ch != inGossip && n.parties[holder] && (ch != inRPC && ch != inLog || n.inClear)
		if ok {
			rightful = append(rightful, finding{where, n.what})
		} else {
			out = append(out, finding{where, n.what})
		}
	}
	if ch == inFile {
		return out, rightful
	}
	for _, p := range s.pairs {
		if ms[p.a] && ms[p.b] {
			if ch != inGossip && p.parties[holder] {
				rightful = append(rightful, finding{where, p.what})
			} else {
				out = append(out, finding{where, p.what})
			}
		}
	}
	return out, rightful
}

// rpcUnits splits a peer RPC message into what a relationship is looked for in: the documents of
// a Hello or FetchDocuments message (public documents, each naming one organisation, travel
// together there), the whole message otherwise.
func rpcUnits(kind string, data []byte) [][]byte {
	if !strings.HasSuffix(kind, "/Hello") && !strings.HasSuffix(kind, "/FetchDocuments") {
		return [][]byte{data}
	}
	var out [][]byte
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return [][]byte{data}
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return [][]byte{data}
			}
			out = append(out, v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return [][]byte{data}
		}
		b = b[m:]
	}
	return out
}

// scanTapped checks every message one node's network sent or received; it counts them by kind.
func (s *scanner) scanTapped(holder string, msgs []tapped, counts map[string]int) (out, rightful []finding) {
	for _, m := range msgs {
		counts[m.kind]++
		ch, units := inGossip, [][]byte{m.data}
		if m.rpc() {
			ch, units = inRPC, rpcUnits(m.kind, m.data)
		}
		for _, u := range units {
			f, a := s.check(fmt.Sprintf("%s %s at %s", map[bool]string{true: "peer RPC", false: "gossip"}[m.rpc()], m.kind, holder), holder, ch, u)
			out, rightful = append(out, f...), append(rightful, a...)
		}
	}
	return out, rightful
}

// scanDB checks every key and value of db, every version badger still holds (deleted and
// overwritten ones included); it returns the number of versions read.
func (s *scanner) scanDB(holder string, db *badger.DB) (out, rightful []finding, versions int, err error) {
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			versions++
			key := item.KeyCopy(nil)
			ns, _, _ := bytes.Cut(key, []byte{0})
			unit := append(append(key, 0), v...)
			f, a := s.check(fmt.Sprintf("store of %s, namespace %q, version %d", holder, ns, item.Version()), holder, atRest, unit)
			out, rightful = append(out, f...), append(rightful, a...)
		}
		return nil
	})
	return out, rightful, versions, err
}

// fileData returns a file's data, skipping holes: badger's value log and memtable files are
// sparse and much larger than what they hold.
func fileData(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if runtime.GOOS != "linux" {
		return io.ReadAll(f)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const seekData, seekHole = 3, 4 // lseek(2) on Linux
	var out []byte
	for off := int64(0); off < fi.Size(); {
		start, err := f.Seek(off, seekData)
		if err != nil {
			break // ENXIO: no data after off
		}
		end, err := f.Seek(start, seekHole)
		if err != nil || end > fi.Size() {
			end = fi.Size()
		}
		buf := make([]byte, end-start)
		if _, err := f.ReadAt(buf, start); err != nil && err != io.EOF {
			return nil, err
		}
		out = append(append(out, buf...), 0)
		off = end
	}
	return out, nil
}

// scanFiles checks the raw bytes of every file under dir.
func (s *scanner) scanFiles(holder, dir string) (out, rightful []finding, files int, size int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := fileData(path)
		if err != nil {
			return err
		}
		files++
		size += int64(len(b))
		rel, _ := filepath.Rel(dir, path)
		f, a := s.check(fmt.Sprintf("file %s of %s", rel, holder), holder, inFile, b)
		out, rightful = append(out, f...), append(rightful, a...)
		return nil
	})
	return out, rightful, files, size, err
}

// bsnNeedles are a BSN and its unkeyed SHA-256 in every form it could be written in.
func bsnNeedles(label, bsn string, parties map[string]bool) []needle {
	sum := sha256.Sum256([]byte(bsn))
	forms := []struct{ form, v string }{
		{"ASCII", bsn},
		{"hex of the ASCII", hex.EncodeToString([]byte(bsn))},
		{"SHA-256", string(sum[:])},
		{"SHA-256 hex", hex.EncodeToString(sum[:])},
		{"SHA-256 HEX", strings.ToUpper(hex.EncodeToString(sum[:]))},
		{"SHA-256 base64", base64.StdEncoding.EncodeToString(sum[:])},
		{"SHA-256 base64url", base64.RawURLEncoding.EncodeToString(sum[:])},
	}
	var out []needle
	for _, f := range forms {
		out = append(out, needle{what: fmt.Sprintf("BSN of %s (%s)", label, f.form), value: []byte(f.v), parties: parties})
	}
	return out
}

// scanNode is a node of the scan, on disk, whose network traffic and log lines are captured.
type scanNode struct {
	*netNode
	name, dir string
	cap       *capture
	logs      *logBuffer
}

// logBuffer keeps a node's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.SplitAfter(bytes.Clone(b.buf.Bytes()), []byte("\n"))
}

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// jwsSignature is the signature segment of a compact JWS: unique to it, and the part a copy of
// the JWS always carries literally.
func jwsSignature(t *testing.T, jws string) string {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 || len(parts[2]) < minNeedle {
		t.Fatalf("not a compact JWS: %.40q", jws)
	}
	return parts[2]
}

// TestPrivacyScan checks invariant 3 (DESIGN §2): a BSN never reaches a node that is not a party
// to it, not even hashed. It runs the access story over five nodes on disk — a GP practice (the
// custodian, which also hosts its merged predecessor), a hospital, a pharmacy, a patient portal and
// a bystander hosting an unrelated organisation — with eight patients: consents recorded, relayed
// by the portal and accepted or rejected, revoked; tokens granted and refused, introspected; an
// access recorded; a referral grant; a succession; service registrations; a key rotation; two
// rounds of witnessing. Then it looks for every patient secret in every gossip message and peer
// RPC message each node sent or received (network.Config.Tap), in every key and value of each
// node's store (every version badger holds), in the raw bytes of each node's files while it runs
// (badger's memtable files hold every write uncompressed) and after it closed (tables are
// Snappy-compressed, so the store is reopened and read again too), and in each node's log lines.
// Memberlist is not used: it carries only signed peer records.
//
// Who is a party to what, from DESIGN §4 "What goes where" and the access flow:
//   - the BSN is known to the custodian, to each organisation that asked about the patient (its
//     EHR gave the BSN), to the portal that relayed the patient's consent, and to the organisation
//     a referral grant names; it never travels in the clear, not even between parties (it goes
//     inside JWEs), never reaches log lines, and never gossip;
//   - a custodian's keyed pseudonym stays at the custodian's node, except that it leaves in an
//     access token or a referral grant, to the organisation granted;
//   - a consent id, token id, assertion jti, receipt, referral grant, private message id and
//     consent request id are known to the two organisations the exchange is between (a consent
//     id also to the grantee, whose token names it as its basis, and to the relaying portal);
//   - a custodian and a grantee named together in one value (a consent, a receipt, a log entry
//     about a request) is a relationship about a patient: it stays with the two of them. Public
//     documents each name one organisation (a succession credential names two organisations of
//     one custodian, and is public by design).
//
// Gossip carries only public documents: any of the above in any gossip message is a finding.
// Controls show that each scan reports a needle put where it must not be.
func TestPrivacyScan(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five nodes")
	}
	ctx := t.Context()
	begin := time.Now()
	reg := newRegister(t)
	// start starts a node like startNetNode, on disk, with its network tapped and its own log
	// lines (debug level) kept for the scan.
	start := func(name string) *scanNode {
		dir := t.TempDir()
		if _, err := Init(dir); err != nil {
			t.Fatalf("Init: %v", err)
		}
		sn := &scanNode{name: name, dir: dir, cap: &capture{}, logs: &logBuffer{}}
		cfg := DefaultConfig()
		cfg.DataDir = dir
		cfg.APIAddr = "127.0.0.1:0"
		cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
		cfg.TrustedRegisters = []string{reg.DID()}
		cfg.SyncInterval = 2 * time.Second
		cfg.BootstrapTimeout = 5 * time.Second
		cfg.Log.CheckpointInterval = time.Second // witnesses see every entry soon
		cfg.NetworkTap = sn.cap.tap
		n, err := New(cfg, slog.New(slog.NewTextHandler(sn.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if err := n.Start(ctx); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { n.Close(context.Background()) })
		sn.netNode = &netNode{Node: n}
		return sn
	}
	gpN, hospN, pharmN, portalN, byN := start("gp"), start("hospital"), start("pharmacy"), start("portal"), start("bystander")
	nodes := []*scanNode{gpN, hospN, pharmN, portalN, byN}
	gp := hostTyped(t, gpN.netNode, reg, "Huisartsenpraktijk Jansen", "Z3")
	oldGP := hostTyped(t, gpN.netNode, reg, "Huisartsenpraktijk De Vries (merged)", "Z3")
	hospital := hostTyped(t, hospN.netNode, reg, "Stadsziekenhuis", "V6")
	pharmacy := hostTyped(t, pharmN.netNode, reg, "Apotheek Centrum", "J8")
	portal := hostTyped(t, portalN.netNode, reg, "Mijn Zorgportaal", "P1")
	bystander := hostTyped(t, byN.netNode, reg, "GGZ Noord", "G5")
	gpN.org, hospN.org, pharmN.org, portalN.org, byN.org = gp, hospital, pharmacy, portal, bystander
	orgs := map[string]string{gp: "gp", oldGP: "gp", hospital: "hospital", pharmacy: "pharmacy", portal: "portal", bystander: "bystander"}
	for _, n := range []*scanNode{hospN, pharmN, portalN, byN} {
		link(t, n.netNode, gpN.netNode)
	}
	link(t, byN.netNode, hospN.netNode)
	link(t, pharmN.netNode, byN.netNode)
	eventually(t, 20*time.Second, "every node admits its peers and knows every organisation", func() bool {
		for _, n := range nodes {
			for org := range orgs {
				if _, err := n.dids.Resolve(ctx, org); err != nil {
					return false
				}
			}
		}
		return admittedCount(gpN.netNode) == 4 && admittedCount(byN.netNode) == 3
	})

	// Public documents: service registrations.
	for _, n := range []*scanNode{gpN, pharmN, byN} {
		sr := &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://" + n.name + ".example/fhir"}}}}
		if _, err := n.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{Organization: n.org, Subject: sr}); err != nil {
			t.Fatalf("IssueCredential: %v", err)
		}
	}

	// The patients, and who is a party to each BSN.
	type patient struct {
		label, bsn string
		knows      []string // nodes whose organisations know the BSN
		granted    []string // nodes that received the GP's pseudonym (a token or a grant)
	}
	patients := []*patient{
		{label: "P1 (consent for the hospital)", knows: []string{"gp", "hospital"}, granted: []string{"hospital"}},
		{label: "P2 (consent for the pharmacy)", knows: []string{"gp", "pharmacy"}, granted: []string{"pharmacy"}},
		{label: "P3 (consent revoked)", knows: []string{"gp", "hospital"}, granted: []string{"hospital"}},
		{label: "P4 (consent through the portal)", knows: []string{"gp", "portal", "hospital"}, granted: []string{"hospital"}},
		{label: "P5 (consent rejected)", knows: []string{"gp", "portal", "hospital", "pharmacy"}},
		{label: "P6 (referral)", knows: []string{"gp", "hospital"}, granted: []string{"hospital"}},
		{label: "P7 (consent at the predecessor)", knows: []string{"gp", "hospital"}, granted: []string{"hospital"}},
		{label: "P8 (the bystander's own)", knows: []string{"bystander"}},
	}
	for i, p := range patients {
		p.bsn = testBSN(700 + i)
	}
	p1, p2, p3, p4, p5, p6, p7, p8 := patients[0], patients[1], patients[2], patients[3], patients[4], patients[5], patients[6], patients[7]

	var needles []needle
	secret := func(what, v string, parties ...string) {
		if len(v) < minNeedle {
			t.Fatalf("%s %q is too short to look for", what, v)
		}
		needles = append(needles, needle{what: what, value: []byte(v), parties: set(parties...), inClear: true})
	}
	consentID := func(c *schakelv1.Consent, what string, parties ...string) string {
		id := c.GetId()
		secret("consent id of "+what, strings.TrimPrefix(id, "urn:uuid:"), parties...)
		return id
	}
	jkt := dpopJKT(t)
	// ask sends a token request and notes its secrets: the receipt, the assertion's jti and, for a
	// grant, the token and its id; both organisations are parties to them.
	ask := func(n *scanNode, p *patient, category, grant string, want bool) *schakelv1.RequestTokenResponse {
		t.Helper()
		r := tokenRequest(n.org, gp, category, "01.015", jkt)
		r.Bsn, r.ReferralGrant = p.bsn, grant
		resp, err := n.RequestToken(ctx, r)
		if err != nil {
			t.Fatalf("RequestToken by %s for %s: %v", n.name, p.label, err)
		}
		if got := resp.GetAccessToken() != ""; got != want {
			t.Fatalf("RequestToken by %s for %s %s: granted %t, want %t (%s)", n.name, p.label, category, got, want, resp.GetErrorDescription())
		}
		rc, err := authz.VerifyReceipt(ctx, resp.GetReceipt(), authz.RegistryResolver(n.dids))
		if err != nil {
			t.Fatalf("VerifyReceipt: %v", err)
		}
		what := fmt.Sprintf("%s's request for %s", n.name, p.label)
		secret("receipt of "+what, jwsSignature(t, resp.GetReceipt()), "gp", n.name)
		secret("assertion jti of "+what, rc.RequestID, "gp", n.name)
		if want {
			secret("access token of "+what, jwsSignature(t, resp.GetAccessToken()), "gp", n.name)
			secret("token id of "+what, rc.TokenID, "gp", n.name)
		}
		return resp
	}
	record := func(custodian string, p *patient, grantee string) *schakelv1.Consent {
		t.Helper()
		resp, err := gpN.RecordConsent(ctx, &schakelv1.RecordConsentRequest{Bsn: p.bsn, Consent: &schakelv1.Consent{
			Custodian: custodian, Decision: "permit", GranteeOrg: grantee, DataCategories: []string{"medication"},
			Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}})
		if err != nil {
			t.Fatalf("RecordConsent for %s: %v", p.label, err)
		}
		return resp.GetConsent()
	}
	introspect := func(token string, active bool) {
		t.Helper()
		in, err := gpN.Introspect(ctx, &schakelv1.IntrospectRequest{Token: token})
		if err != nil || in.GetActive() != active {
			t.Fatalf("Introspect: %v, active %t, want %t", err, in.GetActive(), active)
		}
	}

	// P1: consent for the hospital; granted, introspected, the access recorded; another category
	// refused.
	consentID(record(gp, p1, hospital), p1.label, "gp", "hospital")
	r := ask(hospN, p1, "medication", "", true)
	introspect(r.GetAccessToken(), true)
	var ir authz.Response
	in, _ := gpN.Introspect(ctx, &schakelv1.IntrospectRequest{Token: r.GetAccessToken()})
	if err := json.Unmarshal([]byte(in.GetJson()), &ir); err != nil {
		t.Fatalf("introspection: %v", err)
	}
	if _, err := gpN.RecordAccess(ctx, &schakelv1.RecordAccessRequest{Organization: gp, Bsn: p1.bsn,
		Requester: &schakelv1.Requester{Did: hospital}, Employee: &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
		Purpose: "TREAT", DataCategory: "medication", Query: "MedicationStatement?patient=…", TokenId: ir.ID}); err != nil {
		t.Fatalf("RecordAccess: %v", err)
	}
	ask(hospN, p1, "gp-professional-summary", "", false)

	// P2: consent for the pharmacy.
	consentID(record(gp, p2, pharmacy), p2.label, "gp", "pharmacy")
	introspect(ask(pharmN, p2, "medication", "", true).GetAccessToken(), true)

	// P3: granted, then revoked: the token introspects inactive, the next request is refused.
	c3 := consentID(record(gp, p3, hospital), p3.label, "gp", "hospital")
	r = ask(hospN, p3, "medication", "", true)
	if _, err := gpN.RevokeConsent(ctx, &schakelv1.RevokeConsentRequest{Custodian: gp, Id: c3}); err != nil {
		t.Fatalf("RevokeConsent: %v", err)
	}
	introspect(r.GetAccessToken(), false)
	ask(hospN, p3, "medication", "", false)

	// viaPortal relays a consent for p through the portal (a private message to the GP practice),
	// where it is pending until processed: accepted or rejected, with a notice back to the portal
	// (another private message).
	viaPortal := func(p *patient, grantee, granteeNode string, accept bool) {
		t.Helper()
		rc, err := portalN.RequestConsent(ctx, &schakelv1.RequestConsentRequest{Organization: portal, Bsn: p.bsn,
			Consent: &schakelv1.Consent{Custodian: gp, Decision: "permit", GranteeOrg: grantee, DataCategories: []string{"medication"},
				Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "online", Assurance: "high"}})
		if err != nil {
			t.Fatalf("RequestConsent: %v", err)
		}
		secret("consent request id of "+p.label, rc.GetRequestId(), "portal", "gp")
		secret("private message id of the consent request of "+p.label, rc.GetMessageId(), "portal", "gp")
		var pending *schakelv1.Consent
		eventually(t, 15*time.Second, "the consent request arrives at the GP practice", func() bool {
			l, err := gpN.ListConsents(ctx, &schakelv1.ListConsentsRequest{Custodian: gp, Status: "pending"})
			if err != nil || len(l.GetConsents()) != 1 {
				return false
			}
			pending = l.GetConsents()[0]
			return true
		})
		consentID(pending, p.label, "gp", "portal", granteeNode)
		before, err := portalN.Messages(ctx, portal)
		if err != nil {
			t.Fatalf("Messages: %v", err)
		}
		if _, err := gpN.ProcessConsent(ctx, &schakelv1.ProcessConsentRequest{Custodian: gp, Id: pending.GetId(), Accept: accept,
			Reason: map[bool]string{false: "gegevens komen niet overeen"}[accept]}); err != nil {
			t.Fatalf("ProcessConsent: %v", err)
		}
		eventually(t, 15*time.Second, "the notice reaches the portal", func() bool {
			ms, err := portalN.Messages(ctx, portal)
			if err != nil || len(ms) != len(before)+1 {
				return false
			}
			secret("private message id of the notice about "+p.label, ms[len(ms)-1].ID, "portal", "gp")
			return true
		})
	}

	// P4: the consent comes through the portal, is accepted, and opens the data to the hospital.
	viaPortal(p4, hospital, "hospital", true)
	ask(hospN, p4, "medication", "", true)

	// P5: a consent for the pharmacy comes through the portal and is rejected; both the hospital
	// and the pharmacy ask, both are refused.
	viaPortal(p5, pharmacy, "pharmacy", false)
	ask(hospN, p5, "medication", "", false)
	ask(pharmN, p5, "medication", "", false)

	// P6: a referral grant, delivered point to point, opens the data to the hospital.
	ig, err := gpN.IssueReferralGrant(ctx, &schakelv1.IssueReferralGrantRequest{Custodian: gp, Grantee: hospital, Bsn: p6.bsn,
		DataCategories: []string{"medication"}, Resources: []string{"MedicationStatement/7"}, ValidForSeconds: 3600})
	if err != nil {
		t.Fatalf("IssueReferralGrant: %v", err)
	}
	secret("referral grant id of "+p6.label, strings.TrimPrefix(ig.GetGrantId(), "urn:uuid:"), "gp", "hospital")
	secret("referral grant of "+p6.label, jwsSignature(t, ig.GetGrant()), "gp", "hospital")
	secret("private message id of the referral grant of "+p6.label, ig.GetMessageId(), "gp", "hospital")
	eventually(t, 15*time.Second, "the grant reaches the hospital", func() bool {
		l, err := hospN.ListNotices(ctx, &schakelv1.ListNoticesRequest{Organization: hospital})
		return err == nil && len(l.GetGrants()) == 1
	})
	ask(hospN, p6, "medication", ig.GetGrantId(), true)

	// P7: consent at the predecessor; after the (public) succession it counts at the successor.
	consentID(record(oldGP, p7, hospital), p7.label, "gp", "hospital")
	if _, err := gpN.DeclareSuccession(ctx, &schakelv1.DeclareSuccessionRequest{Predecessor: oldGP, Successor: gp, Reason: "merged"}); err != nil {
		t.Fatalf("DeclareSuccession: %v", err)
	}
	ask(hospN, p7, "medication", "", true)

	// P8: the bystander's own patient, in its own log.
	if _, err := byN.RecordAccess(ctx, &schakelv1.RecordAccessRequest{Organization: bystander, Bsn: p8.bsn,
		Employee: &schakelv1.Employee{Uzi: "900054321", Role: "01.015"}, Purpose: "TREAT", DataCategory: "medication", Query: "Observation?patient=…"}); err != nil {
		t.Fatalf("RecordAccess: %v", err)
	}
	for _, v := range []struct {
		n   *scanNode
		org string
		p   *patient
	}{{gpN, gp, p1}, {byN, bystander, p8}, {hospN, hospital, p1}} {
		if _, err := v.n.GetPatientView(ctx, &schakelv1.GetPatientViewRequest{Organization: v.org, Bsn: v.p.bsn}); err != nil {
			t.Fatalf("GetPatientView: %v", err)
		}
	}

	// Witnessing: every log's latest checkpoint covers all of it and carries the cosignatures of
	// other nodes (the GP practice's, of every other node).
	witnesses := map[string]string{}
	for _, n := range nodes {
		witnesses[n.name] = WitnessPrefix + n.PeerID().String()
	}
	hostedLogs := []struct {
		n    *scanNode
		org  string
		want int
	}{{gpN, gp, 4}, {gpN, oldGP, 1}, {hospN, hospital, 1}, {pharmN, pharmacy, 1}, {byN, bystander, 1}} // the portal's log is empty
	unwitnessed := func() string {
		for _, h := range hostedLogs {
			info, err := h.n.GetLogInfo(ctx, &schakelv1.GetLogInfoRequest{Organization: h.org})
			if err != nil {
				return err.Error()
			}
			cps, err := h.n.ListCheckpoints(ctx, &schakelv1.ListCheckpointsRequest{Organization: h.org})
			if err != nil || len(cps.GetCheckpoints()) == 0 {
				return fmt.Sprintf("%s: size %d, no checkpoint (%v)", orgName(h.org, orgs, gp, oldGP), info.GetSize(), err)
			}
			last := cps.GetCheckpoints()[len(cps.GetCheckpoints())-1]
			cosigners := 0
			for name, w := range witnesses {
				if name != h.n.name && strings.Contains(last.GetNote(), "— "+w+" ") {
					cosigners++
				}
			}
			if last.GetSize() != info.GetSize() || cosigners < h.want {
				return fmt.Sprintf("%s: size %d, checkpoint of %d with %d cosignatures of others", orgName(h.org, orgs, gp, oldGP), info.GetSize(), last.GetSize(), cosigners)
			}
		}
		return ""
	}
	witnessed := func(round string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			missing := unwitnessed()
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 30s, %s: not every log is checkpointed and cosigned by other nodes: %s", round, missing)
			}
		}
	}
	witnessed("first round")

	// The hospital rotates its key (a gossiped key event and DID document) and asks again with it.
	rot, err := hospN.RotateKey(ctx, &schakelv1.RotateKeyRequest{Organization: hospital})
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	eventually(t, 15*time.Second, "the GP practice learns the hospital's new key", func() bool {
		st, err := gpN.dids.Resolve(ctx, hospital)
		return err == nil && strings.HasSuffix(rot.GetNewKeyId(), st.Current().SigningKey.KID())
	})
	ask(hospN, p1, "medication", "", true)

	// A second round of witnessing: each witness checks the new checkpoints against those it
	// cosigned with a consistency proof from the log's node.
	witnessed("second round")
	scenario := time.Since(begin)

	// The needles: every BSN and its hashes; every organisation's pseudonyms of every BSN.
	for _, p := range patients {
		needles = append(needles, bsnNeedles(p.label, p.bsn, set(p.knows...))...)
		for org, host := range orgs {
			l, err := nodesByName(nodes, host).logOf(org)
			if err != nil {
				t.Fatalf("logOf %s: %v", org, err)
			}
			all, err := l.pseud.All(p.bsn)
			if err != nil {
				t.Fatalf("pseudonyms: %v", err)
			}
			parties := set(host)
			if org == gp {
				parties = set(append([]string{host}, p.granted...)...)
			}
			for _, ps := range all {
				needles = append(needles, needle{what: fmt.Sprintf("pseudonym of %s at %s", p.label, orgName(org, orgs, gp, oldGP)),
					value: []byte(ps), parties: parties, inClear: true})
			}
		}
	}
	// The consents the custodian keeps carry exactly those pseudonyms.
	for _, custodian := range []string{gp, oldGP} {
		cs, err := gpN.consents.List(ctx, custodian, "", 100)
		if err != nil || len(cs) == 0 {
			t.Fatalf("List consents of %s: %d, %v", custodian, len(cs), err)
		}
		for _, c := range cs {
			if !slices.ContainsFunc(needles, func(n needle) bool { return string(n.value) == c.Patient }) {
				t.Fatalf("consent %s names patient %q, not one of the pseudonyms looked for", c.ID, c.Patient)
			}
		}
	}
	// Relationships: a custodian and a grantee in one value. DID documents and origins name an
	// organisation by the DID's method-specific id.
	markers := [][]byte{}
	marker := map[string]int{}
	for _, org := range []string{gp, oldGP, hospital, pharmacy, portal} {
		marker[org] = len(markers)
		markers = append(markers, []byte(strings.TrimPrefix(org, did.Method)))
	}
	var pairs []pairNeedle
	for _, c := range []string{gp, oldGP} {
		for _, g := range []string{hospital, pharmacy, portal} {
			pairs = append(pairs, pairNeedle{what: fmt.Sprintf("%s and %s named together", orgName(c, orgs, gp, oldGP), orgs[g]),
				a: marker[c], b: marker[g], parties: set(orgs[c], orgs[g])})
		}
	}
	sc, err := newScanner(needles, markers, pairs)
	if err != nil {
		t.Fatalf("newScanner: %v", err)
	}

	// (b) Everything every node's network sent or received.
	var findings []finding
	report := func(fs []finding) {
		for _, f := range fs {
			t.Errorf("leak: %s", f)
		}
		findings = append(findings, fs...)
	}
	counts := map[string]int{}
	rpcRightful := map[string][]finding{}
	var gossipMsgs, rpcMsgs int
	for _, n := range nodes {
		msgs := n.cap.snapshot()
		fs, rightful := sc.scanTapped(n.name, msgs, counts)
		report(fs)
		rpcRightful[n.name] = rightful
		for _, m := range msgs {
			if m.rpc() {
				rpcMsgs++
			} else {
				gossipMsgs++
			}
		}
	}
	// The tap sees every kind of traffic of the scenario, and the peer RPC scan sees into what
	// parties exchange: the hospital received the GP practice's pseudonym of P1 in its token.
	for _, kind := range []string{network.TopicDocuments, network.TopicCheckpoints, schakelv1connect.PeerServiceHelloProcedure,
		schakelv1connect.PeerServiceReconcileProcedure, schakelv1connect.PeerServiceRequestTokenProcedure,
		schakelv1connect.PeerServiceDeliverProcedure, schakelv1connect.PeerServiceGetLogProofProcedure} {
		if counts[kind] == 0 {
			t.Errorf("no %s message seen: the scenario or the tap misses a kind of traffic", kind)
		}
	}
	holds := func(fs []finding, where, what string) bool {
		return slices.ContainsFunc(fs, func(f finding) bool { return strings.Contains(f.where, where) && strings.Contains(f.what, what) })
	}
	if !holds(rpcRightful["hospital"], "RequestToken", "pseudonym of "+p1.label+" at the GP practice") {
		t.Error("the hospital's peer RPC did not carry the GP practice's pseudonym of P1 in its token: the RPC scan sees nothing")
	}

	// (a) Every node's storage: every key and value, every version badger holds; and the raw bytes
	// of every file of its data directory while it runs (badger's memtable files hold every write
	// uncompressed).
	storeRightful := map[string][]finding{}
	versions := map[string]int{}
	fileStats := map[string]string{}
	for _, n := range nodes {
		fs, rightful, v, err := sc.scanDB(n.name, n.db.Badger())
		if err != nil {
			t.Fatalf("scan store of %s: %v", n.name, err)
		}
		report(fs)
		storeRightful[n.name], versions[n.name] = rightful, v
		if err := n.db.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		fs, fr, files, size, err := sc.scanFiles(n.name, n.dir)
		if err != nil {
			t.Fatalf("scan files of %s: %v", n.name, err)
		}
		report(fs)
		fileStats[n.name] = fmt.Sprintf("%d files, %d bytes of data, %d rightful hits", files, size, len(fr))
		if n == gpN && !holds(fr, "db/", "pseudonym of "+p1.label+" at the GP practice") {
			t.Error("the GP practice's files do not hold its pseudonym of P1: the file scan sees nothing")
		}
	}
	// The store scan sees what parties keep: the consent keyed by the pseudonym, the receipt, the
	// portal's notice.
	if !holds(storeRightful["gp"], "consent", "pseudonym of "+p1.label+" at the GP practice") ||
		!holds(storeRightful["hospital"], "receipt", "token id of hospital's request for "+p1.label) ||
		!holds(storeRightful["portal"], "msg", "consent id of "+p4.label) {
		t.Error("the parties' stores do not hold their own secrets: the store scan sees nothing")
	}

	// Controls: each scan reports a needle put where it must not be.
	controls(t, ctx, sc, byN, gpN, p1.bsn, gp, hospital)

	// After close: the files again, and the stores reopened (what persisted, in whatever form).
	closedStats := map[string]string{}
	for _, n := range nodes {
		if err := n.Close(context.Background()); err != nil {
			t.Fatalf("Close %s: %v", n.name, err)
		}
	}
	for _, n := range nodes {
		fs, fr, files, size, err := sc.scanFiles(n.name, n.dir)
		if err != nil {
			t.Fatalf("scan files of %s: %v", n.name, err)
		}
		report(fs)
		db, err := store.Open(store.Config{Dir: filepath.Join(n.dir, dbDir)})
		if err != nil {
			t.Fatalf("reopen store of %s: %v", n.name, err)
		}
		ss, sr, v, err := sc.scanDB(n.name, db.Badger())
		db.Close()
		if err != nil {
			t.Fatalf("scan reopened store of %s: %v", n.name, err)
		}
		report(ss)
		closedStats[n.name] = fmt.Sprintf("%d files, %d bytes of data, %d rightful hits; reopened store %d versions, %d rightful hits",
			files, size, len(fr), v, len(sr))
	}

	// Every node's log lines, debug level, to the end.
	logLines := map[string]int{}
	for _, n := range nodes {
		for _, line := range n.logs.lines() {
			logLines[n.name]++
			fs, _ := sc.check("log line of "+n.name, n.name, inLog, line)
			report(fs)
		}
	}

	// Summary.
	t.Logf("scenario %s, whole test %s", scenario.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	t.Logf("needles: %d (BSNs and hashes, pseudonyms, ids), %d relationships", len(needles), len(pairs))
	t.Logf("network: %d gossip messages, %d peer RPC messages scanned", gossipMsgs, rpcMsgs)
	kinds := make([]string, 0, len(counts))
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		t.Logf("  %-45s %5d", k, counts[k])
	}
	for _, n := range nodes {
		t.Logf("%s: store %d versions, %d rightful hits; peer RPC %d rightful hits; %d log lines; files while running: %s; after close: %s",
			n.name, versions[n.name], len(storeRightful[n.name]), len(rpcRightful[n.name]), logLines[n.name], fileStats[n.name], closedStats[n.name])
	}
	// Where a BSN rests at a party (allowed by invariant 3; worth knowing).
	atRestBSN := map[string]bool{}
	for _, n := range nodes {
		for _, f := range storeRightful[n.name] {
			if strings.HasPrefix(f.what, "BSN of") {
				where, _, _ := strings.Cut(f.where, ", version")
				atRestBSN[where+": "+f.what] = true
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(atRestBSN)) {
		t.Logf("BSN at rest at a party: %s", k)
	}
	t.Logf("findings: %d", len(findings))
}

func nodesByName(nodes []*scanNode, name string) *scanNode {
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func orgName(org string, orgs map[string]string, gp, oldGP string) string {
	switch org {
	case gp:
		return "the GP practice"
	case oldGP:
		return "the GP practice's predecessor"
	}
	return orgs[org]
}

// controls proves that each scan reports what it looks for: in scratch values (a BSN in a JWS
// header inside a protobuf message, a hash of it nested in base64 JSON, a pseudonym and a
// relationship at a non-party), in gossip the bystander really publishes, and in a value and
// file the bystander really stores.
func controls(t *testing.T, ctx context.Context, sc *scanner, byN, gpN *scanNode, bsn, gp, hospital string) {
	t.Helper()
	pseudonym, err := gpN.pseudonymAt(gp, bsn)
	if err != nil {
		t.Fatalf("pseudonymAt: %v", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jws := b64([]byte(`{"kid":"`+bsn+`"}`)) + "." + b64([]byte(`{}`)) + "." + b64(bytes.Repeat([]byte{7}, 8))
	// In protobuf: field 6's tag is '2' and a length of 0x59 is 'Y', both base64 characters that
	// run on into the JWS's first segment.
	doc := protowire.AppendTag(nil, 1, protowire.BytesType)
	doc = protowire.AppendBytes(doc, []byte("A"))
	doc = protowire.AppendTag(doc, 6, protowire.BytesType)
	doc = protowire.AppendBytes(doc, append([]byte(jws), bytes.Repeat([]byte("."), 0x59-len(jws))...))
	sum := sha256.Sum256([]byte(bsn))
	nested := []byte(`{"body":"` + base64.StdEncoding.EncodeToString([]byte(`{"h":"`+hex.EncodeToString(sum[:])+`"}`)) + `"}`)
	rel := []byte(`{"custodian":"` + gp + `","grantee":"` + hospital + `"}`)
	for _, tc := range []struct {
		name   string
		holder string
		ch     channel
		unit   []byte
		want   bool
	}{
		{"a BSN in a JWS header inside protobuf, in gossip", "hospital", inGossip, doc, true},
		{"the same in a party's peer RPC: never in the clear", "gp", inRPC, doc, true},
		{"a BSN's SHA-256 hex in base64 JSON at a non-party", "bystander", atRest, nested, true},
		{"the same at a party", "gp", atRest, nested, false},
		{"a pseudonym at a non-party", "bystander", atRest, []byte(`x` + pseudonym + `x`), true},
		{"a pseudonym at its custodian", "gp", atRest, []byte(pseudonym), false},
		{"a pseudonym in a token to the grantee", "hospital", inRPC, []byte(b64([]byte(`{"patient":"` + pseudonym + `"}`))), false},
		{"a custodian and its grantee together at a third node", "bystander", atRest, rel, true},
		{"the same in gossip", "", inGossip, rel, true},
		{"the same at the grantee", "hospital", atRest, rel, false},
		{"each alone at a third node", "bystander", atRest, []byte(gp + " " + strings.Repeat("-", 10)), false},
	} {
		fs, _ := sc.check("control", tc.holder, tc.ch, tc.unit)
		if (len(fs) > 0) != tc.want {
			t.Errorf("control %s: findings %v, want any: %t", tc.name, fs, tc.want)
		}
	}

	// Live: a canary BSN the bystander publishes (peers refuse it; the tap sees it both ways) and
	// stores.
	canary := testBSN(990)
	csc, err := newScanner(bsnNeedles("the canary", canary, set()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := len(gpN.cap.snapshot())
	if err := byN.Network().PublishNote(ctx, []byte("canary "+canary+"\n")); err != nil {
		t.Fatalf("PublishNote: %v", err)
	}
	eventually(t, 10*time.Second, "the GP practice's tap sees the canary", func() bool {
		fs, _ := csc.scanTapped("gp", gpN.cap.snapshot()[before:], map[string]int{})
		return len(fs) > 0
	})
	if fs, _ := csc.scanTapped("bystander", byN.cap.snapshot(), map[string]int{}); len(fs) == 0 {
		t.Error("the bystander's tap did not see the canary it published")
	}
	ns := store.MustNamespace("privacy-canary")
	if err := byN.db.Update(ctx, func(tx *store.Txn) error {
		return tx.Set(ns, []byte("k"), []byte(`{"patient":"`+canary+`"}`))
	}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if fs, _, _, err := csc.scanDB("bystander", byN.db.Badger()); err != nil || len(fs) == 0 {
		t.Errorf("the store scan missed the canary stored at the bystander: %v", err)
	}
	if err := byN.db.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if fs, _, _, _, err := csc.scanFiles("bystander", byN.dir); err != nil || len(fs) == 0 {
		t.Errorf("the file scan missed the canary stored at the bystander: %v", err)
	}
}
