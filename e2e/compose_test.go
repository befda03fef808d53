//go:build compose

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The compose suite runs the repository's docker-compose.yml: four organisations' nodes in
// containers on a private network. It needs a Docker engine and docker-compose (or the compose
// plugin) and runs only with the build tag:
//
//	go test -tags compose ./e2e/ -run TestCompose -v -timeout 20m

const (
	composeProject = "schakele2e"
	composeToken   = "schakel-e2e-token"
	testBSN        = "111222333"
	// dpopJKT stands for the EHR's DPoP key thumbprint (RFC 7638: base64url of a SHA-256).
	dpopJKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
)

// composeAPI are the nodes' published internal APIs, as docker-compose.yml publishes them.
var composeAPI = map[string]string{
	"gp": "http://127.0.0.1:17631", "pharmacy": "http://127.0.0.1:27631",
	"hospital": "http://127.0.0.1:37631", "portal": "http://127.0.0.1:47631",
}

// composeCmd returns docker-compose (v1) or `docker compose` (v2) with the project's arguments.
func composeCmd(args ...string) *exec.Cmd {
	base := []string{"-p", composeProject, "-f", "../docker-compose.yml"}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return exec.Command("docker-compose", append(base, args...)...)
	}
	return exec.Command("docker", append(append([]string{"compose"}, base...), args...)...)
}

func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "SCHAKEL_API_TOKEN="+composeToken)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}

// composeUp builds the static binary and the image, starts the network and waits until every
// node is healthy and admitted by the three others. It returns each node's organisation DID.
func composeUp(t *testing.T) map[string]string {
	t.Helper()
	build := exec.Command("go", "build", "-trimpath", "-o", "../build/schakel", "../cmd/schakel")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	run(t, build)
	run(t, exec.Command("docker", "build", "-q", "-t", "schakel:local", ".."))
	composeCmd("down", "-v").Run()
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := composeCmd("logs", "--tail", "60").CombinedOutput()
			t.Logf("compose logs:\n%s", out)
		}
		composeCmd("down", "-v").Run()
	})
	cmd := composeCmd("up", "-d")
	cmd.Env = append(os.Environ(), "SCHAKEL_API_TOKEN="+composeToken)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	t.Setenv("SCHAKEL_API_TOKEN", composeToken)
	dids := map[string]string{}
	for key := range composeAPI {
		waitHealthy(t, key)
		var list struct {
			Organizations []struct{ Did string } `json:"organizations"`
		}
		cliJSON(t, key, &list, "org", "list")
		if len(list.Organizations) != 1 {
			t.Fatalf("%s hosts %d organisations", key, len(list.Organizations))
		}
		dids[key] = list.Organizations[0].Did
	}
	// Nodes starting together may dial one another before their handlers are up; they dial again
	// within seconds. A peer refused outright stays out for the deny period (1 min) first.
	for key := range composeAPI {
		waitAdmitted(t, key, 3, 100*time.Second)
	}
	return dids
}

