package consent

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDefaultPolicy checks that the embedded default parses and says what DESIGN §5 says.
func TestDefaultPolicy(t *testing.T) {
	p, err := ParsePolicy(defaultYAML)
	if err != nil {
		t.Fatalf("ParsePolicy(default.yaml): %v", err)
	}
	if DefaultPolicy() != DefaultPolicy() {
		t.Error("DefaultPolicy is parsed more than once")
	}
	for _, typ := range []string{"Z3", "J8", "V6", "V5", "N6", "G5"} {
		if !p.careProvider.has(typ) {
			t.Errorf("care provider type %s missing", typ)
		}
	}
	switch {
	case p.careProvider.has("P1"):
		t.Error("the patient portal type P1 is a care provider")
	case !p.neverRole.has("01.008") || !p.neverRole.has("01.048"):
		t.Error("company or insurance doctor not refused")
	case !p.neverPurpose.has("HPAYMT") || !p.neverPurpose.has("HOPERAT"):
		t.Error("payment or operations not refused")
	case !p.research.has("HRESCH") || !p.research.has("CLINTRL"):
		t.Error("research purposes missing")
	case p.minAssurance != assuranceRank(AssuranceHigh):
		t.Error("minimum assurance is not high")
	case p.breakGlass:
		t.Error("break-the-glass is on by default")
	case !p.emergency.has("ETREAT") || !p.coveredBy.has("TREAT"):
		t.Error("emergency purposes wrong")
	}
	if c, ok := p.roleCategories("01.015"); !ok || !c.all {
		t.Error("huisarts does not see every category")
	}
	if c, ok := p.roleCategories("17.060"); !ok || c.all || !c.has("medication") || c.has("gp-professional-summary") {
		t.Error("ziekenhuisapotheker should see medication only, through the 17.* group")
	}
	if _, ok := p.roleCategories("01.008"); ok {
		t.Error("the company doctor has categories")
	}
	// Every setting in default.yaml is commented, on its line or the line before.
	prev := ""
	for i, line := range strings.Split(string(defaultYAML), "\n") {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") && !strings.Contains(l, "#") && !strings.HasPrefix(prev, "#") {
			t.Errorf("default.yaml line %d is not commented: %q", i+1, l)
		}
		if l != "" {
			prev = l
		}
	}
}

// TestParsePolicyRefuses checks that unknown keys and bad values are refused with ErrPolicy and
// a message naming the setting.
func TestParsePolicyRefuses(t *testing.T) {
	def := string(defaultYAML)
	edit := func(old, new string) string {
		if !strings.Contains(def, old) {
			t.Fatalf("default.yaml has no %q", old)
		}
		return strings.Replace(def, old, new, 1)
	}
	tests := []struct {
		name, yaml, msg string
	}{
		{"empty", "", "empty"},
		{"unknown key", def + "\nbreakTheGlass: true\n", "breakTheGlass"},
		{"unknown nested key", edit("  breakGlass: false", "  breakGlass: false\n  override: true"), "override"},
		{"repeated key", def + "\nminAssurance: high\n", "minAssurance"},
		{"two documents", def + "\n---\nminAssurance: high\n", "more than one"},
		{"not YAML", "careProviderTypes: [Z3", "did not find"},
		{"wrong type", edit("minAssurance: high", "minAssurance: [high]"), "cannot unmarshal !!seq into string"},
		{"portal as care provider", edit("  - Z3   # huisartspraktijk", "  - Z3\n  - P1"), "patient portal"},
		{"malformed organisation type", edit("  - Z3   # huisartspraktijk", "  - huisarts"), "careProviderTypes"},
		{"no care providers", regexp.MustCompile(`(?m)^  - [A-Z][0-9]   #.*\n`).ReplaceAllString(def, ""), "careProviderTypes is empty"},
		{"company doctor dropped", edit(`  - "01.008"   # bedrijfsarts (company doctor)`, ""), "neverRoles must include 01.008"},
		{"payment dropped", edit("  - HPAYMT     # healthcare payment", ""), "neverPurposes must include HPAYMT"},
		{"research floor dropped", edit("  - CLINTRL    # clinical trial", ""), "researchPurposes must include CLINTRL"},
		{"malformed never role", edit(`  - "01.048"   # verzekeringsarts (insurance doctor)`, "  - \"01.048\"\n  - \"1.8\""), "neverRoles"},
		{"purpose both never and research", edit("  - BIORCH     # biomedical research", "  - BIORCH\n  - HMARKT"), "both"},
		{"emergency purpose is research", edit("purposes: [ETREAT]", "purposes: [ETREAT, HRESCH]"), "both"},
		{"lower-case purpose", edit("purposes: [ETREAT]", "purposes: [etreat]"), "emergency.purposes"},
		{"coveredBy an emergency purpose", edit("coveredBy: [TREAT]", "coveredBy: [ETREAT]"), "emergency purpose itself"},
		{"never role given categories", edit(`  "81.000": ["*"]`, `  "81.000": ["*"]`+"\n  \"01.008\": [medication]"), "01.008 is in neverRoles"},
		{"malformed role", edit(`  "81.000": ["*"]`, `  "81.000": ["*"]`+"\n  \"huisarts\": [medication]"), "roles"},
		{"role with no categories", edit(`  "81.000": ["*"]`, `  "81.000": []`), "81.000"},
		{"wildcard with a category", edit(`  "81.000": ["*"]`, `  "81.000": ["*", medication]`), "alone"},
		{"minimum assurance low", edit("minAssurance: high", "minAssurance: low"), "minAssurance"},
		{"minimum assurance missing", edit("minAssurance: high", ""), "minAssurance is required"},
		{"break-the-glass without purposes", strings.Replace(edit("breakGlass: false", "breakGlass: true"), "purposes: [ETREAT]", "purposes: []", 1), "breakGlass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.yaml))
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("ParsePolicy = %v, want ErrPolicy", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParsePolicy = %q, want it to name %q", err, tt.msg)
			}
		})
	}
	if _, err := ParsePolicy(make([]byte, maxPolicySize+1)); !errors.Is(err, ErrPolicy) {
		t.Errorf("ParsePolicy(oversized) = %v, want ErrPolicy", err)
	}
}

// TestLoadPolicy checks reading a policy file.
func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	yaml := strings.Replace(string(defaultYAML), "minAssurance: high", "minAssurance: substantial", 1)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	p, err := LoadPolicy(path)
	if err != nil {
		t.Fatalf("LoadPolicy: %v", err)
	}
	req := baseRequest()
	req.Assurance = AssuranceSubstantial
	if got := p.Decide(req, []Consent{rec("c1", DecisionPermit, anyOrg, all)}, nil); !got.Permit {
		t.Errorf("Decide with minAssurance substantial = %+v, want permitted", got)
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadPolicy(missing file) succeeded")
	}
	if err := os.WriteFile(path, []byte("careProviderTypes: [Z3]\n"), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if _, err := LoadPolicy(path); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadPolicy(incomplete) = %v, want ErrPolicy naming the file", err)
	}
}
