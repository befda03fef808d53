package consent

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// bsn passes the 11-proof; no error message may repeat it.
const bsn = "111222333"

// TestGrantors checks the WGBO age rules on who gives a consent.
func TestGrantors(t *testing.T) {
	tests := []struct {
		name     string
		birth    time.Time
		grantors []GrantorRole
		ok       bool
		msg      string // part of the error message
	}{
		{"15 with self only", born(15), []GrantorRole{GrantorSelf}, false, "a patient of 15 needs a parent's or guardian's consent as well as their own"},
		{"15 with parent and self", born(15), []GrantorRole{GrantorParent, GrantorSelf}, true, ""},
		{"13 with guardian and self", born(13), []GrantorRole{GrantorGuardian, GrantorSelf}, true, ""},
		{"13 with parent only", born(13), []GrantorRole{GrantorParent}, false, "must consent themselves as well"},
		{"12 with legal representative and self", born(12), []GrantorRole{GrantorRepresentative, GrantorSelf}, true, ""},
		{"10 with parent", born(10), []GrantorRole{GrantorParent}, true, ""},
		{"10 with self only", born(10), []GrantorRole{GrantorSelf}, false, "a patient of 10 needs the consent of a parent"},
		{"11 with guardian", born(11), []GrantorRole{GrantorGuardian}, true, ""},
		{"17 with self", born(17), []GrantorRole{GrantorSelf}, true, ""},
		{"17 with parent only", born(17), []GrantorRole{GrantorParent}, false, "a parent's or guardian's consent does not suffice"},
		{"40 with legal representative", born(40), []GrantorRole{GrantorRepresentative}, true, ""},
		{"16 today with self", time.Date(t0.Year()-16, t0.Month(), t0.Day(), 0, 0, 0, 0, time.UTC), []GrantorRole{GrantorSelf}, true, ""},
		{"16 tomorrow with self only", time.Date(t0.Year()-16, t0.Month(), t0.Day()+1, 0, 0, 0, 0, time.UTC), []GrantorRole{GrantorSelf}, false, "a patient of 15"},
		{"unknown birth date with self", time.Time{}, []GrantorRole{GrantorSelf}, true, ""},
		{"unknown birth date with parent", time.Time{}, []GrantorRole{GrantorParent}, false, "treated as an adult"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := adultConsent()
			c.PatientBirthDate, c.Grantors = tt.birth, tt.grantors
			err := c.Validate(t0)
			if tt.ok {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrGrantor) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrGrantor and ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Validate = %q, want it to say %q", err, tt.msg)
			}
		})
	}
}

// TestAgeOn checks ages around birthdays, including 29 February.
func TestAgeOn(t *testing.T) {
	leap := time.Date(2012, 2, 29, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		birth, at time.Time
		want      int
	}{
		{leap, time.Date(2028, 2, 28, 12, 0, 0, 0, time.UTC), 15},
		{leap, time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), 16},
		{leap, time.Date(2027, 2, 28, 12, 0, 0, 0, time.UTC), 14},
		{leap, time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC), 15},
		{time.Date(2000, 6, 15, 0, 0, 0, 0, time.UTC), time.Date(2016, 6, 14, 12, 0, 0, 0, time.UTC), 15},
		{time.Date(2000, 6, 15, 0, 0, 0, 0, time.UTC), time.Date(2016, 6, 15, 12, 0, 0, 0, time.UTC), 16},
	}
	for _, tt := range tests {
		if got := AgeOn(tt.birth, tt.at); got != tt.want {
			t.Errorf("AgeOn(%s, %s) = %d, want %d", tt.birth.Format(time.DateOnly), tt.at.Format(time.DateOnly), got, tt.want)
		}
	}
}