func waitHealthy(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(composeAPI[key] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's node not ready within 90 s: %v", key, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitAdmitted waits until key's node has n admitted, connected peers.
func waitAdmitted(t *testing.T, key string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var peers struct {
			Peers []struct {
				Admitted, Connected bool
			} `json:"peers"`
		}
		cliJSON(t, key, &peers, "peers")
		got := 0
		for _, p := range peers.Peers {
			if p.Admitted && p.Connected {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's node has %d admitted peers after %s, want %d", key, got, within, n)
		}
		time.Sleep(time.Second)
	}
}

// cli runs the schakel CLI against key's node and fails unless it exits with want.
func cli(t *testing.T, key string, want int, args ...string) string {
	t.Helper()
	return schakel(t, want, append(args, "--node", composeAPI[key])...)
}

func cliJSON(t *testing.T, key string, v any, args ...string) {
	t.Helper()
	out := cli(t, key, 0, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("schakel %v: %v\n%s", args, err, out)
	}
}

// tokenAnswer is what `schakel token request --json` prints.
type tokenAnswer struct {
	AccessToken       string `json:"accessToken"`
	Error             string `json:"error"`
	Reason            string `json:"reason"`
	CustodianLogIndex string `json:"custodianLogIndex"`
	RequesterLogIndex string `json:"requesterLogIndex"`
}

// requestToken has the hospital ask the GP practice for category; want is the CLI's exit code (0
// granted, 3 refused).
func requestToken(t *testing.T, dids map[string]string, category, role string, want int) tokenAnswer {
	t.Helper()
	var a tokenAnswer
	out := cli(t, "hospital", want, "token", "request", "--org", dids["hospital"], "--custodian", dids["gp"], "--bsn", testBSN,
		"--category", category, "--uzi", "900012345", "--role", role, "--name", "dr. A. de Vries", "--dpop-jkt", dpopJKT, "--json")
	// A refusal also prints the exit reason on stderr after the JSON.
	if i := strings.LastIndex(out, "}"); i >= 0 {
		out = out[:i+1]
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("token request: %v\n%s", err, out)
	}
	return a
}

func TestCompose(t *testing.T) {
	dids := composeUp(t)
	t.Run("scenario", func(t *testing.T) { composeScenario(t, dids) })
	t.Run("kill -9 custodian during a burst", func(t *testing.T) { composeKill9(t, dids) })
	t.Run("partition and heal", func(t *testing.T) { composePartition(t, dids) })
	t.Run("rolling restart", func(t *testing.T) { composeRollingRestart(t, dids) })
	t.Run("empty node joins", func(t *testing.T) { composeEmptyJoin(t, dids) })
}

// composeScenario is the seed scenario through the CLI and the OAuth2 endpoint only.
func composeScenario(t *testing.T, dids map[string]string) {
	// Directory search at the hospital finds the GP practice.
	if out := cli(t, "hospital", 0, "credential", "search", "--name", "jans*"); !strings.Contains(out, dids["gp"]) {
		t.Fatalf("search jans* at the hospital: %s", out)
	}
	// Consent asked online at the portal, processed at the GP practice, notice back.
	cli(t, "portal", 0, "consent", "request", "--org", dids["portal"], "--custodian", dids["gp"], "--bsn", testBSN,
		"--grantee-org", dids["hospital"], "--category", "medication", "--channel", "online", "--birth-date", "1980-04-12")
	var pending struct {
		Consents []struct{ ID string } `json:"consents"`
	}
	eventuallyT(t, 30*time.Second, "the request reaches the GP practice", func() bool {
		cliJSON(t, "gp", &pending, "consent", "list", "--custodian", dids["gp"], "--status", "pending")
		return len(pending.Consents) == 1
	})
	cli(t, "gp", 0, "consent", "process", pending.Consents[0].ID, "--custodian", dids["gp"])
	eventuallyT(t, 30*time.Second, "the notice reaches the portal", func() bool {
		return strings.Contains(cli(t, "portal", 0, "consent", "notices", "--org", dids["portal"]), "accepted")
	})

	// Granted, introspected active over HTTP, the access recorded with the token id.
	a := requestToken(t, dids, "medication", "01.015", 0)
	if a.AccessToken == "" {
		t.Fatalf("no token: %+v", a)
	}
	got := introspect(t, a.AccessToken)
	if got["active"] != true {
		t.Fatalf("introspection of a fresh token: %v", got)
	}
	// The GP practice's FHIR server records what it served under that token.
	jti, _ := got["jti"].(string)
	cli(t, "gp", 0, "log", "record", "--org", dids["gp"], "--bsn", testBSN, "--category", "medication",
		"--query", "MedicationStatement?patient=e2e", "--token", jti, "--requester", dids["hospital"], "--uzi", "900012345", "--role", "01.015")
	// Refused: the GP summary (not consented), a company doctor (never).
	if r := requestToken(t, dids, "gp-professional-summary", "01.015", 3); r.Error != "access_denied" {
		t.Fatalf("GP summary: %+v", r)
	}
	if r := requestToken(t, dids, "medication", "01.008", 3); r.Error != "access_denied" {
		t.Fatalf("company doctor: %+v", r)
	}
	// The patient revokes: the token introspects inactive, the next request is refused.
	cli(t, "gp", 0, "consent", "revoke", pending.Consents[0].ID, "--custodian", dids["gp"])
	if got := introspect(t, a.AccessToken); got["active"] != false {
		t.Fatalf("introspection after the revocation: %v", got)
	}
	requestToken(t, dids, "medication", "01.015", 3)
	// The patient's view shows the hospital's requests, the refused ones included.
	view := cli(t, "gp", 0, "log", "patient", "--org", dids["gp"], "--bsn", testBSN)
	if !strings.Contains(view, `"outcome":"refused"`) || !strings.Contains(view, `"outcome":"granted"`) || !strings.Contains(view, dids["hospital"]) {
		t.Fatalf("patient view:\n%s", view)
	}
	if !strings.Contains(view, jti) {
		t.Fatalf("the patient view does not show the access recorded under token %s:\n%s", jti, view)
	}
	// The hospital's and the portal's nodes witness the GP practice's log: an export verifies with
	// both cosignatures required.
	var keys []string
	for _, k := range []string{"hospital", "portal"} {
		var info struct {
			WitnessKey string `json:"witnessKey"`
		}
		api(t, k, "NodeService/GetNodeInfo", map[string]any{}, &info)
		keys = append(keys, info.WitnessKey)
	}
	api(t, "gp", "LogService/GetLogInfo", map[string]any{"organization": dids["gp"], "checkpoint": true}, nil)
	var dir string
	eventuallyT(t, 60*time.Second, "an export of the GP's log verifies with both witnesses' cosignatures", func() bool {
		dir = filepath.Join(t.TempDir(), "gp-log")
		cli(t, "gp", 0, "log", "export", "--org", dids["gp"], "--out", dir)
		return exec.Command(binary, "log", "verify", dir, "--witness", keys[0], "--witness", keys[1], "--min-cosignatures", "2").Run() == nil
	})
	// A tampered copy (one entry's data category changed) is caught at that entry.
	entries := filepath.Join(dir, "entries.jsonl")
	b, err := os.ReadFile(entries)
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(string(b), `"dataCategory":"medication"`, `"dataCategory":"gp-professional-summary"`, 1)
	if tampered == string(b) {
		t.Fatal("no medication entry to tamper with")
	}
	if err := os.WriteFile(entries, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := schakel(t, 1, "log", "verify", dir); !strings.Contains(out, "entry") {
		t.Fatalf("the tampered copy was refused without naming the entry: %s", out)
	}
}

// api calls key's internal API as JSON over HTTP (Connect protocol), the way an EHR would.
func api(t *testing.T, key, method string, req, resp any) {
	t.Helper()
	body, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPost, composeAPI[key]+"/schakel.v1."+method, strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+composeToken)
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s at %s: %s", method, key, res.Status)
	}
	if resp != nil {
		if err := json.NewDecoder(res.Body).Decode(resp); err != nil {
			t.Fatalf("%s at %s: %v", method, key, err)
		}
	}
}

func introspect(t *testing.T, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, composeAPI["gp"]+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+composeToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("introspect: %s: %v", resp.Status, err)
	}
	return out
}

