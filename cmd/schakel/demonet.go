package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schakel-health/schakel/internal/vc"
	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// peerNode is a further node of the demo network, in its own data directory under the demo's.
type peerNode struct {
	name string // also its data directory's name: whom it hosts
	n    *node.Node
	c    *client
	org  string
}

func (d *demo) startPeer(ctx context.Context, name string, bootstrap ...string) (*peerNode, error) {
	dir := filepath.Join(d.dir, name)
	if _, err := os.Stat(filepath.Join(dir, "node.key")); errors.Is(err, os.ErrNotExist) {
		if _, err := node.Init(dir); err != nil {
			return nil, err
		}
	}
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = []string{d.reg.DID()}
	cfg.Bootstrap = bootstrap
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		n.Close(context.Background())
		return nil, err
	}
	p := &peerNode{name: name, n: n, c: dial("http://" + n.APIAddr().String())}
	d.peers = append(d.peers, p)
	return p, nil
}

// hostOrg creates the peer's organisation and, when admit is set, has the register admit it.
func (d *demo) hostOrg(ctx context.Context, p *peerNode, name, ura, typ, city string, admit bool) error {
	resp, err := call(ctx, p.c.orgs.CreateOrganization, &schakelv1.CreateOrganizationRequest{Name: name})
	if err != nil {
		return err
	}
	p.org = resp.GetOrganization().GetDid()
	docs := d.reg.Documents()
	if admit {
		c, err := d.reg.Issue(ctx, vc.Organization{ID: p.org, Name: name, URA: ura, Type: typ, City: city}, 365*24*time.Hour, time.Now())
		if err != nil {
			return err
		}
		docs = append(docs, string(c.JWT))
	}
	_, err = call(ctx, p.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs})
	return err
}

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

