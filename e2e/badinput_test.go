package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/internal/register"
	"github.com/schakel-health/schakel/internal/store"
	"github.com/schakel-health/schakel/internal/vc"
)

// TestBadInputCLIFiles runs the binary on bad files of every kind the CLI reads (DESIGN §2
// invariant 6): the configuration file and the policy it names, signed documents given to
// `credential submit`, `credential verify` and `token introspect`, and log exports given to
// `log verify`. Each is refused with its exit code and a message naming the problem, and the
// node's storage is byte for byte what it was: its digest is the same, and no key was written
// again, not even with its old value.
func TestBadInputCLIFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ctx := t.Context()
	dir := t.TempDir()
	regDir, data := filepath.Join(dir, "register"), filepath.Join(dir, "node")
	regDID := schakel(t, 0, "register", "init", "--dir", regDir, "--name", "Register Zorgaanbieders")
	schakel(t, 0, "init", "--data", data)
	addr := freePort(t)
	d := startNode(t, data, addr, "--trusted-register", regDID)
	node := "--node=" + d.url
	gp := schakel(t, 0, "org", "create", node, "--name", "Huisartsenpraktijk Jansen")
	ocFile := filepath.Join(dir, "oc.jwt")
	schakel(t, 0, "register", "issue", "--dir", regDir, node, "--subject", gp, "--name", "Huisartsenpraktijk Jansen",
		"--ura", "01234567", "--type", "Z3", "--city", "Utrecht", "--out", ocFile)
	for i := range 3 {
		schakel(t, 0, "log", "record", node, "--org", gp, "--bsn", "111222333", "--category", "medication",
			"--query", fmt.Sprintf("MedicationStatement?_count=%d", i+1), "--requester", gp, "--uzi", "900012345", "--role", "01.015")
	}
	export := filepath.Join(dir, "export")
	schakel(t, 0, "log", "export", node, "--org", gp, "--out", export)
	schakel(t, 0, "log", "verify", export)
	waitSelfWitnessed(t, d.url, gp)
	d.stop(t)
	before := badStoreState(t, data)

	// A credential that expires a second after it is issued, issued now.
	r, err := register.Open(regDir)
	if err != nil {
		t.Fatalf("register.Open: %v", err)
	}
	expired, err := r.Issue(ctx, vc.Organization{ID: gp, Name: "Huisartsenpraktijk Jansen", URA: "01234567", Type: "Z3", City: "Utrecht"}, time.Second, time.Now())
	if err != nil {
		t.Fatalf("register Issue: %v", err)
	}
	oc, err := os.ReadFile(ocFile)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	oc = bytes.TrimSpace(oc)
	file := func(name string, content []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		return path
	}

	// The configuration file and the policy it names: refused before the node serves.
	t.Run("config", func(t *testing.T) {
		policy := func(name string, content []byte) []byte {
			return []byte("policy: " + file(name, content) + "\n")
		}
		tests := []struct {
			name   string
			config []byte
			code   int
			want   string
		}{
			{"malformed: garbage", []byte("\x00\xff{[:"), 2, "config file: yaml:"},
			{"malformed: truncated", []byte("trusted_registers: [" + regDID), 2, "config file: yaml: line 1: did not find expected ',' or ']'"},
			{"malformed: misspelt key", []byte("api_adr: 127.0.0.1:1\n"), 2, "field api_adr not found"},
			{"oversized: one byte above 64 KiB", append([]byte("#"), bytes.Repeat([]byte("x"), 64<<10)...), 2, "config file larger than 65536 bytes"},
			{"wrong type: a number for a list", []byte("trusted_registers: 5\n"), 2, "cannot unmarshal !!int `5` into []string"},
			{"wrong type: a word for a duration", []byte("sync_interval: fast\n"), 2, `config: sync_interval: time: invalid duration "fast"`},
			{"wrong type: a credential for a configuration", oc, 2, "config file: yaml:"},
			{"missing: API token file", []byte("api_token_file: " + filepath.Join(dir, "no-such-token") + "\n"), 2, "config: api_token_file: open "},
			{"malformed: policy", policy("truncated-policy.yaml", []byte("neverRoles: [")), 1, "load policy "},
			{"oversized: policy one byte above 1 MiB", policy("big-policy.yaml", append([]byte("#"), bytes.Repeat([]byte("x"), 1<<20)...)), 1, "exceeds 1048576"},
			{"wrong type: a credential for a policy", policy("credential-policy.yaml", oc), 1, "load policy "},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				cfg := file("bad.yaml", tc.config)
				out := badRun(t, tc.code, "run", "--data", data, "--config", cfg, "--api-addr", freePort(t), "--p2p-addr", "/ip4/127.0.0.1/tcp/0")
				if !strings.Contains(out, tc.want) {
					t.Fatalf("schakel run with %s: %q; want it to name %q", tc.name, out, tc.want)
				}
				requireSameStore(t, tc.name, data, before)
			})
		}
	})

	// Documents given to the CLI as files: refused by the CLI or by the node, or, for one already
	// held, taken without a write. The node runs for the whole table; its storage is compared
	// once it has stopped.
	t.Run("documents", func(t *testing.T) {
		d := startNode(t, data, addr, "--trusted-register", regDID)
		node := "--node=" + d.url
		// The credential with one character of its signature changed.
		forged := bytes.Clone(oc)
		i := bytes.LastIndexByte(forged, '.') + (len(forged)-bytes.LastIndexByte(forged, '.'))/2
		if forged[i] == 'A' {
			forged[i] = 'B'
		} else {
			forged[i] = 'A'
		}
		time.Sleep(time.Until(expired.ValidUntil.Add(time.Second)))
		tests := []struct {
			name  string
			args  []string
			stdin []byte
			code  int
			want  string
		}{
			{"malformed: garbage", []string{"credential", "submit", "@" + file("garbage.jwt", []byte("hello"))}, nil, 1, "document 0: parse header: malformed input"},
			{"malformed: truncated credential", []string{"credential", "submit", "@" + file("truncated.jwt", oc[:len(oc)/2])}, nil, 1, "malformed input: 2 segments, want 3"},
			{"malformed: no such file", []string{"credential", "submit", "@" + filepath.Join(dir, "none.jwt")}, nil, 2, "no such file or directory"},
			{"oversized: file one byte above 1 MiB", []string{"credential", "submit", "@" + file("big.jwt", bytes.Repeat([]byte("A"), 1<<20+1))}, nil, 2, "larger than 1048576 bytes"},
			{"oversized: standard input one byte above 1 MiB", []string{"credential", "submit", "@-"}, bytes.Repeat([]byte("A"), 1<<20+1), 2, "larger than 1048576 bytes"},
			{"oversized: token file one byte above 1 MiB", []string{"token", "introspect", "@" + file("big.token", bytes.Repeat([]byte("A"), 1<<20+1))}, nil, 1, "larger than 1048576 bytes"},
			{"wrong type: checkpoint as a document", []string{"credential", "submit", "@" + file("checkpoint.jwt", readCheckpoint(t, export))}, nil, 1, "document 0: parse header: malformed input"},
			{"wrong type: credential as a token", []string{"token", "introspect", "@" + ocFile}, nil, 3, `{"active":false}`},
			{"expired: credential", []string{"credential", "submit", "@" + file("expired.jwt", expired.JWT)}, nil, 1, "credential expired"},
			{"expired: credential verified", []string{"credential", "verify", "@" + file("expired.jwt", expired.JWT)}, nil, 1, "NOT valid: verify credential " + expired.ID + ": credential expired"},
			{"replayed: credential held", []string{"credential", "submit", "@" + ocFile}, nil, 0, "OrganizationCredential\t"},
			{"forged: changed signature byte", []string{"credential", "submit", "@" + file("forged.jwt", forged)}, nil, 1, "signature does not verify"},
			{"forged: changed signature byte, verified", []string{"credential", "verify", "@" + file("forged.jwt", forged)}, nil, 1, "NOT valid: verify credential"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				out := badRunIn(t, tc.code, tc.stdin, append(tc.args, node)...)
				if !strings.Contains(out, tc.want) {
					t.Fatalf("schakel %s: %q; want it to name %q", strings.Join(tc.args, " "), out, tc.want)
				}
				if tc.code == 0 && !strings.Contains(out, "already held") {
					t.Fatalf("schakel %s: %q; want the credential already held", strings.Join(tc.args, " "), out)
				}
			})
		}
		d.stop(t)
		requireSameStore(t, "the documents", data, before)
	})

	// Log exports given to `log verify`, which works offline: exit 1 names the first bad entry or
	// the bad checkpoint, exit 2 an export it cannot read. It changes neither the export nor the
	// node's storage.
	t.Run("log exports", func(t *testing.T) {
		entries, err := os.ReadFile(filepath.Join(export, "entries.jsonl"))
		if err != nil {
			t.Fatalf("ReadFile: %v", err)
		}
		lines := bytes.SplitAfter(entries, []byte("\n"))
		lines = lines[:len(lines)-1]
		if len(lines) < 3 {
			t.Fatalf("the export holds %d entries, want at least 3", len(lines))
		}
		withEntries := func(edit func(ls [][]byte) [][]byte) func(string) {
			return func(dir string) {
				ls := edit(append([][]byte(nil), lines...))
				if err := os.WriteFile(filepath.Join(dir, "entries.jsonl"), bytes.Join(ls, nil), 0o600); err != nil {
					t.Fatalf("WriteFile: %v", err)
				}
			}
		}
		last := len(lines) - 1
		tests := []struct {
			name   string
			tamper func(dir string)
			code   int
			want   string
		}{
			{"control: the export as made", func(string) {}, 0, "valid: "},
			{"malformed: garbage entries", withEntries(func([][]byte) [][]byte { return [][]byte{[]byte("\x00\xff garbage\n")} }), 1, "entry 0: invalid log entry"},
			{"malformed: entry cut mid-line", withEntries(func(ls [][]byte) [][]byte {
				ls[last] = ls[last][:len(ls[last])/2]
				return ls
			}), 1, fmt.Sprintf("entry %d", last)},
			{"malformed: no entries file", func(dir string) { os.Remove(filepath.Join(dir, "entries.jsonl")) }, 2, "entries.jsonl: no such file or directory"},
			{"oversized: an entry line of 1 MiB", withEntries(func(ls [][]byte) [][]byte {
				ls[1] = append(bytes.Repeat([]byte("x"), 1<<20), '\n')
				return ls
			}), 1, "entry 1: longer than "},
			{"wrong type: a checkpoint for the entries", withEntries(func([][]byte) [][]byte { return [][]byte{readCheckpoint(t, export)} }), 1, "entry 0: invalid log entry"},
			{"wrong type: a credential for the log key", func(dir string) {
				os.WriteFile(filepath.Join(dir, "vkey"), append(bytes.Clone(oc), '\n'), 0o600)
			}, 2, "malformed verifier id"},
			{"replayed: an entry twice", withEntries(func(ls [][]byte) [][]byte { return append(ls[:2:2], ls[1:]...) }), 1, "entry 2: "},
			{"forged: changed entry", withEntries(func(ls [][]byte) [][]byte {
				ls[0] = bytes.Replace(ls[0], []byte("MedicationStatement?_count=1"), []byte("MedicationStatement?_count=9"), 1)
				return ls
			}), 1, "entry 0: changed after entry 1 was appended"},
			{"forged: checkpoint signed by another key", func(dir string) {
				cps, err := os.ReadDir(filepath.Join(dir, "checkpoints"))
				if err != nil {
					t.Fatalf("ReadDir: %v", err)
				}
				for _, c := range cps {
					resignCheckpoint(t, filepath.Join(dir, "checkpoints", c.Name()))
				}
			}, 1, "invalid checkpoint: not signed by the log key"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				copyDir := filepath.Join(t.TempDir(), "export")
				if err := os.CopyFS(copyDir, os.DirFS(export)); err != nil {
					t.Fatalf("CopyFS: %v", err)
				}
				tc.tamper(copyDir)
				sum := dirDigest(t, copyDir)
				out := badRun(t, tc.code, "log", "verify", copyDir)
				if !strings.Contains(out, tc.want) {
					t.Fatalf("schakel log verify (%s): %q; want it to name %q", tc.name, out, tc.want)
				}
				if dirDigest(t, copyDir) != sum {
					t.Fatalf("schakel log verify changed the export")
				}
			})
		}
		requireSameStore(t, "log verify", data, before)
	})
}

