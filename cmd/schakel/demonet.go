package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// orgNode is one node of the demo network and the organisation it hosts. Its data directory is
// DIR/<key>.
type orgNode struct {
	key string
	n   *node.Node
	c   *client
	org string // the hosted organisation's DID
	oc  string // its organisation credential's id
}

// startNode starts (and on first use initialises) the node named key, trusting the given registers.
func (d *demo) startNode(ctx context.Context, key string, trusted []string, bootstrap ...string) (*orgNode, error) {
	dir := filepath.Join(d.dir, key)
	if _, err := os.Stat(filepath.Join(dir, "node.key")); errors.Is(err, os.ErrNotExist) {
		if _, err := node.Init(dir); err != nil {
			return nil, err
		}
	}
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = trusted
	cfg.Bootstrap = bootstrap
	var logw io.Writer = io.Discard
	if os.Getenv("SCHAKEL_DEMO_LOG") != "" {
		logw = os.Stderr
	}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", key))
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		n.Close(context.Background())
		return nil, err
	}
	on := &orgNode{key: key, n: n, c: dial("http://" + n.APIAddr().String())}
	if old := d.nodes[key]; old != nil {
		on.org, on.oc = old.org, old.oc
	}
	d.nodes[key] = on
	return on, nil
}

// stopNode closes the node named key; its data directory stays.
func (d *demo) stopNode(ctx context.Context, key string) error {
	n := d.nodes[key]
	if n == nil || n.n == nil {
		return nil
	}
	err := n.n.Close(ctx)
	n.n = nil
	return err
}

func (d *demo) closeAll() {
	for key := range d.nodes {
		d.stopNode(context.Background(), key)
	}
}

// p2pAddr is the GP practice's node's libp2p address, the one the others dial first.
func (d *demo) p2pAddr() string { return d.nodes["gp"].n.Network().Addrs()[0] }

// waitFor polls cond for up to d.
func waitFor(ctx context.Context, d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// onEvery waits until cond holds on every running node of the demo's organisations.
func (d *demo) onEvery(ctx context.Context, timeout time.Duration, cond func(*orgNode) (bool, error)) error {
	for _, o := range demoOrgs {
		n := d.nodes[o.key]
		if n == nil || n.n == nil {
			continue
		}
		if err := waitFor(ctx, timeout, func() (bool, error) { return cond(n) }); err != nil {
			return fmt.Errorf("at %s's node: %w", o.name, err)
		}
	}
	return nil
}

// everywhere waits until every running node holds the credentials with the given ids.
func (d *demo) everywhere(ctx context.Context, ids ...string) error {
	return d.onEvery(ctx, 15*time.Second, func(n *orgNode) (bool, error) { return hasCredentials(ctx, n.c, ids...) })
}

func hasCredentials(ctx context.Context, c *client, ids ...string) (bool, error) {
	resp, err := call(ctx, c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{})
	if err != nil {
		return false, err
	}
	held := map[string]bool{}
	for _, cr := range resp.GetCredentials() {
		held[cr.GetId()] = true
	}
	for _, id := range ids {
		if !held[id] {
			return false, nil
		}
	}
	return true, nil
}

func (d *demo) registration(ctx context.Context, c *client, org, url, category string) (string, error) {
	resp, err := call(ctx, c.cred.IssueCredential, &schakelv1.IssueCredentialRequest{
		Organization: org,
		Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: url}}, DataCategories: []string{category}, Purposes: []string{"TREAT"},
		}},
	})
	if err != nil {
		return "", err
	}
	if resp.GetCredential().GetStatus() != schakelv1.CredentialStatus_CREDENTIAL_STATUS_VALID {
		return "", fmt.Errorf("the registration is %s", resp.GetCredential().GetStatus())
	}
	return resp.GetCredential().GetId(), nil
}

