package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/schakel-health/schakel/crypto"
	"github.com/schakel-health/schakel/internal/accesslog/witness"
)

// cosign appends a cosignature by a new witness to the export's checkpoint of size 20 and returns
// the witness's verifier key.
func cosign(t *testing.T, dir, name string) string {
	t.Helper()
	k, err := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	c, err := witness.NewCosigner(name, k, time.Now)
	if err != nil {
		t.Fatalf("NewCosigner: %v", err)
	}
	path := filepath.Join(dir, "checkpoints", "20")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	body, _, _ := strings.Cut(string(raw), "\n\n")
	signed, err := note.Sign(&note.Note{Text: body + "\n"}, c)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	_, line, _ := strings.Cut(string(signed), "\n\n")
	if err := os.WriteFile(path, append(raw, line...), 0o644); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	return c.VerifierKey()
}

// TestLogVerifyWitnesses checks the cosignature policy of schakel log verify.
func TestLogVerifyWitnesses(t *testing.T) {
	dir := export(t, goodLog)
	w1 := cosign(t, dir, "schakel.nl/witness/one")
	w2 := cosign(t, dir, "schakel.nl/witness/two")
	k, _ := crypto.GenerateKey(crypto.Ed25519, crypto.UseSign)
	c3, _ := witness.NewCosigner("schakel.nl/witness/three", k, time.Now)
	w3 := c3.VerifierKey() // a witness that did not cosign

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"two of two", []string{"--witness", w1, "--witness", w2, "--min-cosignatures", "2"}, 0, "cosigned by 2 of the witnesses given", ""},
		{"one required, two given", []string{"--witness", w1, "--witness", w3, "--min-cosignatures", "1"}, 0, "valid", ""},
		{"too few", []string{"--witness", w1, "--witness", w3, "--min-cosignatures", "2"}, 1, "", "checkpoint 20"},
		{"malformed witness key", []string{"--witness", "nonsense", "--min-cosignatures", "1"}, 2, "", "witness"},
		{"minimum above the witnesses given", []string{"--witness", w1, "--min-cosignatures", "2"}, 2, "", ""},
		{"negative minimum", []string{"--min-cosignatures", "-1"}, 2, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"log", "verify", dir}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}
