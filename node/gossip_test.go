package node

import (
	"fmt"
	"testing"
	"time"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
)

// TestPublishedRightAfterAdmission publishes on each node of a star the moment the hub has
// admitted the others, before the gossip mesh has formed, with the periodic catch-up pushed out
// of the test's reach: flood publishing, the validator waiting out a pending admission and the
// catch-up that follows admission must still deliver every document to every node.
func TestPublishedRightAfterAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	ctx := t.Context()
	reg := newRegister(t)
	noSync := func(c *Config) { c.SyncInterval = time.Hour }
	var nodes []*netNode
	for _, name := range []string{"hub", "left", "right"} {
		n := startNetNode(t, reg, "", name, noSync)
		n.org = hostOrganization(t, n.Node, reg, name, true)
		nodes = append(nodes, n)
	}
	hub := nodes[0]
	link(t, nodes[1], hub)
	link(t, nodes[2], hub)
	eventually(t, 10*time.Second, "the hub admits both", func() bool { return admittedCount(hub) == 2 })
	for i, from := range nodes {
		resp, err := from.IssueCredential(ctx, &schakelv1.IssueCredentialRequest{
			Organization: from.org,
			Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
				Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://example.org/fhir"}}, DataCategories: []string{"medication"}, Purposes: []string{"TREAT"},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		id := resp.GetCredential().GetId()
		for j, to := range nodes {
			eventually(t, 10*time.Second, fmt.Sprintf("the document from node %d reaches node %d", i, j), func() bool {
				l, err := to.ListCredentials(ctx, &schakelv1.ListCredentialsRequest{Organization: from.org})
				if err != nil {
					return false
				}
				for _, c := range l.GetCredentials() {
					if c.GetId() == id {
						return true
					}
				}
				return false
			})
		}
	}
}
