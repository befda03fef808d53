package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
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
		Short: "Start a network of nodes on loopback and play the seed scenario, narrating each step",
		Long: `demo needs no set-up: in a temporary directory it creates a register and one node per
organisation (a GP practice, a pharmacy, a hospital and a patient portal) on loopback. The register
admits them, the nodes admit each other, registrations spread by gossip, an insurer is refused at
the door, a key is rotated, a credential revoked, a node restarts and catches up, data accesses are
logged and shown to the patient, peers witness the GP practice's log and an auditor verifies it.
It exits 0 only when every step held.`,
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
			keep, _ := cmd.Flags().GetBool("keep")
			d := &demo{out: cmd.OutOrStdout(), dir: dir, exports: exports, keep: keep}
			if err := d.play(cmd.Context()); err != nil {
				return &exitError{1, err}
			}
			return nil
		},
	}
	cmd.Flags().String("data", "", "keep every node's data directory under this one, as DIR/<gp|pharmacy|hospital|portal|insurer|register> (default: a temporary directory)")
	cmd.Flags().String("out", "", "write every organisation's access-log export under this directory, for schakel log verify")
	cmd.Flags().Bool("keep", false, "leave the network running after the story (until Ctrl-C) and print how to reach each node")
	return cmd
}

// demo plays the scenario against real nodes through their internal APIs.
type demo struct {
	out     io.Writer
	dir     string
	exports string // where access-log exports go; under dir when empty
	keep    bool   // leave the network running after the story, until ctx ends
	step    int

	reg   *register.Register
	nodes map[string]*orgNode // by the key of demoOrgs, also the node's data directory name
	// witnessKeys are the cosignature keys of the nodes that witnessed the GP practice's log.
	witnessKeys []string
	// The access story: the hospital EHR's DPoP key thumbprint, the consent, the token.
	jkt, consentID, accessToken, tokenID string
}

const demoSteps = 21

// demoBSN is a test BSN that passes the 11-proof.
const demoBSN = "111222333"

// demoOrg is one organisation of the demo, hosted on its own node.
type demoOrg struct {
	key, name, ura, typ, city, category string
}

var demoOrgs = []demoOrg{
	{"gp", "Huisartsenpraktijk Jansen", "01234567", "Z3", "Utrecht", "gp-professional-summary"},
	{"pharmacy", "Apotheek Janssens", "02345678", "J8", "Utrecht", "medication"},
	{"hospital", "Stadsziekenhuis Amersfoort", "03456789", "V6", "Amersfoort", "discharge-summary"},
	{"portal", "Mijn Gezondheidsportaal", "04567890", "P1", "Amsterdam", ""},
}

// name returns the organisation name a DID stands for in the demo, or the DID.
func (d *demo) name(did string) string {
	for _, o := range demoOrgs {
		if n := d.nodes[o.key]; n != nil && n.org == did {
			return o.name
		}
	}
	return did
}

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

