package vc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/schakel-health/schakel/internal/store"
)

// Entry is one organisation in the directory: its OrganizationCredential's subject and, when it has
// published one, its service registration. Only organisations holding a valid OrganizationCredential
// from a trusted register are listed.
type Entry struct {
	DID                 string        `json:"did"`
	Organization        *Organization `json:"organization,omitempty"`
	OrgCredentialID     string        `json:"orgCredentialId,omitempty"`
	OrgIssuedAt         int64         `json:"orgIssuedAt,omitempty"`
	OrgValidUntil       int64         `json:"orgValidUntil,omitempty"`
	Service             *Service      `json:"service,omitempty"`
	ServiceCredentialID string        `json:"serviceCredentialId,omitempty"`
	ServiceIssuedAt     int64         `json:"serviceIssuedAt,omitempty"`
	ServiceValidUntil   int64         `json:"serviceValidUntil,omitempty"`
}

// Query selects directory entries. Fields combine with AND; at least one is required.
type Query struct {
	// Name matches names case- and diacritics-insensitively, as whole words from the start of any
	// word: "jansen" matches "Huisartsenpraktijk Jansen" but not "Janssens". A trailing "*" makes
	// the last word a prefix: "jans*" finds Jansen, Janssens and Janssen-de Hoogh. "*" anywhere
	// else is refused.
	Name string
	URA  string
	Type string
	City string
	// Limit caps the results: 0 means DefaultLimit, at most MaxLimit.
	Limit int
}

// Result limits of a directory query.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Key layout in the "dir" namespace. Every index key ends in 0x00 + DID; its value is the filter
// summary (see summary), so that a search filters on the index alone and reads only the entries it
// returns.
//
//	e/<did>                          → Entry (JSON)
//	n/<name from a word on>\0<did>   one per word start of the normalised name
//	u/<ura>\0<did>
//	t/<type>\0<did>
//	c/<normalised city>\0<did>
//	tc/<type>\0<normalised city>\0<did>  the common "type in city" query
func entryKey(did string) []byte { return append([]byte("e/"), did...) }

// indexEntry is one index key with its value.
type indexEntry struct{ key, value []byte }

func indexKeys(e *Entry) []indexEntry {
	if e.Organization == nil {
		return nil
	}
	o := e.Organization
	city := Normalize(o.City)
	sum := summary{Type: o.Type, City: city, URA: o.URA, ValidUntil: e.OrgValidUntil}.encode()
	var keys []indexEntry
	add := func(prefix, term string) {
		keys = append(keys, indexEntry{[]byte(prefix + term + "\x00" + e.DID), sum})
	}
	name := Normalize(o.Name)
	for i := range name {
		if i == 0 || name[i-1] == ' ' || name[i-1] == '-' {
			add("n/", name[i:])
		}
	}
	add("u/", o.URA)
	add("t/", o.Type)
	add("c/", city)
	add("tc/", o.Type+"\x00"+city)
	return keys
}

// summary is what a search filters on, kept as the value of every index key of an entry.
type summary struct {
	Type, City, URA string
	ValidUntil      int64
}

func (s summary) encode() []byte {
	return []byte(s.Type + "\x00" + s.City + "\x00" + s.URA + "\x00" + strconv.FormatInt(s.ValidUntil, 10))
}

func decodeSummary(b []byte) (summary, bool) {
	f := strings.Split(string(b), "\x00")
	if len(f) != 4 {
		return summary{}, false
	}
	v, err := strconv.ParseInt(f[3], 10, 64)
	return summary{Type: f[0], City: f[1], URA: f[2], ValidUntil: v}, err == nil
}

// Normalize folds a name for matching: Unicode NFD, combining marks removed, lower case, runs of
// white space made one space, trimmed.
func Normalize(s string) string {
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	folded, _, err := transform.String(t, s)
	if err != nil {
		folded = s
	}
	return strings.Join(strings.Fields(strings.ToLower(folded)), " ")
}

func getEntry(tx *store.Txn, did string) (*Entry, error) {
	raw, err := tx.Get(nsDir, entryKey(did))
	if errors.Is(err, store.ErrNotFound) {
		return &Entry{DID: did}, nil
	}
	if err != nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("decode directory entry %s: %w", did, err)
	}
	return &e, nil
}

