package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/schakel-health/schakel/node"
)

// fileConfig is the YAML configuration file. Every key has a SCHAKEL_* environment variable and,
// except secrets, a flag of the same name: defaults < file < environment < flags.
type fileConfig struct {
	Data               string   `yaml:"data,omitempty"`
	APIAddr            string   `yaml:"api_addr,omitempty"`
	P2PAddr            string   `yaml:"p2p_addr"`
	APITokenFile       string   `yaml:"api_token_file,omitempty"`
	APITLSCert         string   `yaml:"api_tls_cert,omitempty"`
	APITLSKey          string   `yaml:"api_tls_key,omitempty"`
	APIClientCA        string   `yaml:"api_client_ca,omitempty"`
	TrustedRegisters   []string `yaml:"trusted_registers,omitempty"`
	CredentialValidity string   `yaml:"credential_validity,omitempty"`
	LogLevel           string   `yaml:"log_level,omitempty"`
	Bootstrap          []string `yaml:"bootstrap,omitempty"`
	AnnounceAddrs      []string `yaml:"announce_addrs,omitempty"`
	MembershipAddr     string   `yaml:"membership_addr,omitempty"`
	SyncInterval       string   `yaml:"sync_interval,omitempty"`
	Policy             string   `yaml:"policy,omitempty"`
}

// maxConfigSize bounds the configuration file.
const maxConfigSize = 64 << 10

// parseConfigFile decodes a YAML configuration strictly: unknown keys are errors, so a typo never
// silently falls back to a default.
func parseConfigFile(b []byte) (fileConfig, error) {
	var fc fileConfig
	if len(b) > maxConfigSize {
		return fc, fmt.Errorf("config file larger than %d bytes", maxConfigSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fc, fmt.Errorf("config file: %w", err)
	}
	return fc, nil
}

// settings are the resolved node settings with the log level.
type settings struct {
	node     node.Config
	logLevel slog.Level
}

// envLookup is os.LookupEnv, replaced in tests.
var envLookup = os.LookupEnv

// loadSettings resolves the configuration: defaults, then the YAML file (--config, else
// <data>/schakel.yaml when present), then SCHAKEL_* variables, then the flags that were set.
func loadSettings(flags *pflag.FlagSet) (settings, error) {
	s := settings{node: node.DefaultConfig(), logLevel: slog.LevelInfo}
	var fc fileConfig
	path, _ := flags.GetString("config")
	if path == "" {
		data := flagOrEnv(flags, "data", "SCHAKEL_DATA")
		if data != "" {
			if p := filepath.Join(data, node.ConfigFile); fileExists(p) {
				path = p
			}
		}
	}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return s, fmt.Errorf("config: %w", err)
		}
		if fc, err = parseConfigFile(raw); err != nil {
			return s, fmt.Errorf("%s: %w", path, err)
		}
	}
	// Environment over file.
	for _, e := range []struct {
		env string
		dst *string
	}{
		{"SCHAKEL_DATA", &fc.Data},
		{"SCHAKEL_API_ADDR", &fc.APIAddr},
		{"SCHAKEL_P2P_ADDR", &fc.P2PAddr},
		{"SCHAKEL_API_TOKEN_FILE", &fc.APITokenFile},
		{"SCHAKEL_API_TLS_CERT", &fc.APITLSCert},
		{"SCHAKEL_API_TLS_KEY", &fc.APITLSKey},
		{"SCHAKEL_API_CLIENT_CA", &fc.APIClientCA},
		{"SCHAKEL_CREDENTIAL_VALIDITY", &fc.CredentialValidity},
		{"SCHAKEL_LOG_LEVEL", &fc.LogLevel},
		{"SCHAKEL_MEMBERSHIP_ADDR", &fc.MembershipAddr},
		{"SCHAKEL_SYNC_INTERVAL", &fc.SyncInterval},
		{"SCHAKEL_POLICY", &fc.Policy},
	} {
		if v, ok := envLookup(e.env); ok {
			*e.dst = v
		}
	}
	for _, e := range []struct {
		env string
		dst *[]string
	}{
		{"SCHAKEL_TRUSTED_REGISTERS", &fc.TrustedRegisters},
		{"SCHAKEL_BOOTSTRAP", &fc.Bootstrap},
		{"SCHAKEL_ANNOUNCE_ADDRS", &fc.AnnounceAddrs},
	} {
		if v, ok := envLookup(e.env); ok {
			*e.dst = splitList(v)
		}
	}
	// Flags over environment.
	for _, f := range []struct {
		flag string
		dst  *string
	}{
		{"data", &fc.Data},
		{"api-addr", &fc.APIAddr},
		{"p2p-addr", &fc.P2PAddr},
		{"credential-validity", &fc.CredentialValidity},
		{"log-level", &fc.LogLevel},
		{"api-tls-cert", &fc.APITLSCert},
		{"api-tls-key", &fc.APITLSKey},
		{"api-client-ca", &fc.APIClientCA},
		{"membership-addr", &fc.MembershipAddr},
		{"sync-interval", &fc.SyncInterval},
		{"policy", &fc.Policy},
	} {
		if fl := flags.Lookup(f.flag); fl != nil && fl.Changed {
			*f.dst = fl.Value.String()
		}
	}
	for _, f := range []struct {
		flag string
		dst  *[]string
	}{
		{"trusted-register", &fc.TrustedRegisters},
		{"bootstrap", &fc.Bootstrap},
		{"announce-addr", &fc.AnnounceAddrs},
	} {
		if fl := flags.Lookup(f.flag); fl != nil && fl.Changed {
			*f.dst, _ = flags.GetStringSlice(f.flag)
		}
	}
	return s, s.apply(fc)
}

