package consent

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Decision is what a patient decided: a permission or an objection.
type Decision string

// Decisions.
const (
	DecisionPermit    Decision = "permit"
	DecisionObjection Decision = "objection"
)

// Status is where a consent record is in its life. Only StatusActive records are in force.
//
//	Request ──► pending ──Process(Accept)──► active ──Revoke──► revoked
//	                    └─Process(Reject)──► rejected   │
//	Record ─────────────────────────────────► active ──a newer consent of the same scope──► superseded
type Status string

// Statuses.
const (
	StatusActive     Status = "active"
	StatusPending    Status = "pending"
	StatusRejected   Status = "rejected"
	StatusRevoked    Status = "revoked"
	StatusSuperseded Status = "superseded"
)

// Channel is how the consent reached the custodian.
type Channel string

// Channels: said at the desk, a signed paper form, or online through a patient portal.
const (
	ChannelDesk   Channel = "desk"
	ChannelForm   Channel = "form"
	ChannelOnline Channel = "online"
)

// GrantorRole is who gave the consent, relative to the patient.
type GrantorRole string

// Grantor roles.
const (
	GrantorSelf           GrantorRole = "self"
	GrantorParent         GrantorRole = "parent"
	GrantorGuardian       GrantorRole = "guardian" // voogd
	GrantorRepresentative GrantorRole = "legal-representative"
)

// Assurance levels (eIDAS): of the channel a consent came through, and of a professional's
// authentication in a Request.
const (
	AssuranceLow         = "low"
	AssuranceSubstantial = "substantial"
	AssuranceHigh        = "high"
)

// Wildcard, as a data category or purpose of a consent, stands for every category or every
// purpose. A "*" purpose never covers a research purpose (see Policy.Decide).
const Wildcard = "*"

// Grantee is to whom a consent applies: exactly one of Org (one organisation's DID), OrgType (a
// RoleCodeNL organisation type, such as V6 algemeen ziekenhuis) or Any (any care provider).
type Grantee struct {
	Org     string `json:"org,omitempty"`
	OrgType string `json:"orgType,omitempty"`
	Any     bool   `json:"any,omitempty"`
}