func putEntry(tx *store.Txn, old, e *Entry) error {
	for _, k := range indexKeys(old) {
		if err := tx.Delete(nsDir, k.key); err != nil {
			return err
		}
	}
	if e.Organization == nil && e.Service == nil {
		return tx.Delete(nsDir, entryKey(e.DID))
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := tx.Set(nsDir, entryKey(e.DID), raw); err != nil {
		return err
	}
	for _, k := range indexKeys(e) {
		if err := tx.Set(nsDir, k.key, k.value); err != nil {
			return err
		}
	}
	return nil
}

// indexCredential puts a verified credential into the directory if it is newer than what the entry
// holds for its kind.
func indexCredential(tx *store.Txn, c *Credential) error {
	if c.Kind != OrganizationCredential && c.Kind != ServiceRegistrationCredential {
		return nil
	}
	old, err := getEntry(tx, c.Subject)
	if err != nil {
		return err
	}
	e := *old
	switch c.Kind {
	case OrganizationCredential:
		if e.Organization != nil && e.OrgIssuedAt > c.IssuedAt.Unix() {
			return nil
		}
		e.Organization, e.OrgCredentialID = c.Organization, c.ID
		e.OrgIssuedAt, e.OrgValidUntil = c.IssuedAt.Unix(), c.ValidUntil.Unix()
	case ServiceRegistrationCredential:
		if e.Service != nil && e.ServiceIssuedAt > c.IssuedAt.Unix() {
			return nil
		}
		e.Service, e.ServiceCredentialID = c.Service, c.ID
		e.ServiceIssuedAt, e.ServiceValidUntil = c.IssuedAt.Unix(), c.ValidUntil.Unix()
	}
	return putEntry(tx, old, &e)
}

// unindexCredential removes a revoked credential from the directory entry that names it.
func unindexCredential(tx *store.Txn, c *Credential) error {
	old, err := getEntry(tx, c.Subject)
	if err != nil {
		return err
	}
	e := *old
	switch {
	case c.Kind == OrganizationCredential && e.OrgCredentialID == c.ID:
		e.Organization, e.OrgCredentialID, e.OrgIssuedAt, e.OrgValidUntil = nil, "", 0, 0
	case c.Kind == ServiceRegistrationCredential && e.ServiceCredentialID == c.ID:
		e.Service, e.ServiceCredentialID, e.ServiceIssuedAt, e.ServiceValidUntil = nil, "", 0, 0
	default:
		return nil
	}
	return putEntry(tx, old, &e)
}

// Search answers a directory query from the indexes: it walks the most selective index the query
// names and checks the other fields on each entry, so its cost follows the number of matches, not the
// size of the directory. Expired organisation credentials are left out.
func (s *Store) Search(ctx context.Context, q Query) ([]Entry, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return nil, fmt.Errorf("%w: limit %d outside 1–%d", ErrInvalidQuery, limit, MaxLimit)
	}
	name := Normalize(q.Name)
	prefixMatch := strings.HasSuffix(name, "*")
	name = strings.TrimSuffix(name, "*")
	if strings.Contains(name, "*") {
		return nil, fmt.Errorf("%w: %q: only a trailing * is supported", ErrInvalidQuery, clip(q.Name))
	}
	if q.Name != "" && name == "" {
		return nil, fmt.Errorf("%w: name pattern needs at least one character before *", ErrInvalidQuery)
	}
	city := Normalize(q.City)
	var prefix []byte
	switch {
	case name != "":
		prefix = []byte("n/" + name)
	case q.URA != "":
		prefix = []byte("u/" + q.URA + "\x00")
	case q.Type != "" && city != "":
		prefix = []byte("tc/" + q.Type + "\x00" + city + "\x00")
	case q.Type != "":
		prefix = []byte("t/" + q.Type + "\x00")
	case city != "":
		prefix = []byte("c/" + city + "\x00")
	default:
		return nil, fmt.Errorf("%w: give a name, URA, type or city", ErrInvalidQuery)
	}
	now := s.now().Unix()
	var out []Entry
	err := s.db.View(ctx, func(tx *store.Txn) error {
		seen := map[string]bool{}
		return tx.Iterate(nsDir, prefix, store.IterOptions{}, func(k, v []byte) error {
			// Without a trailing *, the name must end where a word ends.
			if name != "" && !prefixMatch {
				if next := k[len(prefix):][0]; next != 0 && next != ' ' && next != '-' {
					return nil
				}
			}
			sum, ok := decodeSummary(v)
			switch {
			case !ok:
				return fmt.Errorf("directory index %q: bad summary", k)
			case sum.ValidUntil <= now,
				q.URA != "" && sum.URA != q.URA,
				q.Type != "" && sum.Type != q.Type,
				city != "" && sum.City != city:
				return nil
			}
			did := string(k[bytes.LastIndexByte(k, 0)+1:])
			if seen[did] {
				return nil
			}
			seen[did] = true
			e, err := getEntry(tx, did)
			if err != nil {
				return err
			}
			if e.Organization == nil {
				return fmt.Errorf("directory index %q names an entry without organisation", k)
			}
			if e.Service != nil && e.ServiceValidUntil <= now {
				e.Service, e.ServiceCredentialID = nil, ""
			}
			out = append(out, *e)
			if len(out) >= limit {
				return store.ErrStop
			}
			return nil
		})
	})
	return out, err
}
