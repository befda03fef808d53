package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/schakel-health/schakel/internal/accesslog/verify"
	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/vc"
	"github.com/schakel-health/schakel/node"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

func newDemoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a node on loopback and play the seed scenario, narrating each step",
		Long: `demo needs no set-up: it creates a register and a node in a temporary directory, admits a
GP practice, a pharmacy and a hospital, publishes their service registrations, searches the
directory, refuses an untrusted and a tampered credential, rotates a key, revokes a credential
and restarts the node. It exits 0 only when every step held.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("data")
			if dir == "" {
				tmp, err := os.MkdirTemp("", "schakel-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			exports, _ := cmd.Flags().GetString("out")
			d := &demo{out: cmd.OutOrStdout(), dir: dir, exports: exports}
			if err := d.play(cmd.Context()); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	cmd.Flags().String("data", "", "keep the register's and node's data under this directory (default: a temporary one)")
	cmd.Flags().String("out", "", "write every organisation's access-log export under this directory, for schakel log verify")
	return cmd
}

// demo plays the scenario against a real node through its internal API.
type demo struct {
	out     io.Writer
	dir     string
	exports string // where access-log exports go; under dir when empty
	step    int

	reg   *register.Register
	n     *node.Node
	c     *client
	orgs  map[string]string // short name → DID
	ocs   map[string]string // short name → organisation credential id
	peers []*peerNode       // the further nodes of the network
	// witnessKey is the second node's cosignature key, once it has cosigned the GP's log.
	witnessKey string
}

const demoSteps = 20

// demoBSN is a test BSN that passes the 11-proof.
const demoBSN = "111222333"

// check runs one step: it prints the title, then the outcome and what was seen.
func (d *demo) check(title string, fn func(ctx context.Context) (string, error), ctx context.Context) error {
	d.step++
	fmt.Fprintf(d.out, "[%2d/%d] %s\n", d.step, demoSteps, title)
	detail, err := fn(ctx)
	if err != nil {
		fmt.Fprintf(d.out, "        FAILED: %v\n", err)
		return fmt.Errorf("step %d (%s): %w", d.step, title, err)
	}
	for _, line := range strings.Split(strings.TrimRight(detail, "\n"), "\n") {
		fmt.Fprintf(d.out, "        %s\n", line)
	}
	return nil
}

func (d *demo) startNode(ctx context.Context) error {
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(d.dir, "node")
	cfg.APIAddr = "127.0.0.1:0"
	cfg.P2PAddr = "/ip4/127.0.0.1/tcp/0"
	cfg.TrustedRegisters = []string{d.reg.DID()}
	n, err := node.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		n.Close(context.Background())
		return err
	}
	d.n, d.c = n, dial("http://"+n.APIAddr().String())
	return nil
}

func (d *demo) play(ctx context.Context) error {
	d.orgs, d.ocs = map[string]string{}, map[string]string{}
	defer func() {
		for _, p := range d.peers {
			p.n.Close(context.Background())
		}
		if d.n != nil {
			d.n.Close(context.Background())
		}
	}()
	fmt.Fprintf(d.out, "schakel %s demo — data in %s\n\n", node.Version, d.dir)
	steps := []struct {
		title string
		fn    func(context.Context) (string, error)
	}{
		{"A register (the trust anchor that admits care organisations) creates its key and DID", d.stepRegister},
		{"A node starts on loopback, trusting that register for organisation credentials", d.stepNode},
		{"The node creates three organisations it hosts, each with its own DID and keys", d.stepOrgs},
		{"The register admits them: it issues organisation credentials, the node verifies and stores them", d.stepAdmit},
		{"Each organisation publishes its service registration (FHIR endpoint, data, purposes)", d.stepRegistrations},
		{"Directory search for 'jans*' (case- and accent-insensitive, from an index)", d.stepSearch},
		{"An insurer makes its own 'register' and credential: the node refuses it", d.stepInsurer},
		{"A tampered credential (the GP's name changed, the register's signature kept) is refused", d.stepTamper},
		{"The GP practice rotates its key: what it signed before still verifies", d.stepRotate},
		{"The register revokes the pharmacy's credential: verification and the directory refuse it", d.stepRevoke},
		{"The node restarts: organisations, credentials and the revocation are all still there", d.stepRestart},
		{"A second node, the GP out-of-hours post's, joins: the register admits it, both nodes admit each other", d.stepSecondNode},
		{"An insurer's node tries to join the network without an organisation credential: refused at the door", d.stepInsurerNode},
		{"The hospital updates its registration: gossip carries it to the second node", d.stepGossip},
		{"The second node is offline while the GP practice publishes, then returns and catches up", d.stepCatchUp},
		{"The hospital reads a patient's medication at the GP practice; the GP's node logs each access", d.stepRecord},
		{"The patient asks the GP practice who looked at their data (the question is logged too)", d.stepPatientView},
		{"The second node witnesses the GP practice's log and cosigns its latest checkpoint", d.stepWitness},
		{"An auditor exports the GP practice's access log and verifies it offline, cosignature included", d.stepExport},
		{"A tampered copy of the log (one entry's data category changed) is caught at that entry", d.stepTamperLog},
	}
	for _, s := range steps {
		if err := d.check(s.title, s.fn, ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\nEvery step held.\n")
	return nil
}

func (d *demo) stepRegister(ctx context.Context) (string, error) {
	r, err := register.Init(ctx, filepath.Join(d.dir, "register"), "Register Zorgaanbieders (demo)", time.Now())
	if err != nil {
		return "", err
	}
	d.reg = r
	return "register DID " + r.DID(), nil
}

func (d *demo) stepNode(ctx context.Context) (string, error) {
	if _, err := node.Init(filepath.Join(d.dir, "node")); err != nil {
		return "", err
	}
	if err := d.startNode(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("internal API http://%s (gRPC, gRPC-Web and JSON on one port), peer id %s", d.n.APIAddr(), d.n.PeerID()), nil
}

var demoOrgs = []struct {
	key, name, ura, typ, city, category string
}{
	{"gp", "Huisartsenpraktijk Jansen", "01234567", "Z3", "Utrecht", "gp-professional-summary"},
	{"pharmacy", "Apotheek Janssens", "02345678", "J8", "Utrecht", "medication"},
	{"hospital", "Stadsziekenhuis Amersfoort", "03456789", "V6", "Amersfoort", "discharge-summary"},
}

func (d *demo) stepOrgs(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, o := range demoOrgs {
		resp, err := call(ctx, d.c.orgs.CreateOrganization, &schakelv1.CreateOrganizationRequest{Name: o.name})
		if err != nil {
			return "", err
		}
		d.orgs[o.key] = resp.GetOrganization().GetDid()
		fmt.Fprintf(&b, "%-28s %s\n", o.name, d.orgs[o.key])
	}
	return b.String(), nil
}

func (d *demo) stepAdmit(ctx context.Context) (string, error) {
	var b strings.Builder
	docs := d.reg.Documents()
	for _, o := range demoOrgs {
		c, err := d.reg.Issue(ctx, vc.Organization{ID: d.orgs[o.key], Name: o.name, URA: o.ura, Type: o.typ, City: o.city}, 365*24*time.Hour, time.Now())
		if err != nil {
			return "", err
		}
		d.ocs[o.key] = c.ID
		docs = append(docs, string(c.JWT))
	}
	if _, err := call(ctx, d.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		return "", err
	}
	for _, o := range demoOrgs {
		v, err := call(ctx, d.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.ocs[o.key]}})
		if err != nil {
			return "", err
		}
		if !v.GetValid() {
			return "", fmt.Errorf("%s's credential does not verify: %s", o.name, v.GetReason())
		}
		fmt.Fprintf(&b, "%-28s URA %s type %s (%s): valid\n", o.name, o.ura, o.typ, vc.OrganizationTypes[o.typ])
	}
	return b.String(), nil
}

func (d *demo) stepRegistrations(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, o := range demoOrgs {
		host := strings.ToLower(strings.ReplaceAll(o.name, " ", "-"))
		resp, err := call(ctx, d.c.cred.IssueCredential, &schakelv1.IssueCredentialRequest{
			Organization: d.orgs[o.key],
			Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
				Endpoints:      []*schakelv1.Endpoint{{Type: "fhir", Url: "https://" + host + ".example/fhir"}},
				DataCategories: []string{o.category},
				Purposes:       []string{"TREAT"},
			}},
		})
		if err != nil {
			return "", err
		}
		if resp.GetCredential().GetStatus() != schakelv1.CredentialStatus_CREDENTIAL_STATUS_VALID {
			return "", fmt.Errorf("%s's registration is %s", o.name, resp.GetCredential().GetStatus())
		}
		fmt.Fprintf(&b, "%-28s fhir https://%s.example/fhir offers %s\n", o.name, host, o.category)
	}
	return b.String(), nil
}

func (d *demo) search(ctx context.Context, name string) ([]string, error) {
	resp, err := call(ctx, d.c.cred.SearchDirectory, &schakelv1.SearchDirectoryRequest{Name: name})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range resp.GetEntries() {
		names = append(names, e.GetOrganization().GetName())
	}
	slices.Sort(names)
	return names, nil
}

func (d *demo) stepSearch(ctx context.Context) (string, error) {
	names, err := d.search(ctx, "jans*")
	if err != nil {
		return "", err
	}
	if strings.Join(names, ", ") != "Apotheek Janssens, Huisartsenpraktijk Jansen" {
		return "", fmt.Errorf("found %q, want the pharmacy and the GP practice", names)
	}
	return "found: " + strings.Join(names, "; ") + " (the hospital is not a match)", nil
}

func (d *demo) stepInsurer(ctx context.Context) (string, error) {
	fake, err := register.Init(ctx, filepath.Join(d.dir, "insurer-register"), "Zorgverzekeraar Voorbeeld", time.Now())
	if err != nil {
		return "", err
	}
	c, err := fake.Issue(ctx, vc.Organization{ID: fake.DID(), Name: "Zorgverzekeraar Voorbeeld", URA: "09999999", Type: "Z3", City: "Den Haag"}, 24*time.Hour, time.Now())
	if err != nil {
		return "", err
	}
	_, refused := call(ctx, d.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: append(fake.Documents(), string(c.JWT))})
	if connect.CodeOf(refused) != connect.CodePermissionDenied {
		return "", fmt.Errorf("submit: got %v, want permission denied", refused)
	}
	held, err := call(ctx, d.c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{Organization: fake.DID(), Type: string(vc.OrganizationCredential)})
	if err != nil {
		return "", err
	}
	if len(held.GetCredentials()) != 0 {
		return "", fmt.Errorf("the refused credential was stored")
	}
	names, err := d.search(ctx, "zorgverzekeraar*")
	if err != nil {
		return "", err
	}
	if len(names) != 0 {
		return "", fmt.Errorf("the insurer appears in the directory: %q", names)
	}
	return fmt.Sprintf("refused (%s): %s\nthe credential is not stored and the insurer is not in the directory", connect.CodeOf(refused), errMessage(refused)), nil
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func (d *demo) stepTamper(ctx context.Context) (string, error) {
	v, err := call(ctx, d.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.ocs["gp"]}})
	if err != nil {
		return "", err
	}
	// Change the registered name in the payload and keep the register's signature.
	parts := strings.Split(v.GetCredential().GetJwt(), ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	forged := strings.Replace(string(payload), "Huisartsenpraktijk Jansen", "Huisartsenpraktijk Janssen", 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]
	tv, err := call(ctx, d.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Jwt{Jwt: tampered}})
	if err != nil {
		return "", err
	}
	if tv.GetValid() {
		return "", fmt.Errorf("the tampered credential verified")
	}
	return "name changed to 'Huisartsenpraktijk Janssen', signature kept\nrefused: " + tv.GetReason(), nil
}

func (d *demo) stepRotate(ctx context.Context) (string, error) {
	list, err := call(ctx, d.c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{Organization: d.orgs["gp"], Type: string(vc.ServiceRegistrationCredential)})
	if err != nil {
		return "", err
	}
	if len(list.GetCredentials()) != 1 {
		return "", fmt.Errorf("%d service registrations, want 1", len(list.GetCredentials()))
	}
	before := list.GetCredentials()[0]
	// Key validity is in whole seconds; move past the second the registration was signed in.
	time.Sleep(time.Until(time.Unix(before.GetValidFromUnix()+1, 0)))
	rot, err := call(ctx, d.c.orgs.RotateKey, &schakelv1.RotateKeyRequest{Organization: d.orgs["gp"]})
	if err != nil {
		return "", err
	}
	v, err := call(ctx, d.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: before.GetId()}})
	if err != nil {
		return "", err
	}
	if !v.GetValid() {
		return "", fmt.Errorf("registration signed before the rotation no longer verifies: %s", v.GetReason())
	}
	return fmt.Sprintf("new signing key %s; the registration signed with the old key: valid", rot.GetNewKeyId()), nil
}

func (d *demo) stepRevoke(ctx context.Context) (string, error) {
	list, err := d.reg.Revoke(ctx, d.ocs["pharmacy"], time.Now())
	if err != nil {
		return "", err
	}
	if _, err := call(ctx, d.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: []string{string(list)}}); err != nil {
		return "", err
	}
	v, err := call(ctx, d.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.ocs["pharmacy"]}})
	if err != nil {
		return "", err
	}
	if v.GetValid() {
		return "", fmt.Errorf("the revoked credential still verifies")
	}
	names, err := d.search(ctx, "jans*")
	if err != nil {
		return "", err
	}
	if strings.Join(names, ", ") != "Huisartsenpraktijk Jansen" {
		return "", fmt.Errorf("directory after revocation: %q", names)
	}
	return "verify: " + v.GetReason() + "\n'jans*' now finds only: " + strings.Join(names, "; "), nil
}

func (d *demo) stepRestart(ctx context.Context) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.n.Close(sctx); err != nil {
		return "", err
	}
	d.n = nil
	if err := d.startNode(ctx); err != nil {
		return "", err
	}
	orgs, err := call(ctx, d.c.orgs.ListOrganizations, &schakelv1.ListOrganizationsRequest{})
	if err != nil {
		return "", err
	}
	creds, err := call(ctx, d.c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{})
	if err != nil {
		return "", err
	}
	revoked := 0
	for _, c := range creds.GetCredentials() {
		if c.GetStatus() == schakelv1.CredentialStatus_CREDENTIAL_STATUS_REVOKED {
			revoked++
		}
	}
	if len(orgs.GetOrganizations()) != 3 || len(creds.GetCredentials()) != 6 || revoked != 1 {
		return "", fmt.Errorf("after restart: %d organisations, %d credentials, %d revoked; want 3, 6, 1",
			len(orgs.GetOrganizations()), len(creds.GetCredentials()), revoked)
	}
	return fmt.Sprintf("%d organisations, %d credentials (%d revoked) read back from storage", len(orgs.GetOrganizations()), len(creds.GetCredentials()), revoked), nil
}

func (d *demo) stepRecord(ctx context.Context) (string, error) {
	var b strings.Builder
	for i, q := range []string{"MedicationStatement?patient=…&status=active", "MedicationDispense?patient=…&_count=20"} {
		resp, err := call(ctx, d.c.logs.RecordAccess, &schakelv1.RecordAccessRequest{
			Organization: d.orgs["gp"],
			Requester:    &schakelv1.Requester{Did: d.orgs["hospital"], Ura: "03456789"},
			Employee:     &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
			Purpose:      "TREAT",
			Bsn:          demoBSN,
			DataCategory: "medication",
			Query:        q,
			TokenId:      fmt.Sprintf("demo-token-%d", i+1),
		})
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "entry %d (the patient's entry %d): %s\n", resp.GetIndex(), resp.GetPatientSeq(), q)
	}
	b.WriteString("the log holds a keyed pseudonym of the BSN, never the BSN itself")
	return b.String(), nil
}

func (d *demo) stepPatientView(ctx context.Context) (string, error) {
	resp, err := call(ctx, d.c.logs.GetPatientView, &schakelv1.GetPatientViewRequest{Organization: d.orgs["gp"], Bsn: demoBSN})
	if err != nil {
		return "", err
	}
	if len(resp.GetEntries()) != 2 {
		return "", fmt.Errorf("the patient's view lists %d entries, want 2", len(resp.GetEntries()))
	}
	var b strings.Builder
	for _, e := range resp.GetEntries() {
		ent, err := verify.ParseEntry([]byte(e.GetEntry()))
		if err != nil {
			return "", err
		}
		who := ent.Requester.DID
		for _, o := range demoOrgs {
			if d.orgs[o.key] == who {
				who = o.name
			}
		}
		fmt.Fprintf(&b, "%d. %s: %s read %s (%s) — %s\n", e.GetPatientSeq(), ent.Time[:19], who, ent.DataCategory, ent.Purpose, ent.Outcome)
	}
	again, err := call(ctx, d.c.logs.GetPatientView, &schakelv1.GetPatientViewRequest{Organization: d.orgs["gp"], Bsn: demoBSN})
	if err != nil {
		return "", err
	}
	if len(again.GetEntries()) != 3 {
		return "", fmt.Errorf("the first view was not logged: %d entries", len(again.GetEntries()))
	}
	b.WriteString("asking again shows the first question as entry 3: reading the log is logged")
	return b.String(), nil
}

func (d *demo) exportDir(key string) string {
	base := d.exports
	if base == "" {
		base = filepath.Join(d.dir, "exports")
	}
	return filepath.Join(base, key)
}

func (d *demo) stepExport(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, o := range demoOrgs {
		dir := d.exportDir(o.key)
		if _, _, err := exportLog(ctx, d.c, d.orgs[o.key], dir); err != nil {
			return "", fmt.Errorf("export %s: %w", o.name, err)
		}
		opts := verify.Options{}
		if o.key == "gp" && d.witnessKey != "" {
			opts.Witnesses, opts.MinCosignatures = []string{d.witnessKey}, 1
		}
		rep, err := verify.VerifyExport(ctx, dir, opts)
		if err != nil {
			return "", fmt.Errorf("verify %s: %w", o.name, err)
		}
		fmt.Fprintf(&b, "%-28s %s: %d entries, %d checkpoints", o.name, dir, rep.Entries, rep.Checkpoints)
		if opts.MinCosignatures > 0 {
			fmt.Fprintf(&b, ", cosigned by the witness")
		}
		b.WriteString(": valid\n")
	}
	if d.exports != "" {
		b.WriteString("check it yourself: schakel log verify " + d.exportDir("gp"))
		if d.witnessKey != "" {
			b.WriteString(" --witness " + d.witnessKey + " --min-cosignatures 1")
		}
	} else {
		b.WriteString("run the demo with --out DIR to keep the exports and check them with schakel log verify")
	}
	return b.String(), nil
}

func (d *demo) stepTamperLog(ctx context.Context) (string, error) {
	src := d.exportDir("gp")
	dst := filepath.Join(d.dir, "tampered-gp-log")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return "", err
	}
	path := filepath.Join(dst, "entries.jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	forged := strings.Replace(string(raw), `"dataCategory":"medication"`, `"dataCategory":"allergies"`, 1)
	if forged == string(raw) {
		return "", fmt.Errorf("no entry to tamper with")
	}
	if err := os.WriteFile(path, []byte(forged), 0o644); err != nil {
		return "", err
	}
	_, err = verify.VerifyExport(ctx, dst, verify.Options{})
	var bad *verify.Error
	if !errors.As(err, &bad) {
		return "", fmt.Errorf("the tampered log was not refused: %v", err)
	}
	return "schakel log verify: " + err.Error(), nil
}