func eventuallyT(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// burst has the hospital ask the GP practice for tokens from 4 workers until stop is closed; it
// returns every answer the CLI printed (granted or refused) and how many calls got none.
func burst(t *testing.T, dids map[string]string, stop <-chan struct{}) (answers []tokenAnswer, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cmd := exec.Command(binary, "token", "request", "--org", dids["hospital"], "--custodian", dids["gp"], "--bsn", testBSN,
					"--category", "medication", "--uzi", "900012345", "--role", "01.015", "--name", "dr. A. de Vries",
					"--dpop-jkt", dpopJKT, "--json", "--node", composeAPI["hospital"])
				out, _ := cmd.Output()
				var a tokenAnswer
				mu.Lock()
				if json.Unmarshal(out, &a) == nil && a.CustodianLogIndex != "" {
					answers = append(answers, a)
				} else {
					failed++
				}
				mu.Unlock()
				if len(out) == 0 {
					time.Sleep(200 * time.Millisecond) // a node is down: do not spin
				}
			}
		})
	}
	<-stop
	wg.Wait()
	return answers, failed
}

// checkAnswers exports and verifies both logs and checks that every answer the hospital got is the
// GP practice's entry at the index its receipt names (a grant with its token id), and that every
// receipt in the hospital's log names a GP entry that exists.
func checkAnswers(t *testing.T, dids map[string]string, answers []tokenAnswer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gp-log")
	cli(t, "gp", 0, "log", "export", "--org", dids["gp"], "--out", dir)
	schakel(t, 0, "log", "verify", dir)
	entries := readEntries(t, dir)
	for _, a := range answers {
		e, ok := entries[a.CustodianLogIndex]
		want := "refused"
		if a.AccessToken != "" {
			want = "granted"
		}
		if !ok || e["outcome"] != want || e["action"] != "token" || (want == "granted") != (e["tokenId"] != nil) {
			t.Errorf("a %s answer names custodian entry %s; the GP's log holds %v", want, a.CustodianLogIndex, e)
		}
	}
	hdir := filepath.Join(t.TempDir(), "hospital-log")
	cli(t, "hospital", 0, "log", "export", "--org", dids["hospital"], "--out", hdir)
	schakel(t, 0, "log", "verify", hdir)
	for _, e := range readEntries(t, hdir) {
		q, _ := e["query"].(string)
		var origin, leaf, req string
		var idx int
		if _, err := fmt.Sscanf(q, "receipt: %s entry %d leaf %s request %s", &origin, &idx, &leaf, &req); err != nil {
			continue
		}
		if _, ok := entries[fmt.Sprint(idx)]; !ok {
			t.Errorf("the hospital holds a receipt for GP entry %d, which the GP's log does not hold", idx)
		}
	}
}

