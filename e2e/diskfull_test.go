package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	schakelv1 "github.com/schakel-health/schakel/proto/schakel/v1"
	"github.com/schakel-health/schakel/proto/schakel/v1/schakelv1connect"
)

// diskSize is the size of the node's filesystem: the store's reserve of free space (64 MiB by
// default, 4 × badger's 16 MiB memtable) plus room for the node's data. badger's files are sparse
// (a 2 GiB value log, a 32 MiB memtable log), so they take only what is written.
const diskSize = "128m"

// TestDiskFull runs a node whose data directory is on a small tmpfs and fills the filesystem
// with a file next to the data directory while clients record accesses. Writes must then fail
// with a clear error the client sees (resource exhausted, naming the free space), the process
// must stay up and keep serving reads, nothing acknowledged may be lost and the log must verify.
// Once the file is deleted the node takes writes again without a restart. Filled again, the node
// stops on SIGTERM saying what it could not write, and refuses to start on the full filesystem,
// saying why; neither dies of a fault. With space back it starts, holds every acknowledged
// append and serves as before.
//
// It needs root (or CAP_SYS_ADMIN) to mount the tmpfs and skips otherwise.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary on a tmpfs")
	}
	if runtime.GOOS != "linux" {
		t.Skip("mounts a Linux tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+diskSize, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): %v: %s", err, strings.TrimSpace(string(out)))
	}
	// Registered after TempDir's removal and before the node's kill, so it runs between them.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	data, filler := filepath.Join(mnt, "node"), filepath.Join(mnt, "filler")
	schakel(t, 0, "init", "--data", data)
	addr := freePort(t)
	d := startNode(t, data, addr)
	node := "--node=" + d.url
	gp := schakel(t, 0, "org", "create", node, "--name", "Huisartsenpraktijk Jansen")
	logs := schakelv1connect.NewLogServiceClient(http.DefaultClient, d.url)
	acc := schakelv1connect.NewAccessServiceClient(http.DefaultClient, d.url)
	bsn := patientBSN(0)

	var (
		mu    sync.Mutex
		acked = map[int64]string{} // index → query of every acknowledged append
	)
	record := func(q string) error {
		resp, err := logs.RecordAccess(t.Context(), connect.NewRequest(&schakelv1.RecordAccessRequest{
			Organization: gp, Bsn: bsn, DataCategory: "medication", Purpose: "TREAT", Query: q}))
		if err == nil {
			mu.Lock()
			acked[resp.Msg.GetIndex()] = q
			mu.Unlock()
		}
		return err
	}
	recordConsent := func() error {
		_, err := acc.RecordConsent(t.Context(), connect.NewRequest(&schakelv1.RecordConsentRequest{Bsn: bsn, Consent: &schakelv1.Consent{
			Custodian: gp, Decision: "permit", GranteeAny: true, DataCategories: []string{"medication"},
			Purposes: []string{"TREAT"}, Grantors: []string{"self"}, Channel: "desk", Assurance: "high"}}))
		return err
	}
	// wantNoSpace checks that a write failed with the node's clear disk-full error.
	wantNoSpace := func(call string, err error) {
		t.Helper()
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "free disk space") ||
			!strings.Contains(err.Error(), "below the reserve") {
			t.Fatalf("%s on a full disk = %v, want resource_exhausted naming the free space and the reserve", call, err)
		}
	}

	// Eight clients record accesses while the filesystem fills up.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range errs {
		wg.Go(func() {
			for i := 0; ; i++ {
				if err := record(fmt.Sprintf("writer %d read %d", w, i)); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	fill(t, mnt, filler, 64<<10)
	wg.Wait()
	for w, err := range errs {
		wantNoSpace(fmt.Sprintf("writer %d's RecordAccess", w), err)
	}
	t.Logf("RecordAccess on a full disk: %v", errs[0])
	if len(acked) < 10 {
		t.Fatalf("only %d appends acknowledged before the disk was full", len(acked))
	}
	alive(t, d)
	wantNoSpace("RecordAccess", record("on a full disk"))
	wantNoSpace("RecordConsent", recordConsent())
	_, err := schakelv1connect.NewCredentialServiceClient(http.DefaultClient, d.url).IssueCredential(t.Context(), connect.NewRequest(&schakelv1.IssueCredentialRequest{
		Organization: gp, Subject: &schakelv1.IssueCredentialRequest_ServiceRegistration{ServiceRegistration: &schakelv1.ServiceRegistration{
			Endpoints: []*schakelv1.Endpoint{{Type: "fhir", Url: "https://jansen.example/fhir"}}, DataCategories: []string{"medication"}}}}))
	wantNoSpace("IssueCredential", err)
	// The CLI says so too.
	if out := schakel(t, 1, "log", "record", node, "--org", gp, "--bsn", bsn, "--category", "medication", "--query", "cli on a full disk"); !strings.Contains(out, "not enough free disk space") {
		t.Fatalf("log record on a full disk printed %q", out)
	}
	// Reads go on: the whole log, every acknowledged append in it.
	checkAcked(t, logs, gp, acked)
	alive(t, d)
	full := len(acked)

	// Space back: writes are taken again at once, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatalf("remove filler: %v", err)
	}
	if err := record("space is back"); err != nil {
		t.Fatalf("RecordAccess once space is back: %v", err)
	}
	if err := recordConsent(); err != nil {
		t.Fatalf("RecordConsent once space is back: %v", err)
	}
	exportVerify(t, node, gp)
	checkAcked(t, logs, gp, acked)

	// Full again, SIGTERM: the node stops, saying that its final checkpoint and its store's flush
	// could not be written (exit 1), and never dies of a fault.
	if err := record("before filling again"); err != nil {
		t.Fatalf("RecordAccess: %v", err)
	}
	fill(t, mnt, filler, 64<<10)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	err = d.cmd.Wait()
	stopped := d.logs.String()
	noFault(t, "stopping on a full disk", stopped)
	if err != nil && !strings.Contains(stopped, "not enough free disk space") {
		t.Fatalf("the node stopped on a full disk with %v and no word of the disk:\n%s", err, tail(stopped, 20))
	}
	t.Logf("SIGTERM on a full disk: %v: %s", d.cmd.ProcessState, lastLine(stopped))

	// Started on the full filesystem, the node refuses to start, saying why: opening its store
	// would flush what the stop left in badger's log.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "run", "--data", data, "--api-addr", addr, "--p2p-addr", "/ip4/127.0.0.1/tcp/0").CombinedOutput()
	noFault(t, "starting on a full disk", string(out))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "not enough free disk space") {
		t.Fatalf("schakel run on a full disk: %v, want exit 1 naming the disk:\n%s", err, tail(string(out), 20))
	}
	t.Logf("schakel run on a full disk: %s", lastLine(string(out)))

	// Space back: the node starts, every acknowledged append is there, the log verifies and
	// takes writes, also after a clean restart.
	if err := os.Remove(filler); err != nil {
		t.Fatalf("remove filler: %v", err)
	}
	d = startNode(t, data, addr)
	checkAcked(t, logs, gp, acked)
	exportVerify(t, node, gp)
	if err := record("space is back again"); err != nil {
		t.Fatalf("RecordAccess once space is back again: %v", err)
	}
	d.stop(t)
	d = startNode(t, data, addr)
	if err := record("after the restart"); err != nil {
		t.Fatalf("RecordAccess after the restart: %v", err)
	}
	checkAcked(t, logs, gp, acked)
	exportVerify(t, node, gp)
	t.Logf("%d appends acknowledged before the disk was full, %d in all, every one in a log that verifies", full, len(acked))
	d.stop(t)
}