func (d *demo) play(ctx context.Context) error {
	d.nodes = map[string]*orgNode{}
	defer d.closeAll()
	fmt.Fprintf(d.out, "schakel %s demo — data in %s\n\n", node.Version, d.dir)
	steps := []struct {
		title string
		fn    func(context.Context) (string, error)
	}{
		{"A register (the trust anchor that admits care organisations) creates its key and DID", d.stepRegister},
		{"Four nodes start on loopback, one per organisation, each creating its organisation's DID and keys", d.stepNodes},
		{"The register admits the organisations: each node verifies and stores its organisation credential", d.stepAdmit},
		{"The nodes connect and admit each other; what each holds spreads by set reconciliation", d.stepConnect},
		{"The care organisations publish their service registrations; gossip carries them to every node", d.stepRegistrations},
		{"Directory search for 'jans*' at the hospital's node (case- and accent-insensitive, from an index)", d.stepSearch},
		{"An insurer's node, credentialed only by its own 'register', tries to join: refused at the door", d.stepInsurer},
		{"A tampered credential (the GP's name changed, the register's signature kept) is refused", d.stepTamper},
		{"The GP practice rotates its key: what it signed before still verifies, on every node", d.stepRotate},
		{"The register revokes the pharmacy's credential: every node's verification and directory refuse it", d.stepRevoke},
		{"The hospital's node is down while the GP practice publishes; it restarts and catches up", d.stepRestart},
		{"The patient asks for consent online at the portal; the GP practice processes it and the portal is told", d.stepConsentOnline},
		{"The hospital's EHR asks for the patient's medication at the GP practice: a token, granted and introspected", d.stepGrant},
		{"The hospital reads the medication with that token; the GP's node logs each access", d.stepRecord},
		{"Refused: the GP summary (not consented) and a company doctor (never, whatever the consent)", d.stepRefusals},
		{"The patient revokes the consent: effective at once", d.stepRevokeConsent},
		{"The patient asks the GP practice who looked at their data, refusals included (the question is logged too)", d.stepPatientView},
		{"The two logs reconcile: the hospital holds the GP practice's signed receipt of every decision", d.stepReconcile},
		{"The hospital's and the portal's nodes witness the GP practice's log and cosign its checkpoint", d.stepWitness},
		{"An auditor exports every organisation's access log and verifies it offline, cosignatures included", d.stepExport},
		{"A tampered copy of the log (one entry's data category changed) is caught at that entry", d.stepTamperLog},
	}
	if len(steps) != demoSteps {
		return fmt.Errorf("the demo has %d steps, its counter says %d", len(steps), demoSteps)
	}
	for _, s := range steps {
		if err := d.check(s.title, s.fn, ctx); err != nil {
			return err
		}
	}
	fmt.Fprintf(d.out, "\nEvery step held.\n")
	if d.keep {
		d.printNetwork()
		<-ctx.Done()
		fmt.Fprintln(d.out, "stopping the nodes")
	}
	return nil
}

// printNetwork tells how to reach each node of the demo network left running (--keep).
func (d *demo) printNetwork() {
	fmt.Fprintf(d.out, "\nThe network keeps running until Ctrl-C (data in %s):\n", d.dir)
	for _, o := range demoOrgs {
		n := d.nodes[o.key]
		if n == nil || n.n == nil {
			continue
		}
		fmt.Fprintf(d.out, "  %-27s API http://%s  DID %s\n", o.name, n.n.APIAddr(), n.org)
	}
	gp, h := d.nodes["gp"], d.nodes["hospital"]
	fmt.Fprintf(d.out, "Try, from another terminal:\n")
	fmt.Fprintf(d.out, "  schakel peers --node http://%s\n", gp.n.APIAddr())
	fmt.Fprintf(d.out, "  schakel credential search --name 'jans*' --node http://%s\n", h.n.APIAddr())
	fmt.Fprintf(d.out, "  schakel log patient --org %s --bsn %s --node http://%s\n", gp.org, demoBSN, gp.n.APIAddr())
	fmt.Fprintf(d.out, "  schakel consent record --custodian %s --bsn %s --grantee-org %s --category medication --node http://%s\n", gp.org, demoBSN, h.org, gp.n.APIAddr())
	fmt.Fprintf(d.out, "  schakel token request --org %s --custodian %s --bsn %s --category medication --uzi 900012345 --role 01.015 --name 'dr. A. de Vries' --dpop-jkt %s --node http://%s\n",
		h.org, gp.org, demoBSN, d.jkt, h.n.APIAddr())
}

func (d *demo) stepRegister(ctx context.Context) (string, error) {
	r, err := register.Init(ctx, filepath.Join(d.dir, "register"), "Register Zorgaanbieders (demo)", time.Now())
	if err != nil {
		return "", err
	}
	d.reg = r
	return "register DID " + r.DID() + "\nits keys and records in " + filepath.Join(d.dir, "register"), nil
}

