package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// client holds the internal API clients of one node.
type client struct {
	node schakelv1connect.NodeServiceClient
	orgs schakelv1connect.OrganizationServiceClient
	docs schakelv1connect.DocumentServiceClient
	cred schakelv1connect.CredentialServiceClient
	logs schakelv1connect.LogServiceClient
	acc  schakelv1connect.AccessServiceClient
}

const defaultNodeURL = "http://127.0.0.1:7631"

// addClientFlags adds --node and --json to a command that talks to a running node.
func addClientFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("node", "", "node internal API URL (env SCHAKEL_NODE, default "+defaultNodeURL+"); the token comes from SCHAKEL_API_TOKEN")
	cmd.PersistentFlags().Bool("json", false, "print the API's answer as JSON")
}

// bearer adds the API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func newClient(cmd *cobra.Command) *client {
	url := flagOrEnv(cmd.Flags(), "node", "SCHAKEL_NODE")
	if url == "" {
		url = defaultNodeURL
	}
	return dial(url)
}

func dial(url string) *client {
	url = strings.TrimRight(url, "/")
	var rt http.RoundTripper = http.DefaultTransport
	if tok, ok := envLookup("SCHAKEL_API_TOKEN"); ok && tok != "" {
		rt = bearer{token: tok, next: rt}
	}
	hc := &http.Client{Transport: rt, Timeout: 30 * time.Second}
	return &client{
		node: schakelv1connect.NewNodeServiceClient(hc, url),
		orgs: schakelv1connect.NewOrganizationServiceClient(hc, url),
		docs: schakelv1connect.NewDocumentServiceClient(hc, url),
		cred: schakelv1connect.NewCredentialServiceClient(hc, url),
		logs: schakelv1connect.NewLogServiceClient(hc, url),
		acc:  schakelv1connect.NewAccessServiceClient(hc, url),
	}
}

// call runs one RPC and returns its message.
func call[Req, Resp any](ctx context.Context, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error), req *Req) (*Resp, error) {
	resp, err := fn(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// printJSON writes a message as indented JSON when --json is set and reports whether it did.
func printJSON(cmd *cobra.Command, m proto.Message) bool {
	if on, _ := cmd.Flags().GetBool("json"); !on {
		return false
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return true
	}
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return true
}

// readArgOrFile returns s, or the contents of file s when s starts with "@" ("-" reads stdin).
func readArgOrFile(cmd *cobra.Command, s string) (string, error) {
	if !strings.HasPrefix(s, "@") {
		return s, nil
	}
	path := s[1:]
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		b, err := readFileLimited(path, 1<<20)
		return strings.TrimSpace(string(b)), err
	}
	// One byte more than the limit is read, so that a larger input is refused rather than cut
	// short and sent.
	b, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err == nil && len(b) > 1<<20 {
		err = fmt.Errorf("standard input larger than %d bytes", 1<<20)
	}
	return strings.TrimSpace(string(b)), err
}