// fill writes a file at path until the filesystem at mnt has at most leave bytes free.
func fill(t *testing.T, mnt, path string, leave int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("create filler: %v", err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatalf("statfs %s: %v", mnt, err)
		}
		free := int64(st.Bavail) * st.Bsize
		if free <= leave {
			return
		}
		n := min(int64(len(chunk)), free-leave)
		if _, err := f.Write(chunk[:n]); err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write filler: %v", err)
		}
	}
}

// alive fails unless the node's process runs and answers /readyz.
func alive(t *testing.T, d *daemon) {
	t.Helper()
	resp, err := http.Get(d.url + "/readyz")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK || d.cmd.ProcessState != nil {
		noFault(t, "a full disk", d.logs.String())
		t.Fatalf("the node is not serving on a full disk (%v, %v); its log:\n%s", err, resp, tail(d.logs.String(), 30))
	}
}

// noFault fails when a node's output shows it died of a fault, such as the SIGBUS of a write to
// a memory-mapped file the filesystem cannot back.
func noFault(t *testing.T, when, logs string) {
	t.Helper()
	for _, sign := range []string{"fatal error", "SIGBUS", "panic:"} {
		if i := strings.Index(logs, sign); i >= 0 {
			t.Fatalf("the node died on %s: %s", when, logs[i:min(len(logs), i+2000)])
		}
	}
}

// checkAcked fails unless every acknowledged append is in the log at its index.
func checkAcked(t *testing.T, logs schakelv1connect.LogServiceClient, org string, acked map[int64]string) {
	t.Helper()
	info, err := logs.GetLogInfo(t.Context(), connect.NewRequest(&schakelv1.GetLogInfoRequest{Organization: org}))
	if err != nil {
		t.Fatalf("GetLogInfo: %v", err)
	}
	got := map[int64]string{}
	for start := int64(0); start < info.Msg.GetSize(); {
		resp, err := logs.ListEntries(t.Context(), connect.NewRequest(&schakelv1.ListEntriesRequest{Organization: org, Start: start, Limit: 1000}))
		if err != nil {
			t.Fatalf("ListEntries(%d): %v", start, err)
		}
		if len(resp.Msg.GetEntries()) == 0 {
			t.Fatalf("ListEntries(%d) of a log of %d entries: none", start, info.Msg.GetSize())
		}
		for _, raw := range resp.Msg.GetEntries() {
			var e exportedEntry
			if err := json.Unmarshal([]byte(raw), &e); err != nil {
				t.Fatalf("entry: %v", err)
			}
			got[e.Index] = e.Query
		}
		start += int64(len(resp.Msg.GetEntries()))
	}
	for i, q := range acked {
		if got[i] != q {
			t.Fatalf("acknowledged append %d (%q) lost: the log holds %q there", i, q, got[i])
		}
	}
}

// exportVerify exports org's log and verifies it with the CLI.
func exportVerify(t *testing.T, node, org string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "export")
	schakel(t, 0, "log", "export", node, "--org", org, "--out", dir)
	schakel(t, 0, "log", "verify", dir)
}
