package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const regA = "did:schakel:77cRknNkoWRj6QkGT1hh2Yd6uuifDyNZAzrWVrA2J2Qw"
const regB = "did:schakel:HnhmxRCfgArpegkCz6HY4iKGSXfZjYz6USvLRzPWuA3E"

func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("from-file\n"), 0o600)
	yml := "api_addr: 127.0.0.1:1111\np2p_addr: /ip4/127.0.0.1/tcp/2222\ntrusted_registers: [" + regA + "]\ncredential_validity: 48h\napi_token_file: " + tokenFile + "\n"
	os.WriteFile(filepath.Join(dir, "schakel.yaml"), []byte(yml), 0o600)

	tests := []struct {
		name  string
		env   map[string]string
		flags []string
		check func(t *testing.T, s settings)
	}{
		{"file over defaults", nil, []string{"--data", dir}, func(t *testing.T, s settings) {
			if s.node.APIAddr != "127.0.0.1:1111" || s.node.P2PAddr != "/ip4/127.0.0.1/tcp/2222" || s.node.CredentialValidity != 48*time.Hour {
				t.Fatalf("file settings not applied: %+v", s.node)
			}
			if len(s.node.TrustedRegisters) != 1 || s.node.TrustedRegisters[0] != regA || s.node.APIToken != "from-file" {
				t.Fatalf("registers %v token %q", s.node.TrustedRegisters, s.node.APIToken)
			}
		}},
		{"environment over file", map[string]string{"SCHAKEL_API_ADDR": "127.0.0.1:3333", "SCHAKEL_TRUSTED_REGISTERS": regB + "," + regA, "SCHAKEL_API_TOKEN": "from-env"}, []string{"--data", dir}, func(t *testing.T, s settings) {
			if s.node.APIAddr != "127.0.0.1:3333" || len(s.node.TrustedRegisters) != 2 || s.node.APIToken != "from-env" {
				t.Fatalf("environment not applied: %+v", s.node)
			}
		}},
		{"flags over environment", map[string]string{"SCHAKEL_API_ADDR": "127.0.0.1:3333"}, []string{"--data", dir, "--api-addr", "127.0.0.1:4444", "--trusted-register", regB}, func(t *testing.T, s settings) {
			if s.node.APIAddr != "127.0.0.1:4444" || len(s.node.TrustedRegisters) != 1 || s.node.TrustedRegisters[0] != regB {
				t.Fatalf("flags not applied: %+v", s.node)
			}
		}},
		{"data directory from the environment", map[string]string{"SCHAKEL_DATA": dir}, nil, func(t *testing.T, s settings) {
			if s.node.DataDir != dir || s.node.APIAddr != "127.0.0.1:1111" {
				t.Fatalf("SCHAKEL_DATA not used to find the file: %+v", s.node)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			envLookup = func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			t.Cleanup(func() { envLookup = os.LookupEnv })
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			addNodeFlags(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			s, err := loadSettings(fs)
			if err != nil {
				t.Fatalf("loadSettings: %v", err)
			}
			tc.check(t, s)
		})
	}
}

func TestSettingsRefused(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, yaml string
		env        map[string]string
		want       string
	}{
		{"unknown key", "api_adr: 127.0.0.1:1\n", nil, "api_adr"},
		{"bad duration", "credential_validity: forever\n", nil, "credential_validity"},
		{"bad log level", "log_level: loud\n", nil, "log_level"},
		{"exposed without token", "api_addr: 0.0.0.0:7631\n", nil, "not loopback"},
		{"not a DID", "trusted_registers: [example]\n", nil, "trusted_registers"},
		{"not YAML", "{{{", nil, "config file"},
		{"oversized", strings.Repeat("#", maxConfigSize+1), nil, "larger than"},
		{"missing token file", "api_token_file: /nonexistent/token\n", nil, "api_token_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			envLookup = func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			t.Cleanup(func() { envLookup = os.LookupEnv })
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o600)
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			addNodeFlags(fs)
			fs.Parse([]string{"--data", dir, "--config", path})
			_, err := loadSettings(fs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("loadSettings = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// FuzzParseConfigFile: arbitrary bytes never panic the configuration parser, and a file it accepts
// yields settings that either validate or are refused with an error.
func FuzzParseConfigFile(f *testing.F) {
	f.Add([]byte("api_addr: 127.0.0.1:7631\ntrusted_registers: [" + regA + "]\n"))
	f.Add([]byte("credential_validity: 24h\nlog_level: debug\n"))
	f.Add([]byte("data: [1, 2]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fc, err := parseConfigFile(b)
		if err != nil {
			return
		}
		fc.APITokenFile = ""
		s := settings{}
		_ = s.apply(fc)
	})
}