// composeKill9 kills the custodian's container with SIGKILL while the hospital sends token
// requests. After the restart, every answer's decision is in the GP practice's log, at the index
// its receipt names, the log verifies, and the hospital's receipts reconcile with it.
func composeKill9(t *testing.T, dids map[string]string) {
	cli(t, "gp", 0, "consent", "record", "--custodian", dids["gp"], "--bsn", testBSN, "--grantee-org", dids["hospital"], "--category", "medication")
	stop := make(chan struct{})
	go func() {
		time.Sleep(3 * time.Second)
		run(t, exec.Command("docker", "kill", "-s", "KILL", composeProject+"_gp_1"))
		time.Sleep(2 * time.Second)
		close(stop)
	}()
	answers, failed := burst(t, dids, stop)
	run(t, composeCmd("start", "gp"))
	waitHealthy(t, "gp")
	granted := 0
	for _, a := range answers {
		if a.AccessToken != "" {
			granted++
		}
	}
	if granted == 0 {
		t.Fatalf("no request was granted before the kill (%d answers)", len(answers))
	}
	checkAnswers(t, dids, answers)
	t.Logf("%d answers (%d granted) before the kill, %d calls unanswered; all in the GP's log", len(answers), granted, failed)
}

// composeRollingRestart restarts every node in turn (SIGTERM, start) while the hospital keeps
// asking: no answer without its entry in the custodian's log, the logs verify and reconcile.
func composeRollingRestart(t *testing.T, dids map[string]string) {
	waitAdmitted(t, "hospital", 3, 60*time.Second)
	stop := make(chan struct{})
	go func() {
		for _, key := range []string{"pharmacy", "portal", "gp", "hospital"} {
			time.Sleep(time.Second)
			run(t, composeCmd("restart", "-t", "20", key))
			waitHealthy(t, key)
		}
		time.Sleep(2 * time.Second)
		close(stop)
	}()
	answers, failed := burst(t, dids, stop)
	for key := range composeAPI {
		waitAdmitted(t, key, 3, 60*time.Second)
	}
	if len(answers) == 0 {
		t.Fatal("no answers during the rolling restart")
	}
	checkAnswers(t, dids, answers)
	t.Logf("%d answers during the rolling restart, %d calls unanswered while a node was down; all in the GP's log", len(answers), failed)
}

