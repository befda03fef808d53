package consent

import (
	"bytes"
	"errors"
	"flag"
	"github.com/schakel-health/schakel/crypto"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the format vectors in testdata/ from the code")

// vectorConsent sets every field, so that the vector pins the whole stored form.
func vectorConsent() Consent {
	return Consent{
		ID: "urn:uuid:5f0c6a0e-8d3b-4c8e-9f1a-2b7d4e6a8c10", Custodian: gp, Patient: patV2,
		Decision: DecisionPermit, Basis: "toestemmingsformulier 2030-03",
		Grantee: Grantee{OrgType: "V6"}, DataCategories: []string{"gp-professional-summary", "medication"},
		Purposes: []string{"ETREAT", "TREAT"}, ValidFrom: t0, ValidUntil: t0.AddDate(5, 0, 0),
		Grantors: []GrantorRole{GrantorParent, GrantorSelf}, PatientBirthDate: time.Date(2015, 6, 1, 0, 0, 0, 0, time.UTC),
		Channel: ChannelOnline, Assurance: AssuranceSubstantial, Supersedes: "urn:uuid:0a", SupersededBy: "urn:uuid:0b",
		Status: StatusSuperseded, Reason: "superseded by a newer consent of the same scope", RequestedBy: portal,
		RequestID: "req-42", Created: t0, Updated: t0.Add(time.Hour),
	}
}

func vectorGrant() Grant {
	return Grant{ID: "urn:uuid:grant-1", Custodian: gp, Grantee: hospital, Patient: patV2,
		DataCategories: summary, Resources: []string{"DocumentReference/123"}, Purpose: "TREAT",
		ValidFrom: t0, ValidUntil: t0.Add(7 * 24 * time.Hour), Revoked: true, Created: t0}
}

// TestFormatVectors pins the stored form of a consent and a grant (format version 1): encoding
// gives the bytes in testdata/, and decoding them gives the value back.
func TestFormatVectors(t *testing.T) {
	for _, v := range []struct {
		file string
		val  any
		zero func() any
	}{
		{"consent-v1.bin", vectorConsent(), func() any { return new(Consent) }},
		{"grant-v1.bin", vectorGrant(), func() any { return new(Grant) }},
	} {
		t.Run(v.file, func(t *testing.T) {
			path := filepath.Join("testdata", v.file)
			enc, err := encode(v.val)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if *update {
				if err := os.WriteFile(path, enc, 0o644); err != nil {
					t.Fatalf("WriteFile: %v", err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("ReadFile: %v (run with -update to create it)", err)
			}
			if !bytes.Equal(enc, want) {
				t.Fatalf("encode = %q, want %s's %q: the stored format changed; bump formatV1", enc, path, want)
			}
			got := v.zero()
			if err := decode(want, got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), v.val) {
				t.Fatalf("decode = %+v, want %+v", got, v.val)
			}
		})
	}
}

// TestNewID checks the form of generated ids: urn:uuid, version 4, variant 10, unique, and never
// with something that looks like a BSN.
func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 5000 {
		id, err := newID()
		if err != nil {
			t.Fatalf("newID: %v", err)
		}
		u, ok := strings.CutPrefix(id, "urn:uuid:")
		if !ok || len(u) != 36 || u[14] != '4' || !strings.ContainsAny(u[19:20], "89ab") || u[8] != '-' || u[23] != '-' {
			t.Fatalf("newID = %q, want urn:uuid: and a version 4 UUID", id)
		}
		if crypto.ContainsBSN(id) || seen[id] {
			t.Fatalf("newID = %q: looks like a BSN or repeats", id)
		}
		seen[id] = true
	}
}

// TestDecodeRefuses checks that decode refuses what this package did not write.
func TestDecodeRefuses(t *testing.T) {
	good, err := encode(vectorConsent())
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	for _, tt := range []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"other version", append([]byte{2}, good[1:]...)},
		{"unknown member", append([]byte{formatV1}, `{"id":"x","extra":1}`...)},
		{"trailing value", append(bytes.Clone(good), ` {}`...)},
		{"not JSON", []byte{formatV1, '{'}},
	} {
		var c Consent
		if err := decode(tt.raw, &c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode(%s) = %v, want ErrCorrupt", tt.name, err)
		}
	}
}

// FuzzDecode: no panic on any stored bytes, and whatever decodes re-encodes to a value that
// decodes the same.
func FuzzDecode(f *testing.F) {
	good, _ := encode(vectorConsent())
	f.Add(good)
	f.Add([]byte{formatV1, '{', '}'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c Consent
		if decode(raw, &c) != nil {
			return
		}
		again, err := encode(&c)
		if err != nil {
			t.Fatalf("encode(decoded): %v", err)
		}
		var c2 Consent
		if err := decode(again, &c2); err != nil {
			t.Fatalf("decode(re-encoded): %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the record: %+v != %+v", c, c2)
		}
	})
}

// FuzzParsePolicy: no panic on any policy file, and a policy that parses keeps the legal floors.
func FuzzParsePolicy(f *testing.F) {
	f.Add(defaultYAML)
	f.Add([]byte("careProviderTypes: [Z3]\nroles: {\"01.*\": [\"*\"]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("ParsePolicy = %v, want ErrPolicy", err)
			}
			return
		}
		records := []Consent{rec("c1", DecisionPermit, anyOrg, all, purposes(Wildcard))}
		for _, change := range []func(*Request){
			func(r *Request) { r.Role = "01.008" },
			func(r *Request) { r.Role = "01.048" },
			func(r *Request) { r.Purpose = "HPAYMT" },
			func(r *Request) { r.Purpose = "HRESCH" },
			func(r *Request) { r.Credentialed = false },
			func(r *Request) { r.RequesterType = "P1" },
		} {
			req := baseRequest()
			change(&req)
			if got := p.Decide(req, records, nil); got.Permit {
				t.Fatalf("policy %q permits %+v: %+v", b, req, got)
			}
		}
	})
}

// FuzzDecide: no panic on any request, and no permit for what is never allowed.
func FuzzDecide(f *testing.F) {
	f.Add("01.016", "TREAT", "medication", "V6", AssuranceHigh, false)
	f.Add("01.008", "ETREAT", "*", "P1", AssuranceLow, true)
	glass := breakGlassPolicy(f)
	records := []Consent{
		rec("a", DecisionPermit, anyOrg, all, purposes(Wildcard)),
		rec("b", DecisionObjection, typeV6, medication),
		rec("c", DecisionPermit, orgHospital, summary, purposes("HRESCH", "TREAT")),
	}
	f.Fuzz(func(t *testing.T, role, purpose, category, typ, assurance string, breakGlass bool) {
		req := baseRequest()
		req.Role, req.Purpose, req.DataCategory, req.RequesterType, req.Assurance = role, purpose, category, typ, assurance
		req.BreakGlass, req.Emergency = breakGlass, breakGlass
		for _, p := range []*Policy{DefaultPolicy(), glass} {
			got := p.Decide(req, records, referral())
			if !got.Permit {
				continue
			}
			if role == "01.008" || role == "01.048" || p.neverPurpose.has(purpose) || !p.careProvider.has(typ) ||
				assuranceRank(assurance) < p.minAssurance {
				t.Fatalf("Decide permits a request that is never allowed: %+v → %+v", req, got)
			}
		}
	})
}
