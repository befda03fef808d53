package consent

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

//go:embed default.yaml
var defaultYAML []byte

// Policy is the access policy Decide applies: which organisation types, employee roles and
// purposes may ever get access, which roles see which data categories, the minimum assurance,
// research and emergency handling. It is immutable once parsed and safe for concurrent use.
type Policy struct {
	careProvider set
	neverRole    set
	neverPurpose set
	research     set
	emergency    set
	coveredBy    set
	// roles maps an exact role code ("01.015") and roleGroups a profession prefix ("01.", from
	// "01.*") to the data categories it may see.
	roles        map[string]categories
	roleGroups   map[string]categories
	minAssurance int
	breakGlass   bool
}

type set map[string]struct{}

func (s set) has(k string) bool { _, ok := s[k]; return ok }

func newSet(list []string) set {
	s := make(set, len(list))
	for _, k := range list {
		s[k] = struct{}{}
	}
	return s
}

// categories is what one role may see: every category, or those in the set.
type categories struct {
	all bool
	set set
}

func (c categories) has(cat string) bool { return c.all || c.set.has(cat) }

// policyFile is the YAML form of a Policy; default.yaml documents every setting.
type policyFile struct {
	CareProviderTypes []string            `yaml:"careProviderTypes"`
	NeverRoles        []string            `yaml:"neverRoles"`
	NeverPurposes     []string            `yaml:"neverPurposes"`
	ResearchPurposes  []string            `yaml:"researchPurposes"`
	Roles             map[string][]string `yaml:"roles"`
	MinAssurance      string              `yaml:"minAssurance"`
	Emergency         struct {
		BreakGlass bool     `yaml:"breakGlass"`
		Purposes   []string `yaml:"purposes"`
		CoveredBy  []string `yaml:"coveredBy"`
	} `yaml:"emergency"`
}

// Legal floors: a policy may add to these lists, never drop from them (DESIGN §5).
var (
	floorNeverRoles       = []string{"01.008", "01.048"}
	floorNeverPurposes    = []string{"HPAYMT", "HOPERAT"}
	floorResearchPurposes = []string{"HRESCH", "CLINTRL"}
)

// portalType is schakel's own organisation type for a patient portal, which is no care provider.
const portalType = "P1"

// maxPolicySize bounds a policy file.
const maxPolicySize = 1 << 20

// DefaultPolicy returns the Dutch default policy embedded from default.yaml: every care
// provider type of the national exchange, company and insurance doctors refused, payment and
// operations refused, research only with its own consent, role-based categories, assurance high,
// break-the-glass off. The result is shared and immutable.
func DefaultPolicy() *Policy { return defaultPolicy() }

var defaultPolicy = sync.OnceValue(func() *Policy {
	p, err := ParsePolicy(defaultYAML)
	if err != nil {
		panic("consent: embedded default.yaml: " + err.Error())
	}
	return p
})

// LoadPolicy reads and parses the policy file at path (at most 1 MiB).
func LoadPolicy(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", path, err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a policy in the YAML form of default.yaml, strictly: one document of at
// most 1 MiB, no unknown or repeated keys, every code well formed, the legal floors kept
// (neverRoles has 01.008 and 01.048, neverPurposes HPAYMT and HOPERAT, researchPurposes HRESCH
// and CLINTRL), no purpose in two of the never, research and emergency lists, no never role given
// categories, P1 (a patient portal) not a care provider, minAssurance substantial or high. Errors
// wrap ErrPolicy and name the setting.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > maxPolicySize {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrPolicy, len(b), maxPolicySize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f policyFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty", ErrPolicy)
		}
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrPolicy)
	}
	return f.compile()
}