// composeEmptyJoin starts a fifth node from an empty data directory: it creates its
// organisation, the register admits it, and started with one bootstrap peer it joins and
// catches up with everything the others hold.
func composeEmptyJoin(t *testing.T, dids map[string]string) {
	const name = composeProject + "_newcomer"
	vol := composeProject + "_newcomer"
	net := composeProject + "_schakel"
	exec.Command("docker", "rm", "-f", name).Run()
	exec.Command("docker", "volume", "rm", vol).Run()
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", name).Run()
		exec.Command("docker", "volume", "rm", vol).Run()
	})
	docker := func(args ...string) string { return run(t, exec.Command("docker", args...)) }
	// Setup run again changes nothing and lists the network, the register's DID first.
	reg := strings.Fields(strings.SplitN(run(t, composeCmd("run", "--rm", "setup")), "register ", 2)[1])[0]
	start := func(extra ...string) {
		docker(append([]string{"run", "-d", "--name", name, "--hostname", "newcomer", "--network", net, "-v", vol + ":/data",
			"-e", "SCHAKEL_API_TOKEN=" + composeToken, "schakel:local", "run", "--init", "--data", "/data",
			"--api-addr", "0.0.0.0:7631", "--p2p-addr", "/ip4/0.0.0.0/tcp/7632", "--trusted-register", reg}, extra...)...)
	}
	inside := func(args ...string) string { return docker(append([]string{"exec", name, "/schakel"}, args...)...) }
	start()
	eventuallyT(t, 30*time.Second, "the newcomer's API is up", func() bool {
		return exec.Command("docker", "exec", name, "/schakel", "health").Run() == nil
	})
	org := strings.Fields(lastLine(inside("org", "create", "--name", "Huisartsenpraktijk Nieuwkomer")))[0]
	docker("run", "--rm", "--network", net, "-v", composeProject+"_register:/data/register", "-e", "SCHAKEL_API_TOKEN="+composeToken,
		"schakel:local", "register", "issue", "--dir", "/data/register", "--subject", org, "--name", "Huisartsenpraktijk Nieuwkomer",
		"--ura", "05678901", "--type", "Z3", "--city", "Amersfoort", "--node", "http://newcomer:7631")
	// Restarted with the GP practice's node as its one bootstrap peer and the register trusted.
	var info struct {
		Addrs []string `json:"addrs"`
	}
	cliJSON(t, "gp", &info, "peers")
	var gpAddr string
	for _, a := range info.Addrs {
		if strings.HasPrefix(a, "/ip4/") && !strings.HasPrefix(a, "/ip4/127.") && strings.Contains(a, "/tcp/") {
			_, id, _ := strings.Cut(a, "/p2p/")
			gpAddr = "/dns4/gp/tcp/7632/p2p/" + id
		}
	}
	docker("rm", "-f", name)
	start("--bootstrap", gpAddr)
	began := time.Now()
	eventuallyT(t, 60*time.Second, "the newcomer holds every organisation's credential", func() bool {
		out, err := exec.Command("docker", "exec", name, "/schakel", "credential", "list", "--type", "OrganizationCredential").CombinedOutput()
		if err != nil {
			return false
		}
		for _, did := range dids {
			if !strings.Contains(string(out), did) {
				return false
			}
		}
		return true
	})
	t.Logf("the newcomer joined and caught up %s after starting", time.Since(began).Round(100*time.Millisecond))
}

// readEntries reads an export's entries by index.
func readEntries(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "entries.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint(e["index"])] = e
	}
	return out
}