func (d *demo) stepConnect(ctx context.Context) (string, error) {
	start := time.Now()
	var ocs []string
	for _, o := range demoOrgs {
		ocs = append(ocs, d.nodes[o.key].oc)
		if o.key == "gp" {
			continue
		}
		if err := d.nodes[o.key].n.Network().Connect(ctx, d.p2pAddr()); err != nil {
			return "", fmt.Errorf("%s's node dials the GP practice's: %w", o.name, err)
		}
	}
	gp := d.nodes["gp"]
	err := d.onEvery(ctx, 15*time.Second, func(n *orgNode) (bool, error) {
		if len(n.n.Network().AdmittedPeers()) == 0 || len(gp.n.Network().AdmittedPeers()) < len(demoOrgs)-1 {
			return false, nil
		}
		// Gossip reaches an admitted peer once a heartbeat has grafted it into the mesh.
		for _, p := range n.n.Network().Peers() {
			if p.Admitted && p.Connected && !p.InMesh {
				return false, nil
			}
		}
		return hasCredentials(ctx, n.c, ocs...)
	})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "each node presented its organisation credential and its DID document binding its peer id (Hello);\n")
	fmt.Fprintf(&b, "the GP practice's node admitted %d peers; within %s every node held all %d organisation credentials\n",
		len(gp.n.Network().AdmittedPeers()), time.Since(start).Round(time.Millisecond), len(ocs))
	b.WriteString("and the register's documents (set reconciliation over (time, id) ranges), and a gossip heartbeat\nhad joined them in one mesh")
	return b.String(), nil
}

func (d *demo) stepInsurer(ctx context.Context) (string, error) {
	dir := filepath.Join(d.dir, "insurer")
	fake, err := register.Init(ctx, filepath.Join(dir, "own-register"), "Zorgverzekeraar Zekerheid (self-made register)", time.Now())
	if err != nil {
		return "", err
	}
	p, err := d.startNode(ctx, "insurer", []string{fake.DID()})
	if err != nil {
		return "", err
	}
	defer func() {
		d.stopNode(context.Background(), "insurer")
		delete(d.nodes, "insurer")
	}()
	resp, err := call(ctx, p.c.orgs.CreateOrganization, &schakelv1.CreateOrganizationRequest{Name: "Zorgverzekeraar Zekerheid"})
	if err != nil {
		return "", err
	}
	p.org = resp.GetOrganization().GetDid()
	c, err := fake.Issue(ctx, vc.Organization{ID: p.org, Name: "Zorgverzekeraar Zekerheid", URA: "09999999", Type: "Z3", City: "Den Haag"}, 24*time.Hour, time.Now())
	if err != nil {
		return "", err
	}
	docs := append(fake.Documents(), string(c.JWT))
	if _, err := call(ctx, p.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		return "", fmt.Errorf("the insurer's own node refuses its credential: %w", err)
	}
	// Handed to a care provider's node directly, the credential is refused: its issuer is not trusted.
	gp := d.nodes["gp"]
	_, refused := call(ctx, gp.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs})
	if connect.CodeOf(refused) != connect.CodePermissionDenied {
		return "", fmt.Errorf("submit at the GP practice's node: got %v, want permission denied", refused)
	}
	// Over the network it fares no better: its Hello is refused and it is disconnected.
	_ = p.n.Network().Connect(ctx, d.p2pAddr())
	time.Sleep(500 * time.Millisecond)
	if len(p.n.Network().AdmittedPeers()) != 0 {
		return "", fmt.Errorf("the insurer's node was admitted")
	}
	for _, q := range gp.n.Network().Peers() {
		if q.ID == p.n.PeerID().String() && (q.Admitted || q.Connected) {
			return "", fmt.Errorf("the GP practice's node keeps the insurer's node connected")
		}
	}
	if ok, err := hasCredentials(ctx, gp.c, c.ID); err != nil || ok {
		return "", fmt.Errorf("the insurer's credential was stored by the GP practice's node (%v)", err)
	}
	names, err := d.search(ctx, gp.c, "zorgverzekeraar*")
	if err != nil {
		return "", err
	}
	if len(names) != 0 {
		return "", fmt.Errorf("the insurer appears in the directory: %q", names)
	}
	return fmt.Sprintf("submitted directly: refused (%s): %s\nover the network: disconnected at Hello, nothing it sent was stored, refused again for a while;\nthe insurer is in no node's directory",
		connect.CodeOf(refused), errMessage(refused)), nil
}