// Consent is one consent record kept by the custodian. The fields marked "assigned" are set by
// the Store; Record and Request refuse a consent that sets them.
type Consent struct {
	// ID is "urn:uuid:<v4 UUID>" (assigned).
	ID string `json:"id"`
	// Custodian is the DID of the organisation that holds the data and the record.
	Custodian string `json:"custodian"`
	// Patient is the custodian's keyed pseudonym of the patient's BSN, under the pseudonym secret
	// version current when the consent was recorded. The BSN itself is never stored here.
	Patient string `json:"patient"`
	// Decision is permit or objection.
	Decision Decision `json:"decision"`
	// Basis is the legal basis or form reference, free text of at most 512 bytes; optional.
	Basis string `json:"basis,omitempty"`
	// Grantee is to whom the consent applies.
	Grantee Grantee `json:"grantee"`
	// DataCategories are the categories covered, such as "medication" or
	// "gp-professional-summary"; ["*"] covers all. Stored sorted and without duplicates.
	DataCategories []string `json:"dataCategories"`
	// Purposes are HL7 PurposeOfUse codes (TREAT, ETREAT, HRESCH, CLINTRL …); ["*"] covers every
	// purpose except research. Stored sorted and without duplicates.
	Purposes []string `json:"purposes"`
	// ValidFrom is when the consent comes into force; zero means when it is recorded.
	ValidFrom time.Time `json:"validFrom"`
	// ValidUntil is when it ends (exclusive); zero means open-ended.
	ValidUntil time.Time `json:"validUntil,omitzero"`
	// Grantors are who gave it; see Validate for the age rules. Stored sorted, no duplicates.
	Grantors []GrantorRole `json:"grantors"`
	// PatientBirthDate is the date of birth as known at the custodian (only the calendar date
	// counts); the age rules use it. Zero means unknown: the patient is treated as an adult.
	PatientBirthDate time.Time `json:"patientBirthDate,omitzero"`
	// Channel is how the consent was given.
	Channel Channel `json:"channel"`
	// Assurance is the assurance level of the channel: low, substantial or high.
	Assurance string `json:"assurance"`
	// Supersedes is the id of the consent of the same scope this one replaced (assigned).
	Supersedes string `json:"supersedes,omitempty"`
	// SupersededBy is the id of the consent that replaced this one (assigned).
	SupersededBy string `json:"supersededBy,omitempty"`
	// Status is where the record is in its life (assigned).
	Status Status `json:"status"`
	// Reason says why a request was rejected or a consent revoked or superseded (assigned).
	Reason string `json:"reason,omitempty"`
	// RequestedBy is the DID of the patient portal that relayed an online request.
	RequestedBy string `json:"requestedBy,omitempty"`
	// RequestID is the portal's id of the request, for the notice back; at most 128 bytes.
	RequestID string `json:"requestId,omitempty"`
	// Created and Updated are when the record was made and last changed (assigned).
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Limits on a consent's fields.
const (
	maxID         = 128
	maxDID        = 256
	maxPseudonym  = 128
	maxCode       = 64
	maxOrgType    = 8
	maxText       = 512
	maxCategories = 32
	maxPurposes   = 16
	maxGrantors   = 4
	maxAgeYears   = 130
)

// Validate checks the fields a caller supplies, as of the day given on which the consent is
// given: identifiers well formed and bounded, enums known, exactly one grantee form, at least one
// data category and purpose ("*" only alone), ValidUntil after ValidFrom, and the WGBO grantor
// rules for the patient's age on that day (from PatientBirthDate):
//
//   - under 12: a parent, guardian or legal representative must be among the grantors;
//   - 12 to 15: the patient (self) and a parent, guardian or legal representative;
//   - 16 and over: the patient or a legal representative; a parent alone does not suffice;
//   - date of birth unknown: treated as an adult.
//
// Breaking the age rules gives an error wrapping ErrGrantor and ErrInvalid; anything else
// ErrInvalid. Validate does not look at the assigned fields (ID, Status, …).
func (c *Consent) Validate(given time.Time) error {
	if err := c.validateFields(given); err != nil {
		return err
	}
	return checkGrantors(c.Grantors, c.PatientBirthDate, given)
}

func (c *Consent) validateFields(given time.Time) error {
	switch {
	case !validDID(c.Custodian):
		return invalid("custodian is not a DID of at most %d bytes", maxDID)
	case !validToken(c.Patient, maxPseudonym):
		return invalid("patient is not a pseudonym of 1 to %d printable ASCII characters", maxPseudonym)
	case c.Decision != DecisionPermit && c.Decision != DecisionObjection:
		return invalid("decision %q is not %q or %q", clip(string(c.Decision)), DecisionPermit, DecisionObjection)
	}
	if err := validText("basis", c.Basis); err != nil {
		return err
	}
	if err := c.Grantee.validate(); err != nil {
		return err
	}
	if err := validList(categoryCodes, c.DataCategories, maxCategories); err != nil {
		return err
	}
	if err := validList(purposeCodes, c.Purposes, maxPurposes); err != nil {
		return err
	}
	from := c.ValidFrom
	if from.IsZero() {
		from = given
	}
	if !c.ValidUntil.IsZero() && !c.ValidUntil.After(from) {
		return invalid("validUntil %s is not after validFrom %s", c.ValidUntil.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	if n := len(c.Grantors); n == 0 || n > maxGrantors {
		return invalid("%d grantors, want 1 to %d", n, maxGrantors)
	}
	for _, g := range c.Grantors {
		switch g {
		case GrantorSelf, GrantorParent, GrantorGuardian, GrantorRepresentative:
		default:
			return invalid("grantor %q is not self, parent, guardian or legal-representative", clip(string(g)))
		}
	}
	if b := c.PatientBirthDate; !b.IsZero() {
		day := dateOf(b)
		if day.After(given) {
			return invalid("patient's date of birth is after the day the consent is given")
		}
		if day.Before(given.AddDate(-maxAgeYears, 0, 0)) {
			return invalid("patient's date of birth is more than %d years before the consent", maxAgeYears)
		}
	}
	switch c.Channel {
	case ChannelDesk, ChannelForm, ChannelOnline:
	default:
		return invalid("channel %q is not desk, form or online", clip(string(c.Channel)))
	}
	if assuranceRank(c.Assurance) == 0 {
		return invalid("assurance %q is not low, substantial or high", clip(c.Assurance))
	}
	if c.RequestedBy != "" && !validDID(c.RequestedBy) {
		return invalid("requestedBy is not a DID of at most %d bytes", maxDID)
	}
	if c.RequestID != "" && !validToken(c.RequestID, maxID) {
		return invalid("requestId is not 1 to %d printable ASCII characters", maxID)
	}
	return nil
}

// validate checks that exactly one grantee form is given and well formed.
func (g Grantee) validate() error {
	n := 0
	if g.Org != "" {
		n++
		if !validDID(g.Org) {
			return invalid("grantee org is not a DID of at most %d bytes", maxDID)
		}
	}
	if g.OrgType != "" {
		n++
		if !validOrgType(g.OrgType) {
			return invalid("grantee orgType %q is not a RoleCodeNL code (1 to %d upper-case letters and digits)", clip(g.OrgType), maxOrgType)
		}
	}
	if g.Any {
		n++
	}
	if n != 1 {
		return invalid("grantee names %d of org, orgType and any; want exactly one", n)
	}
	return nil
}

// checkGrantors applies the WGBO age rules; see Consent.Validate.
func checkGrantors(grantors []GrantorRole, birth, given time.Time) error {
	var self, parent, rep bool
	for _, g := range grantors {
		switch g {
		case GrantorSelf:
			self = true
		case GrantorParent, GrantorGuardian:
			parent = true
		case GrantorRepresentative:
			rep = true
		}
	}
	adultRule := func(age string) error {
		if self || rep {
			return nil
		}
		return grantorErr("%s gives consent themselves or through a legal representative; a parent's or guardian's consent does not suffice", age)
	}
	if birth.IsZero() {
		return adultRule("a patient whose date of birth is unknown is treated as an adult and")
	}
	age := AgeOn(birth, given)
	switch {
	case age < 12:
		if parent || rep {
			return nil
		}
		return grantorErr("a patient of %d needs the consent of a parent, guardian or legal representative", age)
	case age < 16:
		switch {
		case self && (parent || rep):
			return nil
		case self:
			return grantorErr("a patient of %d needs a parent's or guardian's consent as well as their own", age)
		case parent || rep:
			return grantorErr("a patient of %d must consent themselves as well as a parent or guardian", age)
		default:
			return grantorErr("a patient of %d needs their own consent and a parent's or guardian's", age)
		}
	default:
		return adultRule(fmt.Sprintf("a patient of %d", age))
	}
}

func grantorErr(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrInvalid, ErrGrantor, fmt.Sprintf(format, args...))
}

// AgeOn returns the age in whole years, on the calendar day of at in the Netherlands, of a person
// born on the calendar date of birth. Someone born on 29 February has their birthday on 1 March
// in other years.
func AgeOn(birth, at time.Time) int {
	by, bm, bd := birth.Date()
	y, m, d := at.In(dutchTime()).Date()
	age := y - by
	if m < bm || (m == bm && d < bd) {
		age--
	}
	return age
}

// dutchTime is Europe/Amsterdam, or UTC where the system has no time zone database: the age rules
// then err by at most a day around midnight.
var dutchTime = sync.OnceValue(func() *time.Location {
	if loc, err := time.LoadLocation("Europe/Amsterdam"); err == nil {
		return loc
	}
	return time.UTC
})

// dateOf returns the calendar date of t (in t's own location) as midnight UTC.
func dateOf(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// normalize puts a validated consent in its stored form: times in UTC without monotonic reading,
// the date of birth as a date, sets sorted and without duplicates.
func (c *Consent) normalize() {
	c.ValidFrom = utc(c.ValidFrom)
	c.ValidUntil = utc(c.ValidUntil)
	if !c.PatientBirthDate.IsZero() {
		c.PatientBirthDate = dateOf(c.PatientBirthDate)
	}
	c.DataCategories = sortedSet(c.DataCategories)
	c.Purposes = sortedSet(c.Purposes)
	c.Grantors = sortedSet(c.Grantors)
}

func sortedSet[T ~string](s []T) []T {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Round(0)
}
