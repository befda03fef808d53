package crypto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// b64 is the base64url encoding of RFC 7515 §2: no padding, and in Strict mode non-zero trailing
// bits are refused, so every decoded value has exactly one accepted encoding.
var b64 = base64.RawURLEncoding.Strict()

// maxMembers bounds the number of members of a JOSE header or JWK object. Real ones have fewer
// than a dozen; the bound keeps duplicate detection cheap on hostile input.
const maxMembers = 64

// b64Alphabet marks the bytes allowed in a compact serialization: the base64url alphabet and '.'.
var b64Alphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") {
		t[c] = true
	}
	return t
}()

// splitCompact splits a compact serialization (RFC 7515 §7.1, RFC 7516 §7.1) into exactly
// len(parts) dot-separated segments. It refuses every byte outside the base64url alphabet, which
// also rules out the CR and LF that encoding/base64 would otherwise skip silently: a token has
// exactly one accepted spelling.
func splitCompact(b []byte, parts [][]byte) error {
	n, start := 0, 0
	for i, c := range b {
		if !b64Alphabet[c] {
			return fmt.Errorf("%w: byte 0x%02x at offset %d is not base64url", ErrMalformed, c, i)
		}
		if c != '.' {
			continue
		}
		if n == len(parts)-1 {
			return fmt.Errorf("%w: more than %d segments", ErrMalformed, len(parts))
		}
		parts[n] = b[start:i]
		n++
		start = i + 1
	}
	if n != len(parts)-1 {
		return fmt.Errorf("%w: %d segments, want %d", ErrMalformed, n+1, len(parts))
	}
	parts[n] = b[start:]
	return nil
}

// decodeSegment decodes one base64url segment whose bytes splitCompact already checked.
func decodeSegment(seg []byte) ([]byte, error) {
	dst := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(dst, seg)
	if err != nil {
		return nil, fmt.Errorf("%w: base64url: %v", ErrMalformed, err)
	}
	return dst[:n], nil
}

// decodeFixed decodes a base64url string that must hold exactly n bytes, such as a JWK
// coordinate. It refuses padding, whitespace and non-canonical encodings.
func decodeFixed(s string, n int) ([]byte, error) {
	if len(s) != b64.EncodedLen(n) {
		return nil, fmt.Errorf("%d base64url characters, want %d", len(s), b64.EncodedLen(n))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' || !b64Alphabet[c] {
			return nil, fmt.Errorf("byte 0x%02x at offset %d is not base64url", c, i)
		}
	}
	dst := make([]byte, n)
	if _, err := b64.Decode(dst, []byte(s)); err != nil {
		return nil, err
	}
	return dst, nil
}

// members calls visit once for every member of the JSON object b, in document order, with the
// member's name and raw value. It refuses input that is not exactly one valid JSON object, more
// than maxMembers members, and duplicate member names: RFC 7515 §4 and RFC 7517 §4 allow a parser
// to refuse them, and refusing means no other parser can read a different value for a name than
// this one did. Names are compared after JSON unescaping, as encoding/json and jwx read them.
//
// It runs on every JWS verified, so it avoids encoding/json's token API: json.Valid checks the
// whole input first, after which the members can be delimited by a simple scan.
func members(b []byte, visit func(name string, value []byte) error) error {
	if !json.Valid(b) {
		return fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var seen [maxMembers]string
	n := 0
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		end := skipString(b, i)
		name, ok := jsonString(b[i:end])
		if !ok {
			return fmt.Errorf("%w: member name", ErrMalformed)
		}
		if slices.Contains(seen[:n], name) {
			return fmt.Errorf("%w: duplicate member %q", ErrMalformed, name)
		}
		if n == maxMembers {
			return fmt.Errorf("%w: more than %d members", ErrMalformed, maxMembers)
		}
		seen[n] = name
		n++
		i = skipSpace(b, end) // at ':'
		i = skipSpace(b, i+1) // at the value
		end = skipValue(b, i)
		if err := visit(name, b[i:end]); err != nil {
			return err
		}
		i = skipSpace(b, end) // at ',' or '}'
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return nil
}

// The skip functions below delimit parts of input that json.Valid has accepted, so they need not
// check syntax, and every index they return is in range.

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // number, true, false or null
		for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
			i++
		}
		return i
	}
}

// jsonString decodes v as a JSON string. Unlike json.Unmarshal it refuses null, which would
// otherwise leave the target silently empty.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	// The common case has no escapes and is ASCII: then the bytes between the quotes of a value
	// json.Valid accepted are the string itself.
	if inner := v[1 : len(v)-1]; bytes.IndexByte(inner, '\\') < 0 && isASCII(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// DecodeJSON decodes the JSON payload of a signed document into v strictly: unknown fields and
// trailing data are errors (wrapping ErrMalformed), so that two parties can never read different
// meanings into the same signed bytes.
func DecodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after JSON value", ErrMalformed)
	}
	return nil
}
