package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/verify"
	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// The access story of the demo: consent requested online and processed, tokens granted and
// refused, introspection, revocation, receipts in both logs.

// demoEHR is the hospital EHR's DPoP key thumbprint, to which its tokens are bound.
func (d *demo) ehrKey() (string, error) {
	if d.jkt == "" {
		k, err := crypto.GenerateKey(crypto.P256, crypto.UseSign)
		if err != nil {
			return "", err
		}
		d.jkt = crypto.Thumbprint(k.Public())
	}
	return d.jkt, nil
}

func (d *demo) stepConsentOnline(ctx context.Context) (string, error) {
	portal, gp, hospital := d.nodes["portal"], d.nodes["gp"], d.nodes["hospital"]
	req, err := call(ctx, portal.c.acc.RequestConsent, &schakelv1.RequestConsentRequest{Organization: portal.org, Bsn: demoBSN,
		Consent: &schakelv1.Consent{Custodian: gp.org, Decision: "permit", GranteeOrg: hospital.org,
			DataCategories: []string{"medication"}, Purposes: []string{"TREAT"}, Grantors: []string{"self"},
			PatientBirthDate: "1980-04-12", Channel: "online", Assurance: "high"}})
	if err != nil {
		return "", err
	}
	var pending *schakelv1.Consent
	err = waitFor(ctx, 15*time.Second, func() (bool, error) {
		l, err := call(ctx, gp.c.acc.ListConsents, &schakelv1.ListConsentsRequest{Custodian: gp.org, Status: "pending"})
		if err != nil || len(l.GetConsents()) == 0 {
			return false, err
		}
		pending = l.GetConsents()[0]
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("the request did not reach the GP practice: %w", err)
	}
	if _, err := call(ctx, gp.c.acc.ProcessConsent, &schakelv1.ProcessConsentRequest{Custodian: gp.org, Id: pending.GetId(), Accept: true}); err != nil {
		return "", err
	}
	var notice *schakelv1.ConsentNotice
	err = waitFor(ctx, 15*time.Second, func() (bool, error) {
		l, err := call(ctx, portal.c.acc.ListNotices, &schakelv1.ListNoticesRequest{Organization: portal.org})
		if err != nil || len(l.GetNotices()) == 0 {
			return false, err
		}
		notice = l.GetNotices()[0]
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("the notice did not reach the portal: %w", err)
	}
	if notice.GetRequestId() != req.GetRequestId() || notice.GetOutcome() != "accepted" {
		return "", fmt.Errorf("notice %+v for request %s", notice, req.GetRequestId())
	}
	d.consentID = pending.GetId()
	return fmt.Sprintf("the portal sealed the request to the GP practice (signed, encrypted; the BSN inside): message %s\n"+
		"at the GP practice it waited as pending (%s), the desk accepted it: permit for the hospital, medication, TREAT\n"+
		"the portal got the notice back: %s", req.GetMessageId(), pending.GetId(), notice.GetOutcome()), nil
}

func (d *demo) requestToken(ctx context.Context, category, role string) (*schakelv1.RequestTokenResponse, error) {
	jkt, err := d.ehrKey()
	if err != nil {
		return nil, err
	}
	h := d.nodes["hospital"]
	return call(ctx, h.c.acc.RequestToken, &schakelv1.RequestTokenRequest{
		Organization: h.org, Custodian: d.nodes["gp"].org, Bsn: demoBSN, DataCategory: category, Purpose: "TREAT",
		Employee: &schakelv1.AccessEmployee{Uzi: "900012345", Role: role, Name: "dr. A. de Vries", Assurance: "high"},
		DpopJkt:  jkt,
	})
}

// introspectHTTP asks the GP practice's node as its FHIR server would: POST /oauth2/introspect.
func (d *demo) introspectHTTP(ctx context.Context, token string) (map[string]any, error) {
	u := "http://" + d.nodes["gp"].n.APIAddr().String() + "/oauth2/introspect"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("introspection: HTTP %d: %s", resp.StatusCode, body)
	}
	var out map[string]any
	return out, json.Unmarshal(body, &out)
}

func (d *demo) stepGrant(ctx context.Context) (string, error) {
	resp, err := d.requestToken(ctx, "medication", "01.015")
	if err != nil {
		return "", err
	}
	if resp.GetAccessToken() == "" {
		return "", fmt.Errorf("refused: %s %s", resp.GetError(), resp.GetErrorDescription())
	}
	in, err := d.introspectHTTP(ctx, resp.GetAccessToken())
	if err != nil {
		return "", err
	}
	if in["active"] != true {
		return "", fmt.Errorf("the granted token introspects %v", in)
	}
	d.tokenID, _ = in["jti"].(string)
	d.accessToken = resp.GetAccessToken()
	return fmt.Sprintf("granted by the GP practice's node from its own records: scope %q, %ds, bound to the EHR's DPoP key\n"+
		"decision logged as entry %d of the GP practice's log before the answer; the receipt is entry %d of the hospital's\n"+
		"POST /oauth2/introspect at the GP practice's node: active, sub %s…, token id %s",
		resp.GetScope(), resp.GetExpiresIn(), resp.GetCustodianLogIndex(), resp.GetRequesterLogIndex(),
		fmt.Sprint(in["sub"])[:24], d.tokenID), nil
}

func (d *demo) stepRefusals(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, r := range []struct{ what, category, role, want string }{
		{"the GP summary (not consented)", "gp-professional-summary", "01.015", "no-consent"},
		{"medication, asked by a company doctor (01.008)", "medication", "01.008", "role-never-allowed"},
	} {
		resp, err := d.requestToken(ctx, r.category, r.role)
		if err != nil {
			return "", err
		}
		if resp.GetAccessToken() != "" || resp.GetReason() != r.want {
			return "", fmt.Errorf("%s: token %t, reason %q, want refused %q", r.what, resp.GetAccessToken() != "", resp.GetReason(), r.want)
		}
		fmt.Fprintf(&b, "%s: refused, %s (%s); logged at the GP practice as entry %d\n", r.what, resp.GetError(), resp.GetErrorDescription(), resp.GetCustodianLogIndex())
	}
	b.WriteString("the insurer has no node in the network: it cannot even ask")
	return b.String(), nil
}

func (d *demo) stepRevokeConsent(ctx context.Context) (string, error) {
	gp := d.nodes["gp"]
	if _, err := call(ctx, gp.c.acc.RevokeConsent, &schakelv1.RevokeConsentRequest{Custodian: gp.org, Id: d.consentID, Reason: "revoked by the patient at the desk"}); err != nil {
		return "", err
	}
	in, err := d.introspectHTTP(ctx, d.accessToken)
	if err != nil {
		return "", err
	}
	if in["active"] != false {
		return "", fmt.Errorf("the token of the revoked consent introspects %v", in)
	}
	resp, err := d.requestToken(ctx, "medication", "01.015")
	if err != nil {
		return "", err
	}
	if resp.GetAccessToken() != "" {
		return "", fmt.Errorf("a token was granted after the revocation")
	}
	return fmt.Sprintf("the hospital's token introspects {\"active\":false} at once\nthe next request: refused, %s (%s)", resp.GetError(), resp.GetErrorDescription()), nil
}

// stepReconcile checks, through the two nodes' APIs only, that every receipt the hospital logged
// names the GP practice's entry with the same leaf hash and outcome.
func (d *demo) stepReconcile(ctx context.Context) (string, error) {
	gpEntries, err := d.entries(ctx, d.nodes["gp"])
	if err != nil {
		return "", err
	}
	hEntries, err := d.entries(ctx, d.nodes["hospital"])
	if err != nil {
		return "", err
	}
	n := 0
	for _, e := range hEntries {
		if e.Event != verify.EventAccessDecision || e.Action != "request" {
			continue
		}
		var origin, leaf, reqID string
		var index int
		if _, err := fmt.Sscanf(e.Query, "receipt: %s entry %d leaf %s request %s", &origin, &index, &leaf, &reqID); err != nil {
			return "", fmt.Errorf("receipt entry %q: %w", e.Query, err)
		}
		if index >= len(gpEntries) {
			return "", fmt.Errorf("a receipt names entry %d, the GP practice's log has %d", index, len(gpEntries))
		}
		raw, err := gpEntries[index].Marshal()
		if err != nil {
			return "", err
		}
		h := tlog.RecordHash(raw)
		if base64.StdEncoding.EncodeToString(h[:]) != leaf || gpEntries[index].Outcome != e.Outcome {
			return "", fmt.Errorf("the receipt for entry %d does not match the GP practice's entry", index)
		}
		n++
	}
	if n < 4 {
		return "", fmt.Errorf("%d receipts in the hospital's log, want at least 4", n)
	}
	return fmt.Sprintf("%d receipts in the hospital's log, each naming a GP practice's entry with the same leaf hash and outcome:\nneither side can drop a decision, granted or refused, without the other holding its signed evidence", n), nil
}

func (d *demo) entries(ctx context.Context, o *orgNode) ([]*verify.Entry, error) {
	resp, err := call(ctx, o.c.logs.ListEntries, &schakelv1.ListEntriesRequest{Organization: o.org})
	if err != nil {
		return nil, err
	}
	var out []*verify.Entry
	for _, raw := range resp.GetEntries() {
		e, err := verify.ParseEntry([]byte(raw))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}