func (f *policyFile) compile() (*Policy, error) {
	p := &Policy{
		careProvider: newSet(f.CareProviderTypes),
		neverRole:    newSet(f.NeverRoles),
		neverPurpose: newSet(f.NeverPurposes),
		research:     newSet(f.ResearchPurposes),
		emergency:    newSet(f.Emergency.Purposes),
		coveredBy:    newSet(f.Emergency.CoveredBy),
		roles:        make(map[string]categories),
		roleGroups:   make(map[string]categories),
		minAssurance: assuranceRank(f.MinAssurance),
		breakGlass:   f.Emergency.BreakGlass,
	}
	if len(f.CareProviderTypes) == 0 {
		return nil, policyErr("careProviderTypes is empty: no organisation could ever get access")
	}
	for _, t := range f.CareProviderTypes {
		switch {
		case !validOrgType(t):
			return nil, policyErr("careProviderTypes: %q is not a RoleCodeNL organisation type", clip(t))
		case t == portalType:
			return nil, policyErr("careProviderTypes: %s is a patient portal, not a care provider", portalType)
		}
	}
	for _, r := range f.NeverRoles {
		if !validRole(r) {
			return nil, policyErr("neverRoles: %q is not an UZI role code NN.NNN", clip(r))
		}
	}
	lists := []struct {
		name string
		list []string
	}{
		{"neverPurposes", f.NeverPurposes},
		{"researchPurposes", f.ResearchPurposes},
		{"emergency.purposes", f.Emergency.Purposes},
		{"emergency.coveredBy", f.Emergency.CoveredBy},
	}
	for _, l := range lists {
		for _, x := range l.list {
			if !validPurpose(x) {
				return nil, policyErr("%s: %q is not a PurposeOfUse code (2 to 16 of A-Z, 0-9, _)", l.name, clip(x))
			}
		}
	}
	for _, floor := range []struct {
		name       string
		have, need []string
	}{
		{"neverRoles", f.NeverRoles, floorNeverRoles},
		{"neverPurposes", f.NeverPurposes, floorNeverPurposes},
		{"researchPurposes", f.ResearchPurposes, floorResearchPurposes},
	} {
		for _, n := range floor.need {
			if !slices.Contains(floor.have, n) {
				return nil, policyErr("%s must include %s: the law allows no exception", floor.name, n)
			}
		}
	}
	for i, a := range lists {
		for _, b := range lists[i+1:] {
			if a.name == "emergency.purposes" && b.name == "emergency.coveredBy" {
				continue
			}
			for _, x := range a.list {
				if slices.Contains(b.list, x) {
					return nil, policyErr("purpose %s is in both %s and %s", x, a.name, b.name)
				}
			}
		}
	}
	for _, x := range f.Emergency.CoveredBy {
		if p.emergency.has(x) {
			return nil, policyErr("emergency.coveredBy: %s is an emergency purpose itself", x)
		}
	}
	if f.Emergency.BreakGlass && len(f.Emergency.Purposes) == 0 {
		return nil, policyErr("emergency.breakGlass is on but emergency.purposes is empty")
	}
	if len(f.Roles) == 0 {
		return nil, policyErr("roles is empty: no professional could ever see anything")
	}
	for role, cats := range f.Roles {
		group := len(role) == 4 && role[3] == '*' && validRole(role[:3]+"000")
		if !group && !validRole(role) {
			return nil, policyErr("roles: %q is not an UZI role code NN.NNN or group NN.*", clip(role))
		}
		if p.neverRole.has(role) {
			return nil, policyErr("roles: %s is in neverRoles", role)
		}
		if err := validList(categoryCodes, cats, maxCategories); err != nil {
			return nil, policyErr("roles: %s: %s", role, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
		}
		c := categories{all: cats[0] == Wildcard, set: newSet(cats)}
		if group {
			p.roleGroups[role[:3]] = c
		} else {
			p.roles[role] = c
		}
	}
	switch f.MinAssurance {
	case AssuranceSubstantial, AssuranceHigh:
	case "":
		return nil, policyErr("minAssurance is required: high, or substantial where configured")
	default:
		return nil, policyErr("minAssurance %q is not substantial or high", clip(f.MinAssurance))
	}
	return p, nil
}

func policyErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPolicy, fmt.Sprintf(format, args...))
}

// roleCategories returns what role may see: its exact entry, else its profession group's.
func (p *Policy) roleCategories(role string) (categories, bool) {
	if c, ok := p.roles[role]; ok {
		return c, true
	}
	if len(role) == 6 {
		c, ok := p.roleGroups[role[:3]]
		return c, ok
	}
	return categories{}, false
}