func (d *demo) stepNodes(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, o := range demoOrgs {
		n, err := d.startOrg(ctx, o)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%-9s API http://%-15s peer %s…\n          %s %s\n", o.key, n.n.APIAddr(), n.n.PeerID().String()[:16], o.name, n.org)
	}
	return b.String(), nil
}

// startOrg starts o's node, trusting the demo's register, and creates o on it.
func (d *demo) startOrg(ctx context.Context, o demoOrg) (*orgNode, error) {
	n, err := d.startNode(ctx, o.key, []string{d.reg.DID()})
	if err != nil {
		return nil, fmt.Errorf("%s's node: %w", o.name, err)
	}
	resp, err := call(ctx, n.c.orgs.CreateOrganization, &schakelv1.CreateOrganizationRequest{Name: o.name})
	if err != nil {
		return nil, err
	}
	n.org = resp.GetOrganization().GetDid()
	return n, nil
}

func (d *demo) stepAdmit(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, o := range demoOrgs {
		if err := d.admit(ctx, o); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%-28s URA %s type %s (%s): valid\n", o.name, o.ura, o.typ, vc.OrganizationTypes[o.typ])
	}
	return b.String(), nil
}

// admit has the register issue o's organisation credential and o's node store and verify it.
func (d *demo) admit(ctx context.Context, o demoOrg) error {
	n := d.nodes[o.key]
	c, err := d.reg.Issue(ctx, vc.Organization{ID: n.org, Name: o.name, URA: o.ura, Type: o.typ, City: o.city}, 365*24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	n.oc = c.ID
	docs := append(d.reg.Documents(), string(c.JWT))
	if _, err := call(ctx, n.c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: docs}); err != nil {
		return err
	}
	v, err := call(ctx, n.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: n.oc}})
	if err != nil {
		return err
	}
	if !v.GetValid() {
		return fmt.Errorf("%s's credential does not verify: %s", o.name, v.GetReason())
	}
	return nil
}

func (d *demo) stepRegistrations(ctx context.Context) (string, error) {
	var b strings.Builder
	var ids []string
	start := time.Now()
	for _, o := range demoOrgs {
		if o.category == "" {
			continue // the portal offers no data
		}
		url := "https://" + strings.ToLower(strings.ReplaceAll(o.name, " ", "-")) + ".example/fhir"
		id, err := d.registration(ctx, d.nodes[o.key].c, d.nodes[o.key].org, url, o.category)
		if err != nil {
			return "", err
		}
		ids = append(ids, id)
		fmt.Fprintf(&b, "%-28s fhir %s offers %s\n", o.name, url, o.category)
	}
	if err := d.everywhere(ctx, ids...); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "every node holds all %d registrations %s after the first was published", len(ids), time.Since(start).Round(time.Millisecond))
	return b.String(), nil
}

func (d *demo) search(ctx context.Context, c *client, name string) ([]string, error) {
	resp, err := call(ctx, c.cred.SearchDirectory, &schakelv1.SearchDirectoryRequest{Name: name})
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
	names, err := d.search(ctx, d.nodes["hospital"].c, "jans*")
	if err != nil {
		return "", err
	}
	if strings.Join(names, ", ") != "Apotheek Janssens, Huisartsenpraktijk Jansen" {
		return "", fmt.Errorf("found %q, want the pharmacy and the GP practice", names)
	}
	return "found: " + strings.Join(names, "; ") + " (the hospital is not a match)\nboth entries came to the hospital's node over the network", nil
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

func (d *demo) stepTamper(ctx context.Context) (string, error) {
	c := d.nodes["hospital"].c
	v, err := call(ctx, c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.nodes["gp"].oc}})
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
	tv, err := call(ctx, c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Jwt{Jwt: tampered}})
	if err != nil {
		return "", err
	}
	if tv.GetValid() {
		return "", fmt.Errorf("the tampered credential verified")
	}
	return "name changed to 'Huisartsenpraktijk Janssen', signature kept\nrefused: " + tv.GetReason(), nil
}

