package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// The exports in testdata/log: good is internal/accesslog/verify's testdata/export-v1 (20 entries,
// checkpoints 8, 16 and 20, the one of 16 cosigned by a witness); forked is the same but for
// checkpoint 16, which the log's key signed over a different entry 10.
const (
	goodLog    = "testdata/log/good"
	forkedLog  = "testdata/log/forked"
	goodOrigin = "schakel.nl/log/77cRknNkoWRj6QkGT1hh2Yd6uuifDyNZAzrWVrA2J2Qw"
)

// runCLI runs schakel in process with args and returns its exit code, as main would set it,
// and what it wrote.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	if err != nil {
		errOut.WriteString("schakel: " + err.Error() + "\n")
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return code, out.String(), errOut.String()
}

// export copies a testdata export into a temporary directory for a test to change.
func export(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatalf("CopyFS: %v", err)
	}
	return dir
}

// editEntries rewrites line i of the export's entries.jsonl.
func editEntries(t *testing.T, dir string, edit func(lines [][]byte) [][]byte) {
	t.Helper()
	path := filepath.Join(dir, "entries.jsonl")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if err := os.WriteFile(path, bytes.Join(edit(lines[:len(lines)-1]), nil), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readVKey(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goodLog, "vkey"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// resign replaces checkpoint name by its body signed with a new key of the log's name.
func resign(t *testing.T, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, "checkpoints", name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	body, _, _ := bytes.Cut(b, []byte("\n\n"))
	skey, _, err := note.GenerateKey(rand.Reader, goodOrigin)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(body) + "\n"}, signer)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := os.WriteFile(path, msg, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLogVerify(t *testing.T) {
	_, otherKey, err := note.GenerateKey(rand.Reader, "schakel.nl/log/other")
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	tests := []struct {
		name     string
		dir      func(t *testing.T) string
		args     []string // after "log verify DIR"
		wantCode int
		wantOut  string // stdout must contain it
		wantErr  string // stderr must contain it
	}{
		{"good export", func(*testing.T) string { return goodLog }, nil, 0,
			"valid: " + goodOrigin + ": 20 entries, 3 checkpoints, 2 patients, root ", ""},
		{"good export, key given", func(t *testing.T) string {
			dir := export(t, goodLog)
			os.Remove(filepath.Join(dir, "vkey"))
			return dir
		}, []string{"--vkey", readVKey(t)}, 0, "20 entries", ""},
		{"tampered entry", func(t *testing.T) string {
			dir := export(t, goodLog)
			editEntries(t, dir, func(ls [][]byte) [][]byte {
				ls[5] = bytes.Replace(ls[5], []byte(`"outcome":"granted"`), []byte(`"outcome":"refused"`), 1)
				return ls
			})
			return dir
		}, nil, 1, "", "schakel: invalid: entry 5: changed after entry 6 was appended: its hash is not entry 6's prev, and entry 7 confirms entry 6\n"},
		{"non-canonical entry", func(t *testing.T) string {
			dir := export(t, goodLog)
			editEntries(t, dir, func(ls [][]byte) [][]byte {
				ls[12] = bytes.Replace(ls[12], []byte(`,"index":12,`), []byte(`, "index":12,`), 1)
				return ls
			})
			return dir
		}, nil, 1, "", `schakel: invalid: entry 12: invalid log entry: not canonical: byte 77: want ",\"index\":", found ", \"index"` + "\n"},
		{"deleted entry", func(t *testing.T) string {
			dir := export(t, goodLog)
			editEntries(t, dir, func(ls [][]byte) [][]byte { return append(ls[:9:9], ls[10:]...) })
			return dir
		}, nil, 1, "", "schakel: invalid: entry 9: index 10 at line 9: entries missing, added or out of order\n"},
		{"truncated", func(t *testing.T) string {
			dir := export(t, goodLog)
			editEntries(t, dir, func(ls [][]byte) [][]byte { return ls[:18] })
			return dir
		}, nil, 1, "", "schakel: invalid: entry 18: missing: the export ends after 18 entries, but checkpoint 20 covers 20 (truncated)\n"},
		{"checkpoint signed by another key", func(t *testing.T) string {
			dir := export(t, goodLog)
			resign(t, dir, "16")
			return dir
		}, nil, 1, "", "schakel: invalid: checkpoint 16: invalid checkpoint: not signed by the log key: no signature by " + goodOrigin + "+"},
		{"forked checkpoint", func(*testing.T) string { return forkedLog }, nil, 1, "",
			"schakel: invalid: checkpoint 16: root jFKa4604oLc3yk2O5InlrM8acW54YnUg3U2sIAlGKsA= is not the root 8QCd/2wVW06ATsr3OU4Hg4+hSBDPpH+mUJojF72/2IU= of entries 0 to 15 (0 to 7 match an earlier checkpoint)\n"},
		{"key of another log", func(*testing.T) string { return goodLog }, []string{"--vkey", otherKey}, 1, "",
			"schakel: invalid: checkpoint 8: invalid checkpoint: not signed by the log key"},
		{"malformed key", func(*testing.T) string { return goodLog }, []string{"--vkey", "not-a-key"}, 2, "", "schakel: log verify: verifier key \"not-a-key\": malformed verifier id\n"},
		{"no such directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }, nil, 2, "", "schakel: log verify: stat /"},
		{"no key", func(t *testing.T) string {
			dir := export(t, goodLog)
			os.Remove(filepath.Join(dir, "vkey"))
			return dir
		}, nil, 2, "", "schakel: log verify: the log's verifier key: open "},
		{"unreadable entries", func(t *testing.T) string {
			dir := export(t, goodLog)
			os.Remove(filepath.Join(dir, "entries.jsonl"))
			return dir
		}, nil, 2, "", "entries.jsonl: no such file or directory\n"},
		{"unknown flag", func(*testing.T) string { return goodLog }, []string{"--frobnicate"}, 2, "", "unknown flag: --frobnicate"},
		{"two directories", func(*testing.T) string { return goodLog }, []string{forkedLog}, 2, "", "want one argument, the export directory (got 2)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"log", "verify", tc.dir(t)}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("schakel %s: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					strings.Join(args, " "), code, stdout, stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
			if tc.wantCode == 0 && strings.Count(stdout, "\n") != 1 {
				t.Fatalf("schakel %s: want a one-line summary, got %q", strings.Join(args, " "), stdout)
			}
		})
	}
}

func TestLogVerifyNoArgs(t *testing.T) {
	code, _, stderr := runCLI(t, "log", "verify")
	if code != 2 || !strings.Contains(stderr, "want one argument") {
		t.Fatalf("schakel log verify: exit %d, stderr %q; want exit 2 and a usage error", code, stderr)
	}
}