// TestValidate checks that each malformed field is refused with ErrInvalid and a message that
// names it, and never repeats a BSN.
func TestValidate(t *testing.T) {
	long := strings.Repeat("x", 600)
	tests := []struct {
		name   string
		change func(*Consent)
		msg    string
	}{
		{"custodian not a DID", func(c *Consent) { c.Custodian = "huisarts" }, "custodian"},
		{"custodian too long", func(c *Consent) { c.Custodian = "did:" + long }, "custodian"},
		{"custodian with a space", func(c *Consent) { c.Custodian = "did:a b" }, "custodian"},
		{"no patient", func(c *Consent) { c.Patient = "" }, "patient"},
		{"patient with NUL", func(c *Consent) { c.Patient = "v1.a\x00b" }, "patient"},
		{"unknown decision", func(c *Consent) { c.Decision = "maybe" }, "decision"},
		{"basis too long", func(c *Consent) { c.Basis = long }, "basis"},
		{"basis with control character", func(c *Consent) { c.Basis = "a\nb" }, "basis"},
		{"basis with a BSN", func(c *Consent) { c.Basis = "formulier van " + bsn }, "looks like a BSN"},
		{"no grantee", func(c *Consent) { c.Grantee = Grantee{} }, "want exactly one"},
		{"two grantee forms", func(c *Consent) { c.Grantee = Grantee{Org: hospital, Any: true} }, "want exactly one"},
		{"grantee org not a DID", func(c *Consent) { c.Grantee = Grantee{Org: "ziekenhuis"} }, "grantee org"},
		{"grantee type malformed", func(c *Consent) { c.Grantee = Grantee{OrgType: "v6"} }, "orgType"},
		{"no data categories", func(c *Consent) { c.DataCategories = nil }, "data category"},
		{"wildcard with others", func(c *Consent) { c.DataCategories = []string{"*", "medication"} }, "alone"},
		{"category with spaces", func(c *Consent) { c.DataCategories = []string{"gp summary"} }, "data category"},
		{"category that is a BSN", func(c *Consent) { c.DataCategories = []string{bsn} }, "data category"},
		{"too many categories", func(c *Consent) { c.DataCategories = make([]string, 33) }, "data categor"},
		{"no purposes", func(c *Consent) { c.Purposes = []string{} }, "purpose"},
		{"lower-case purpose", func(c *Consent) { c.Purposes = []string{"treat"} }, "PurposeOfUse"},
		{"purpose wildcard with others", func(c *Consent) { c.Purposes = []string{"TREAT", "*"} }, "alone"},
		{"period backwards", func(c *Consent) { c.ValidFrom, c.ValidUntil = t0, t0.Add(-time.Hour) }, "validUntil"},
		{"period empty", func(c *Consent) { c.ValidFrom, c.ValidUntil = t0, t0 }, "validUntil"},
		{"until before recording", func(c *Consent) { c.ValidUntil = t0.Add(-time.Hour) }, "validUntil"},
		{"no grantors", func(c *Consent) { c.Grantors = nil }, "grantors"},
		{"unknown grantor", func(c *Consent) { c.Grantors = []GrantorRole{"neighbour"} }, "grantor"},
		{"born after the consent", func(c *Consent) { c.PatientBirthDate = t0.AddDate(0, 0, 2) }, "date of birth"},
		{"born too long ago", func(c *Consent) { c.PatientBirthDate = t0.AddDate(-131, 0, 0) }, "date of birth"},
		{"unknown channel", func(c *Consent) { c.Channel = "fax" }, "channel"},
		{"unknown assurance", func(c *Consent) { c.Assurance = "" }, "assurance"},
		{"requestedBy not a DID", func(c *Consent) { c.RequestedBy = "portal" }, "requestedBy"},
		{"requestId too long", func(c *Consent) { c.RequestID = long }, "requestId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := adultConsent()
			tt.change(&c)
			err := c.Validate(t0)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Validate = %q, want it to name %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), bsn) {
				t.Errorf("Validate = %q repeats the BSN", err)
			}
		})
	}
	c := adultConsent()
	if err := c.Validate(t0); err != nil {
		t.Fatalf("Validate(valid consent): %v", err)
	}
}