// countCredentials counts the valid credentials a node holds (a revoked one is not taken in by a
// node that sees it for the first time).
func countCredentials(ctx context.Context, c *client) (int, error) {
	resp, err := call(ctx, c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, cr := range resp.GetCredentials() {
		if cr.GetStatus() == schakelv1.CredentialStatus_CREDENTIAL_STATUS_VALID {
			n++
		}
	}
	return n, nil
}

func (d *demo) stepSecondNode(ctx context.Context) (string, error) {
	p, err := d.startPeer(ctx, "post")
	if err != nil {
		return "", err
	}
	if err := d.hostOrg(ctx, p, "Huisartsenpost Utrecht", "04567890", "N6", "Utrecht", true); err != nil {
		return "", err
	}
	want, err := countCredentials(ctx, d.c)
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := p.n.Network().Connect(ctx, d.n.Network().Addrs()[0]); err != nil {
		return "", err
	}
	err = waitFor(ctx, 15*time.Second, func() (bool, error) {
		got, err := countCredentials(ctx, p.c)
		// The post holds the first node's credentials and its own organisation credential.
		return got >= want+1 && len(d.n.Network().AdmittedPeers()) == 1, err
	})
	if err != nil {
		return "", fmt.Errorf("the second node did not catch up: %w", err)
	}
	return fmt.Sprintf("node %s hosts Huisartsenpost Utrecht (%s)\nadmitted each other and caught up on %d credentials in %s by set reconciliation",
		p.n.PeerID(), p.org, want, time.Since(start).Round(time.Millisecond)), nil
}

func (d *demo) stepInsurerNode(ctx context.Context) (string, error) {
	p, err := d.startPeer(ctx, "insurer")
	if err != nil {
		return "", err
	}
	if err := d.hostOrg(ctx, p, "Zorgverzekeraar Zekerheid", "", "", "", false); err != nil {
		return "", err
	}
	_ = p.n.Network().Connect(ctx, d.n.Network().Addrs()[0])
	time.Sleep(500 * time.Millisecond)
	if len(p.n.Network().AdmittedPeers()) != 0 {
		return "", fmt.Errorf("the insurer's node was admitted")
	}
	for _, q := range d.n.Network().Peers() {
		if q.ID == p.n.PeerID().String() && (q.Admitted || q.Connected) {
			return "", fmt.Errorf("the first node keeps the insurer's node connected")
		}
	}
	p.n.Close(context.Background())
	d.peers = slices.DeleteFunc(d.peers, func(q *peerNode) bool { return q == p })
	return "no organisation credential from a trusted register: disconnected at Hello, nothing it sent was stored,\nrefused again for a while", nil
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
	return resp.GetCredential().GetId(), nil
}

func hasCredential(ctx context.Context, c *client, id string) (bool, error) {
	resp, err := call(ctx, c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{})
	if err != nil {
		return false, err
	}
	for _, cr := range resp.GetCredentials() {
		if cr.GetId() == id {
			return true, nil
		}
	}
	return false, nil
}

func (d *demo) stepGossip(ctx context.Context) (string, error) {
	p := d.peers[0]
	id, err := d.registration(ctx, d.c, d.orgs["hospital"], "https://stadsziekenhuis-amersfoort.example/fhir/r4", "discharge-summary")
	if err != nil {
		return "", err
	}
	start := time.Now()
	if err := waitFor(ctx, 10*time.Second, func() (bool, error) { return hasCredential(ctx, p.c, id) }); err != nil {
		return "", fmt.Errorf("the registration did not reach the second node: %w", err)
	}
	return fmt.Sprintf("the hospital's new registration reached the second node in %s, verified before it was stored and forwarded",
		time.Since(start).Round(time.Millisecond)), nil
}

func (d *demo) stepCatchUp(ctx context.Context) (string, error) {
	p := d.peers[0]
	if err := p.n.Close(ctx); err != nil {
		return "", err
	}
	d.peers = d.peers[1:]
	id, err := d.registration(ctx, d.c, d.orgs["gp"], "https://huisartsenpraktijk-jansen.example/fhir/r4", "medication")
	if err != nil {
		return "", err
	}
	start := time.Now()
	q, err := d.startPeer(ctx, p.name, d.n.Network().Addrs()[0])
	if err != nil {
		return "", err
	}
	ready := time.Since(start)
	if err := waitFor(ctx, 15*time.Second, func() (bool, error) { return hasCredential(ctx, q.c, id) }); err != nil {
		return "", fmt.Errorf("the restarted node did not catch up: %w", err)
	}
	return fmt.Sprintf("while the second node was down the GP practice published a registration;\nthe node restarted in %s (state read from storage, nothing replayed) and fetched it in %s",
		ready.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)), nil
}

func (d *demo) stepWitness(ctx context.Context) (string, error) {
	if len(d.peers) == 0 {
		return "", fmt.Errorf("no second node")
	}
	post := d.peers[0]
	info, err := call(ctx, d.c.logs.GetLogInfo, &schakelv1.GetLogInfoRequest{Organization: d.orgs["gp"], Checkpoint: true})
	if err != nil {
		return "", err
	}
	size := info.GetSize()
	postInfo, err := call(ctx, post.c.node.GetNodeInfo, &schakelv1.GetNodeInfoRequest{})
	if err != nil {
		return "", err
	}
	wname := node.WitnessPrefix + post.n.PeerID().String()
	start := time.Now()
	err = waitFor(ctx, 15*time.Second, func() (bool, error) {
		resp, err := call(ctx, d.c.logs.ListCheckpoints, &schakelv1.ListCheckpointsRequest{Organization: d.orgs["gp"], AfterSize: size - 1})
		if err != nil {
			return false, err
		}
		for _, cp := range resp.GetCheckpoints() {
			if cp.GetSize() == size && strings.Contains(cp.GetNote(), "— "+wname+" ") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("the second node's cosignature did not arrive: %w", err)
	}
	d.witnessKey = postInfo.GetWitnessKey()
	return fmt.Sprintf("the post's node checked checkpoint %d of the GP practice's log against the one before (consistency proof)\nand cosigned it in %s; its witness key: %s",
		size, time.Since(start).Round(time.Millisecond), d.witnessKey), nil
}
