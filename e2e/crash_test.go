package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// TestKill9DuringAppends kills the node with SIGKILL while 8 clients record accesses, restarts it,
// and checks that every access whose recording was acknowledged is in the log, in a log that
// verifies and takes further appends.
func TestKill9DuringAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	data := filepath.Join(t.TempDir(), "node")
	schakel(t, 0, "init", "--data", data)
	addr := freePort(t)
	d := startNode(t, data, addr)
	gp := schakel(t, 0, "org", "create", "--node="+d.url, "--name", "Huisartsenpraktijk Jansen")
	logs := schakelv1connect.NewLogServiceClient(http.DefaultClient, d.url)

	type ack struct {
		index int64
		query string
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(t.Context())
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				q := fmt.Sprintf("writer %d read %d", w, i)
				resp, err := logs.RecordAccess(ctx, connect.NewRequest(&schakelv1.RecordAccessRequest{
					Organization: gp, Bsn: "111222333", DataCategory: "medication", Query: q,
				}))
				if err != nil {
					if i == 0 {
						t.Logf("writer %d: first RecordAccess: %v", w, err)
					}
					return // the node is gone
				}
				mu.Lock()
				acked = append(acked, ack{resp.Msg.GetIndex(), q})
				mu.Unlock()
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	d.cmd.Wait()
	cancel()
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d appends acknowledged before the kill; the test needs a burst", len(acked))
	}

	d = startNode(t, data, addr)
	node := "--node=" + d.url
	for _, a := range acked {
		resp, err := logs.ListEntries(t.Context(), connect.NewRequest(&schakelv1.ListEntriesRequest{Organization: gp, Start: a.index, Limit: 1}))
		if err != nil || len(resp.Msg.GetEntries()) != 1 {
			t.Fatalf("acknowledged entry %d lost after kill -9: %v", a.index, err)
		}
		if !strings.Contains(resp.Msg.GetEntries()[0], `"query":"`+a.query+`"`) {
			t.Fatalf("entry %d is %s, want the acknowledged %q", a.index, resp.Msg.GetEntries()[0], a.query)
		}
	}
	// Appends continue, and the whole log verifies.
	schakel(t, 0, "log", "record", node, "--org", gp, "--bsn", "111222333", "--category", "medication", "--query", "after restart")
	out := filepath.Join(t.TempDir(), "export")
	schakel(t, 0, "log", "export", node, "--org", gp, "--out", out)
	schakel(t, 0, "log", "verify", out)
	t.Logf("%d appends acknowledged before kill -9, all present after restart", len(acked))
	d.stop(t)
}