func (s *settings) apply(fc fileConfig) error {
	if fc.Data != "" {
		s.node.DataDir = fc.Data
	}
	if fc.APIAddr != "" {
		s.node.APIAddr = fc.APIAddr
	}
	if fc.P2PAddr != "" {
		s.node.P2PAddr = fc.P2PAddr
	}
	s.node.TrustedRegisters = fc.TrustedRegisters
	s.node.PolicyFile = fc.Policy
	s.node.Bootstrap, s.node.AnnounceAddrs, s.node.MembershipAddr = fc.Bootstrap, fc.AnnounceAddrs, fc.MembershipAddr
	if fc.SyncInterval != "" {
		d, err := time.ParseDuration(fc.SyncInterval)
		if err != nil {
			return fmt.Errorf("config: sync_interval: %w", err)
		}
		s.node.SyncInterval = d
	}
	s.node.APITLSCert, s.node.APITLSKey, s.node.APIClientCA = fc.APITLSCert, fc.APITLSKey, fc.APIClientCA
	if fc.CredentialValidity != "" {
		d, err := time.ParseDuration(fc.CredentialValidity)
		if err != nil {
			return fmt.Errorf("config: credential_validity: %w", err)
		}
		s.node.CredentialValidity = d
	}
	if fc.LogLevel != "" {
		if err := s.logLevel.UnmarshalText([]byte(fc.LogLevel)); err != nil {
			return fmt.Errorf("config: log_level: %w", err)
		}
	}
	// Secrets: the token from the environment, or from a file; never from a flag.
	if v, ok := envLookup("SCHAKEL_API_TOKEN"); ok {
		s.node.APIToken = v
	} else if fc.APITokenFile != "" {
		raw, err := os.ReadFile(fc.APITokenFile)
		if err != nil {
			return fmt.Errorf("config: api_token_file: %w", err)
		}
		s.node.APIToken = strings.TrimSpace(string(raw))
	}
	return s.node.Validate()
}

func flagOrEnv(flags *pflag.FlagSet, flag, env string) string {
	if fl := flags.Lookup(flag); fl != nil && fl.Changed {
		return fl.Value.String()
	}
	v, _ := envLookup(env)
	return v
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