func (d *demo) stepRotate(ctx context.Context) (string, error) {
	gp := d.nodes["gp"]
	list, err := call(ctx, gp.c.cred.ListCredentials, &schakelv1.ListCredentialsRequest{Organization: gp.org, Type: string(vc.ServiceRegistrationCredential)})
	if err != nil {
		return "", err
	}
	if len(list.GetCredentials()) != 1 {
		return "", fmt.Errorf("%d service registrations, want 1", len(list.GetCredentials()))
	}
	before := list.GetCredentials()[0]
	// Key validity is in whole seconds; move past the second the registration was signed in.
	time.Sleep(time.Until(time.Unix(before.GetValidFromUnix()+1, 0)))
	rot, err := call(ctx, gp.c.orgs.RotateKey, &schakelv1.RotateKeyRequest{Organization: gp.org})
	if err != nil {
		return "", err
	}
	// The key event travels by gossip; each node then resolves the new key and keeps the old one's history.
	err = d.onEvery(ctx, 10*time.Second, func(n *orgNode) (bool, error) {
		r, err := call(ctx, n.c.orgs.ResolveDID, &schakelv1.ResolveDIDRequest{Did: gp.org})
		if err != nil || len(r.GetKeyEvents()) < 2 {
			return false, nil
		}
		v, err := call(ctx, n.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: before.GetId()}})
		if err != nil {
			return false, err
		}
		if !v.GetValid() {
			return false, fmt.Errorf("at %s's node the registration signed before the rotation no longer verifies: %s", n.key, v.GetReason())
		}
		return true, nil
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("new signing key %s; every node has the key event\nthe registration signed with the old key: valid everywhere", rot.GetNewKeyId()), nil
}

func (d *demo) stepRevoke(ctx context.Context) (string, error) {
	list, err := d.reg.Revoke(ctx, d.nodes["pharmacy"].oc, time.Now())
	if err != nil {
		return "", err
	}
	// The register hands its new status list to one node; gossip does the rest.
	if _, err := call(ctx, d.nodes["gp"].c.docs.SubmitDocuments, &schakelv1.SubmitDocumentsRequest{Documents: []string{string(list)}}); err != nil {
		return "", err
	}
	start := time.Now()
	var reason string
	err = d.onEvery(ctx, 10*time.Second, func(n *orgNode) (bool, error) {
		v, err := call(ctx, n.c.cred.VerifyCredential, &schakelv1.VerifyCredentialRequest{Credential: &schakelv1.VerifyCredentialRequest_Id{Id: d.nodes["pharmacy"].oc}})
		if err != nil {
			return false, err
		}
		reason = v.GetReason()
		return !v.GetValid(), nil
	})
	if err != nil {
		return "", fmt.Errorf("the revocation did not reach every node: %w", err)
	}
	names, err := d.search(ctx, d.nodes["hospital"].c, "jans*")
	if err != nil {
		return "", err
	}
	if strings.Join(names, ", ") != "Huisartsenpraktijk Jansen" {
		return "", fmt.Errorf("the hospital's directory after revocation: %q", names)
	}
	return fmt.Sprintf("the new status list reached every node in %s; verify: %s\n'jans*' at the hospital's node now finds only: %s",
		time.Since(start).Round(time.Millisecond), reason, strings.Join(names, "; ")), nil
}

func (d *demo) stepRecord(ctx context.Context) (string, error) {
	gp, hospital := d.nodes["gp"], d.nodes["hospital"]
	var b strings.Builder
	for _, q := range []string{"MedicationStatement?patient=…&status=active", "MedicationDispense?patient=…&_count=20"} {
		resp, err := call(ctx, gp.c.logs.RecordAccess, &schakelv1.RecordAccessRequest{
			Organization: gp.org,
			Requester:    &schakelv1.Requester{Did: hospital.org, Ura: "03456789"},
			Employee:     &schakelv1.Employee{Uzi: "900012345", Role: "01.015"},
			Purpose:      "TREAT",
			Bsn:          demoBSN,
			DataCategory: "medication",
			Query:        q,
			TokenId:      d.tokenID,
		})
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "entry %d (the patient's entry %d): %s\n", resp.GetIndex(), resp.GetPatientSeq(), q)
	}
	b.WriteString("each names the token it was read under; the data went from the GP's FHIR server to the hospital directly,\n")
	b.WriteString("never through the network; the log holds a keyed pseudonym of the BSN, never the BSN itself")
	return b.String(), nil
}