// composePartition cuts the pharmacy's node off the network, has both sides publish and revoke
// while apart, and reconnects: within the catch-up interval (10 s in docker-compose.yml, plus a
// round) each side holds what the other did.
func composePartition(t *testing.T, dids map[string]string) {
	net := composeProject + "_schakel"
	pharmacy := composeProject + "_pharmacy_1"
	// While disconnected, a container's published port is unreachable too: the CLI runs inside.
	inside := func(key string, args ...string) string {
		return run(t, exec.Command("docker", append([]string{"exec", composeProject + "_" + key + "_1", "/schakel"}, args...)...))
	}
	issue := func(key, category string) string {
		out := inside(key, "credential", "issue", "--org", dids[key], "--endpoint", "fhir=https://"+key+".example/fhir", "--category", category)
		return strings.Fields(lastLine(out))[0]
	}
	// The pharmacy may read the patient's medication at the GP practice, until the consent is
	// revoked — which happens while the pharmacy is cut off.
	var rec struct {
		Consent struct{ ID string } `json:"consent"`
	}
	cliJSON(t, "gp", &rec, "consent", "record", "--custodian", dids["gp"], "--bsn", testBSN, "--grantee-org", dids["pharmacy"], "--category", "medication")
	// pharmacyAsks has the pharmacy's node ask the GP practice for the medication and returns the
	// CLI's exit code: 0 granted, 3 refused, 1 no answer.
	pharmacyAsks := func() int {
		t.Helper()
		cmd := exec.Command("docker", "exec", pharmacy, "/schakel", "token", "request", "--org", dids["pharmacy"], "--custodian", dids["gp"],
			"--bsn", testBSN, "--category", "medication", "--uzi", "900098765", "--role", "17.075", "--name", "apotheker B. Smit", "--dpop-jkt", dpopJKT)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			t.Logf("pharmacy's token request: exit %d: %s", ee.ExitCode(), strings.TrimSpace(lastLine(string(out))))
			return ee.ExitCode()
		}
		t.Fatalf("docker exec: %v", err)
		return -1
	}
	// The GP practice's node was just killed and restarted: the pharmacy's may still be reconnecting.
	waitAdmitted(t, "pharmacy", 3, 60*time.Second)
	eventuallyT(t, 30*time.Second, "the pharmacy is granted the medication before the partition", func() bool { return pharmacyAsks() == 0 })
	before := issue("gp", "gp-professional-summary")
	eventuallyT(t, 30*time.Second, "the pharmacy holds the GP's registration", func() bool {
		return strings.Contains(cli(t, "pharmacy", 0, "credential", "list", "--org", dids["gp"]), before)
	})
	run(t, exec.Command("docker", "network", "disconnect", net, pharmacy))
	// Apart: the GP practice publishes one registration and revokes the earlier one; the pharmacy
	// publishes its own.
	gpNew := issue("gp", "gp-professional-summary")
	cli(t, "gp", 0, "credential", "revoke", "--org", dids["gp"], "--id", before)
	phNew := issue("pharmacy", "medication")
	cli(t, "gp", 0, "consent", "revoke", rec.Consent.ID, "--custodian", dids["gp"])
	if code := pharmacyAsks(); code != 1 {
		t.Fatalf("the partitioned pharmacy's request: exit %d, want 1 (the custodian unreachable)", code)
	}
	time.Sleep(3 * time.Second)
	if strings.Contains(inside("pharmacy", "credential", "list", "--org", dids["gp"]), gpNew) {
		t.Fatal("the partitioned pharmacy already holds what the GP published while apart")
	}
	run(t, exec.Command("docker", "network", "connect", "--alias", "pharmacy", net, pharmacy))
	start := time.Now()
	eventuallyT(t, 45*time.Second, "both sides converge", func() bool {
		atPharmacy := cli(t, "pharmacy", 0, "credential", "list", "--org", dids["gp"])
		atGP := cli(t, "gp", 0, "credential", "list", "--org", dids["pharmacy"])
		return strings.Contains(atPharmacy, gpNew) && strings.Contains(atGP, phNew)
	})
	// The revocation reached the pharmacy too: its check of the old registration fails.
	eventuallyT(t, 45*time.Second, "the revocation reaches the pharmacy", func() bool {
		out, _ := exec.Command(binary, "credential", "verify", "--id", before, "--node", composeAPI["pharmacy"]).CombinedOutput()
		return strings.Contains(string(out), "revoked")
	})
	// The revoked consent is refused to the pharmacy once it is back (its node may still be
	// finding out that its connection from before the partition is gone).
	code := 1
	eventuallyT(t, 45*time.Second, "the pharmacy's request gets an answer", func() bool { code = pharmacyAsks(); return code != 1 })
	if code != 3 {
		t.Fatalf("the pharmacy's request after the partition healed: exit %d, want 3 (refused: consent revoked)", code)
	}
	t.Logf("converged %s after reconnecting", time.Since(start).Round(100*time.Millisecond))
}