// badRun runs the binary with args and returns its output, failing the test unless it exits
// with want within 30 seconds.
func badRun(t *testing.T, want int, args ...string) string {
	t.Helper()
	return badRunIn(t, want, nil, args...)
}

// badRunIn is badRun with stdin.
func badRunIn(t *testing.T, want int, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("schakel %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("schakel %s did not exit within 30s; output:\n%s", strings.Join(args, " "), out)
	}
	if code != want {
		t.Fatalf("schakel %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

// badStore is the storage of a stopped node: its digest and a snapshot naming every key.
type badStore struct {
	sum  [32]byte
	keys int
	snap store.Snapshot
}

// badStoreState reads the storage of the stopped node whose data directory is data.
func badStoreState(t *testing.T, data string) badStore {
	t.Helper()
	db, err := store.Open(store.Config{Dir: filepath.Join(data, "db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	defer db.Close()
	sum, keys, err := db.Digest(t.Context())
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	snap, err := db.Snapshot(t.Context())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return badStore{sum: sum, keys: keys, snap: snap}
}

// requireSameStore fails unless the stopped node's storage is as in before.
func requireSameStore(t *testing.T, what, data string, before badStore) {
	t.Helper()
	now := badStoreState(t, data)
	if cs := before.snap.Diff(now.snap); now.sum != before.sum || len(cs) != 0 {
		var b strings.Builder
		for _, c := range cs {
			b.WriteString("\n\t" + c.String())
		}
		t.Fatalf("%s changed the node's storage: digest %x (%d keys) → %x (%d keys):%s", what, before.sum[:8], before.keys, now.sum[:8], now.keys, b.String())
	}
}

// dirDigest hashes the names and contents of every file under dir.
func dirDigest(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir: %v", err)
	}
	return [32]byte(h.Sum(nil))
}

// resignCheckpoint replaces the signed checkpoint at path by its body signed with another key of
// the log's name.
func resignCheckpoint(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	body, _, _ := bytes.Cut(b, []byte("\n\n"))
	origin, _, _ := bytes.Cut(body, []byte("\n"))
	skey, _, err := note.GenerateKey(nil, string(origin))
	if err != nil {
		t.Fatalf("note.GenerateKey: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("note.NewSigner: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(body) + "\n"}, signer)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
}

// readCheckpoint returns the latest checkpoint of an export.
func readCheckpoint(t *testing.T, export string) []byte {
	t.Helper()
	cps, err := os.ReadDir(filepath.Join(export, "checkpoints"))
	if err != nil || len(cps) == 0 {
		t.Fatalf("ReadDir: %d checkpoints, %v", len(cps), err)
	}
	b, err := os.ReadFile(filepath.Join(export, "checkpoints", cps[len(cps)-1].Name()))
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return b
}

// waitSelfWitnessed waits until the node has witnessed the latest checkpoint of org's log itself,
// which it does within a second of making it: stopped before, it would do so at its next start,
// and that write is not one a test of bad input should see.
func waitSelfWitnessed(t *testing.T, url, org string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"organization": org})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Post(url+"/schakel.v1.LogService/ListCheckpoints", "application/json", bytes.NewReader(body))
		if err == nil {
			var out struct {
				Checkpoints []struct {
					Note string `json:"note"`
				} `json:"checkpoints"`
			}
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if n := len(out.Checkpoints); err == nil && n > 0 && strings.Contains(out.Checkpoints[n-1].Note, "— schakel.nl/witness/") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not witness its own checkpoint within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