func (d *demo) stepPatientView(ctx context.Context) (string, error) {
	gp := d.nodes["gp"]
	resp, err := call(ctx, gp.c.logs.GetPatientView, &schakelv1.GetPatientViewRequest{Organization: gp.org, Bsn: demoBSN})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	refused := 0
	for _, e := range resp.GetEntries() {
		ent, err := verify.ParseEntry([]byte(e.GetEntry()))
		if err != nil {
			return "", err
		}
		who := ""
		if ent.Requester != nil {
			who = d.name(ent.Requester.DID)
		}
		var what string
		switch ent.Event {
		case verify.EventConsentChange:
			what = "consent " + ent.Action
			if who != "" {
				what += " (via " + who + ")"
			}
		case verify.EventAccessDecision:
			what = fmt.Sprintf("%s asked for %s (%s)", who, ent.DataCategory, ent.Purpose)
		case verify.EventDataAccess:
			what = fmt.Sprintf("%s read %s", who, ent.DataCategory)
		default:
			what = ent.Event
		}
		outcome := ent.Outcome
		if ent.Outcome == verify.OutcomeRefused {
			refused++
			outcome = "unsuccessful: " + ent.Reason
		}
		fmt.Fprintf(&b, "%2d. %s %s — %s\n", e.GetPatientSeq(), ent.Time[11:19], what, outcome)
	}
	if refused < 3 {
		return "", fmt.Errorf("the patient's view shows %d refused requests, want at least 3", refused)
	}
	again, err := call(ctx, gp.c.logs.GetPatientView, &schakelv1.GetPatientViewRequest{Organization: gp.org, Bsn: demoBSN})
	if err != nil {
		return "", err
	}
	if len(again.GetEntries()) != len(resp.GetEntries())+1 {
		return "", fmt.Errorf("the first view was not logged: %d entries, then %d", len(resp.GetEntries()), len(again.GetEntries()))
	}
	if n := len(resp.GetConsents()); n != 0 {
		return "", fmt.Errorf("the patient's view lists %d consents in force after the revocation", n)
	}
	b.WriteString("consents in force: none (revoked)\n")
	fmt.Fprintf(&b, "asking again shows the first question as entry %d: reading the log is logged", len(again.GetEntries()))
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
		n := d.nodes[o.key]
		dir := d.exportDir(o.key)
		if _, _, err := exportLog(ctx, n.c, n.org, dir); err != nil {
			return "", fmt.Errorf("export %s: %w", o.name, err)
		}
		opts := verify.Options{}
		if o.key == "gp" {
			opts.Witnesses, opts.MinCosignatures = d.witnessKeys, len(d.witnessKeys)
		}
		rep, err := verify.VerifyExport(ctx, dir, opts)
		if err != nil {
			return "", fmt.Errorf("verify %s: %w", o.name, err)
		}
		fmt.Fprintf(&b, "%-28s %d entries, %d checkpoints", o.name, rep.Entries, rep.Checkpoints)
		if opts.MinCosignatures > 0 {
			fmt.Fprintf(&b, ", cosigned by %d witnesses", opts.MinCosignatures)
		}
		b.WriteString(": valid\n")
	}
	if d.exports != "" {
		b.WriteString("check it yourself: schakel log verify " + d.exportDir("gp"))
		for _, k := range d.witnessKeys {
			b.WriteString(" --witness " + k)
		}
		fmt.Fprintf(&b, " --min-cosignatures %d", len(d.witnessKeys))
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