func (d *demo) stepRestart(ctx context.Context) (string, error) {
	hospital := d.nodes["hospital"]
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.stopNode(sctx, "hospital"); err != nil {
		return "", err
	}
	gp := d.nodes["gp"]
	id, err := d.registration(ctx, gp.c, gp.org, "https://huisartsenpraktijk-jansen.example/fhir/r4", "medication")
	if err != nil {
		return "", err
	}
	start := time.Now()
	hospital, err = d.startNode(ctx, "hospital", []string{d.reg.DID()}, d.p2pAddr())
	if err != nil {
		return "", err
	}
	ready := time.Since(start)
	// What it held before is read from storage: its organisation, and the pharmacy's revoked credential.
	orgs, err := call(ctx, hospital.c.orgs.ListOrganizations, &schakelv1.ListOrganizationsRequest{})
	if err != nil {
		return "", err
	}
	if len(orgs.GetOrganizations()) != 1 || orgs.GetOrganizations()[0].GetDid() != hospital.org {
		return "", fmt.Errorf("after restart the node hosts %d organisations", len(orgs.GetOrganizations()))
	}
	v, err := call(ctx, hospital.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.nodes["pharmacy"].oc}})
	if err != nil {
		return "", err
	}
	if v.GetValid() {
		return "", fmt.Errorf("after restart the revoked credential verifies")
	}
	if err := waitFor(ctx, 15*time.Second, func() (bool, error) { return hasCredentials(ctx, hospital.c, id) }); err != nil {
		return "", fmt.Errorf("the restarted node did not catch up: %w", err)
	}
	return fmt.Sprintf("ready %s after start (state read from storage, nothing replayed): its organisation and the revocation are there;\nthe registration published while it was down arrived %s after start, by set reconciliation",
		ready.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)), nil
}

func (d *demo) stepWitness(ctx context.Context) (string, error) {
	gp := d.nodes["gp"]
	info, err := call(ctx, gp.c.logs.GetLogInfo, &schakelv1.GetLogInfoRequest{Organization: gp.org, Checkpoint: true})
	if err != nil {
		return "", err
	}
	size := info.GetSize()
	var names []string
	d.witnessKeys = nil
	for _, key := range []string{"hospital", "portal"} {
		w := d.nodes[key]
		wi, err := call(ctx, w.c.node.GetNodeInfo, &schakelv1.GetNodeInfoRequest{})
		if err != nil {
			return "", err
		}
		names = append(names, node.WitnessPrefix+w.n.PeerID().String())
		d.witnessKeys = append(d.witnessKeys, wi.GetWitnessKey())
	}
	start := time.Now()
	err = waitFor(ctx, 15*time.Second, func() (bool, error) {
		resp, err := call(ctx, gp.c.logs.ListCheckpoints, &schakelv1.ListCheckpointsRequest{Organization: gp.org, AfterSize: size - 1})
		if err != nil {
			return false, err
		}
		for _, cp := range resp.GetCheckpoints() {
			if cp.GetSize() != size {
				continue
			}
			for _, name := range names {
				if !strings.Contains(cp.GetNote(), "— "+name+" ") {
					return false, nil
				}
			}
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("the cosignatures did not arrive: %w", err)
	}
	return fmt.Sprintf("each checked checkpoint %d of the GP practice's log against the one before (consistency proof)\nand cosigned it; both cosignatures were back at the GP practice's node in %s\nwitness keys: %s",
		size, time.Since(start).Round(time.Millisecond), strings.Join(d.witnessKeys, "\n              ")), nil
}
