package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/grpcreflect"
)

var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "schakel-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "schakel")
		build := exec.Command("go", "build", "-o", binary, "../cmd/schakel")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build schakel:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// schakel runs the binary and returns its stdout; it fails the test unless the exit code is want.
func schakel(t *testing.T, want int, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("schakel %s: %v", strings.Join(args, " "), err)
	}
	if code != want {
		t.Fatalf("schakel %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String() + errb.String())
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

type daemon struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
}

// startNode runs `schakel run` and waits until /readyz answers 200.
func startNode(t *testing.T, data, addr string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"run", "--data", data, "--api-addr", addr, "--p2p-addr", "/ip4/127.0.0.1/tcp/0"}, extra...)
	cmd := exec.Command(binary, args...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start schakel run: %v", err)
	}
	d := &daemon{cmd: cmd, url: "http://" + addr, logs: logs}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(d.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node did not become ready; logs:\n%s", logs.String())
	return nil
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("schakel run exited with %v; logs:\n%s", err, d.logs.String())
	}
}

func TestCLIFlowSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	reg, data := filepath.Join(dir, "register"), filepath.Join(dir, "node")
	regDID := schakel(t, 0, "register", "init", "--dir", reg, "--name", "Register Zorgaanbieders")
	if !strings.HasPrefix(regDID, "did:schakel:") {
		t.Fatalf("register init printed %q", regDID)
	}
	schakel(t, 0, "init", "--data", data)
	schakel(t, 1, "init", "--data", data) // refuses to initialise twice
	addr := freePort(t)
	d := startNode(t, data, addr, "--trusted-register", regDID)
	node := "--node=" + d.url

	gp := schakel(t, 0, "org", "create", node, "--name", "Huisartsenpraktijk Jansen")
	ph := schakel(t, 0, "org", "create", node, "--name", "Apotheek Janssens")
	if !strings.HasPrefix(gp, "did:schakel:") || !strings.HasPrefix(ph, "did:schakel:") || gp == ph {
		t.Fatalf("org create printed %q and %q", gp, ph)
	}
	ocGP := lastLine(schakel(t, 0, "register", "issue", "--dir", reg, node, "--subject", gp, "--name", "Huisartsenpraktijk Jansen", "--ura", "01234567", "--type", "Z3", "--city", "Utrecht"))
	ocPH := lastLine(schakel(t, 0, "register", "issue", "--dir", reg, node, "--subject", ph, "--name", "Apotheek Janssens", "--ura", "02345678", "--type", "J8", "--city", "Utrecht"))
	src := schakel(t, 0, "credential", "issue", node, "--org", gp, "--endpoint", "fhir=https://jansen.example/fhir", "--category", "medication", "--purpose", "TREAT")

	found := schakel(t, 0, "credential", "search", node, "--name", "jans*")
	if !strings.Contains(found, "Huisartsenpraktijk Jansen") || !strings.Contains(found, "Apotheek Janssens") || !strings.Contains(found, "fhir=https://jansen.example/fhir") {
		t.Fatalf("search jans* = %q", found)
	}
	schakel(t, 0, "credential", "verify", node, "--id", ocGP)

	// A tampered credential and an unknown id are refused with clear errors.
	jwtFile := filepath.Join(dir, "oc.jwt")
	schakel(t, 0, "register", "issue", "--dir", reg, "--subject", ph, "--name", "Apotheek Janssens", "--ura", "02345678", "--type", "J8", "--city", "Utrecht", "--out", jwtFile)
	raw, err := os.ReadFile(jwtFile)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	parts := strings.Split(strings.TrimSpace(string(raw)), ".")
	p := []byte(parts[1])
	p[len(p)/2] ^= 1
	out := schakel(t, 1, "credential", "verify", node, parts[0]+"."+string(p)+"."+parts[2])
	if !strings.Contains(out, "NOT valid") {
		t.Fatalf("verify(tampered) = %q", out)
	}
	if out := schakel(t, 1, "credential", "verify", node, "--id", "urn:uuid:00000000-0000-4000-8000-000000000000"); !strings.Contains(out, "not found") {
		t.Fatalf("verify(unknown id) = %q", out)
	}

	// Revocation by the register and by a hosted issuer.
	schakel(t, 0, "register", "revoke", "--dir", reg, node, "--id", ocPH)
	if out := schakel(t, 1, "credential", "verify", node, "--id", ocPH); !strings.Contains(out, "revoked") {
		t.Fatalf("verify(revoked) = %q", out)
	}
	schakel(t, 0, "credential", "revoke", node, "--org", gp, "--id", src)
	if out := schakel(t, 1, "credential", "verify", node, "--id", src); !strings.Contains(out, "revoked") {
		t.Fatalf("verify(revoked registration) = %q", out)
	}
	schakel(t, 0, "org", "rotate-key", node, "--org", gp)

	// Reflection lists the services (what grpcurl uses).
	checkReflection(t, d.url)

	d.stop(t)
	d = startNode(t, data, addr, "--trusted-register", regDID)
	orgs := schakel(t, 0, "org", "list", node)
	if !strings.Contains(orgs, gp) || !strings.Contains(orgs, ph) {
		t.Fatalf("org list after restart = %q", orgs)
	}
	creds := schakel(t, 0, "credential", "list", node)
	for _, want := range []string{ocGP + "\tOrganizationCredential\tVALID", ocPH + "\tOrganizationCredential\tREVOKED", src + "\tServiceRegistrationCredential\tREVOKED"} {
		if !strings.Contains(creds, want) {
			t.Fatalf("credential list after restart lacks %q:\n%s", want, creds)
		}
	}
	found = schakel(t, 0, "credential", "search", node, "--name", "jans*")
	if !strings.Contains(found, "Huisartsenpraktijk Jansen") || strings.Contains(found, "Apotheek Janssens") {
		t.Fatalf("search after restart = %q", found)
	}
	d.stop(t)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "urn:uuid:") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

func checkReflection(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	client := grpcreflect.NewClient(h2cClient(), url)
	stream := client.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	var got []string
	for _, n := range names {
		got = append(got, string(n))
	}
	for _, want := range []string{"schakel.v1.NodeService", "schakel.v1.OrganizationService", "schakel.v1.DocumentService", "schakel.v1.CredentialService"} {
		if !slices.Contains(got, want) {
			t.Fatalf("reflection lists %v, missing %s", got, want)
		}
	}
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func TestInsecureAPIBindRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	data := filepath.Join(t.TempDir(), "node")
	schakel(t, 0, "init", "--data", data)
	out := schakel(t, 2, "run", "--data", data, "--api-addr", "0.0.0.0:0")
	if !strings.Contains(out, "not loopback") {
		t.Fatalf("run on 0.0.0.0 without a token: %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("api_adr: 127.0.0.1:1\n"), 0o600)
	if out := schakel(t, 2, "run", "--data", data, "--config", bad); !strings.Contains(out, "api_adr") {
		t.Fatalf("run with a misspelt config key: %q", out)
	}
}
