package consent

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/schakel-health/schakel/crypto"
	"time"

	"github.com/schakel-health/schakel/internal/store"
)

var ns = store.MustNamespace("consent")

// Key layout in the "consent" namespace. Custodians, pseudonyms, ids and statuses are printable
// ASCII (validToken), so 0x00 separates them unambiguously and a prefix that ends in 0x00 never
// matches a longer custodian or pseudonym.
//
//	r/<custodian> 00 <patient> 00                     → empty: the patient has records here
//	r/<custodian> 00 <patient> 00 <id>                → record: version byte, then JSON
//	i/<id>                                            → <custodian> 00 <patient>: where record <id> is
//	s/<custodian> 00 <status> 00 <created ns BE> <id> → <patient>: records by status, oldest first
//	g/<id>                                            → grant: version byte, then JSON
//	p/<successor> 00 <predecessor>                    → empty: a succession
//	u/<seq BE>                                        → a change not yet logged: version byte, then JSON
//
// The r/ prefix of (custodian, patient) is the index behind ForPatient: one seek in badger's LSM
// tree, O(log n) in the number of stored consents, then only that patient's records. The prefix
// itself is also a key, the marker: a point lookup of it is answered by badger's bloom filters
// without reading a block when the pair has no records (no consent recorded, an old pseudonym
// version or a predecessor with none), so that the common empty case costs no seek at all.
func recordPrefix(custodian, patient string) []byte {
	k := make([]byte, 0, 2+len(custodian)+1+len(patient)+1)
	k = append(k, "r/"...)
	k = append(k, custodian...)
	k = append(k, 0)
	k = append(k, patient...)
	return append(k, 0)
}

func recordKey(custodian, patient, id string) []byte {
	return append(recordPrefix(custodian, patient), id...)
}

// forRecords calls fn with the stored value of every record of patient at custodian, in id
// order: a bloom-filtered point lookup of the marker, then one prefix seek if it exists.
func forRecords(tx *store.Txn, custodian, patient string, fn func(v []byte) error) error {
	prefix := recordPrefix(custodian, patient)
	if ok, err := tx.Has(ns, prefix); err != nil || !ok {
		return err
	}
	return tx.Iterate(ns, prefix, store.IterOptions{}, func(k, v []byte) error {
		if len(k) == len(prefix) {
			return nil // the marker
		}
		return fn(v)
	})
}

func idKey(id string) []byte { return append([]byte("i/"), id...) }

func statusPrefix(custodian string, st Status) []byte {
	k := make([]byte, 0, 2+len(custodian)+1+len(st)+1+8+maxID)
	k = append(k, "s/"...)
	k = append(k, custodian...)
	k = append(k, 0)
	k = append(k, st...)
	return append(k, 0)
}

func statusKey(c *Consent) []byte {
	k := statusPrefix(c.Custodian, c.Status)
	k = binary.BigEndian.AppendUint64(k, uint64(c.Created.UnixNano()))
	return append(k, c.ID...)
}

func grantKey(id string) []byte { return append([]byte("g/"), id...) }

// unloggedPrefix is the prefix of the marks of changes whose log entries are not yet written.
var unloggedPrefix = []byte("u/")

// unloggedKey is the mark of the seq-th change not yet logged: in commit order.
func unloggedKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), unloggedPrefix...), seq)
}

// unloggedSeq is the number in a mark's key; 0 for a malformed key.
func unloggedSeq(k []byte) uint64 {
	if len(k) != len(unloggedPrefix)+8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(unloggedPrefix):])
}

func successionPrefix(successor string) []byte {
	k := append([]byte("p/"), successor...)
	return append(k, 0)
}

func successionKey(successor, predecessor string) []byte {
	return append(successionPrefix(successor), predecessor...)
}

// formatV1 is the first byte of every stored record and grant: the version of the JSON that
// follows. A reader refuses any other version with ErrCorrupt.
const formatV1 = 1

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("consent: encode: %w", err)
	}
	return append([]byte{formatV1}, b...), nil
}

// decode reads a stored value strictly: known version, no unknown members, nothing after the
// value.
func decode(raw []byte, v any) error {
	if len(raw) == 0 || raw[0] != formatV1 {
		return fmt.Errorf("%w: stored value of format %d, this build reads %d", ErrCorrupt, first(raw), formatV1)
	}
	dec := json.NewDecoder(bytes.NewReader(raw[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the value", ErrCorrupt)
	}
	return nil
}

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// newID returns "urn:uuid:" and a random (version 4) UUID, RFC 9562 §5.4. It never returns one
// with nine digits in a row that pass the 11-proof (about one in 200 would): ids appear in error
// messages and logs, and read functions refuse ids that look like they hold a BSN.
func newID() (string, error) {
	for {
		var u [16]byte
		if _, err := rand.Read(u[:]); err != nil {
			return "", fmt.Errorf("consent: new id: %w", err)
		}
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		var buf [36]byte
		hex.Encode(buf[0:8], u[0:4])
		buf[8] = '-'
		hex.Encode(buf[9:13], u[4:6])
		buf[13] = '-'
		hex.Encode(buf[14:18], u[6:8])
		buf[18] = '-'
		hex.Encode(buf[19:23], u[8:10])
		buf[23] = '-'
		hex.Encode(buf[24:], u[10:])
		if id := "urn:uuid:" + string(buf[:]); !crypto.ContainsBSN(id) {
			return id, nil
		}
	}
}

// validID reports whether id can be an id of this package: a token of at most 128 bytes that
// does not look like it holds a BSN, so that it may be echoed in errors.
func validID(id string) bool { return validToken(id, maxID) && !crypto.ContainsBSN(id) }

// clock returns now() in UTC without a monotonic reading, the form every stored time has.
func clock(now func() time.Time) time.Time { return now().UTC().Round(0) }
