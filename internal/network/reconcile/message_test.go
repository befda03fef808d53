package reconcile

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type vector struct {
	name  string
	valid bool
	b     []byte
}

// readVectors reads testdata/vectors.txt: lines of "valid" or "invalid", a name and hex bytes,
// separated by tabs.
func readVectors(tb testing.TB) []vector {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", "vectors.txt"))
	if err != nil {
		tb.Fatalf("open vectors: %v", err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "\t")
		if len(parts) != 3 || (parts[0] != "valid" && parts[0] != "invalid") {
			tb.Fatalf("bad vector line %q", line)
		}
		b, err := hex.DecodeString(parts[2])
		if err != nil {
			tb.Fatalf("vector %q: %v", parts[1], err)
		}
		out = append(out, vector{name: parts[1], valid: parts[0] == "valid", b: b})
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("read vectors: %v", err)
	}
	return out
}

func TestParseVectors(t *testing.T) {
	for _, v := range readVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			m, err := ParseMessage(v.b)
			if !v.valid {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseMessage(%x) = %v, want ErrMalformed", v.b, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMessage(%x): %v", v.b, err)
			}
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if !bytes.Equal(b, v.b) {
				t.Fatalf("MarshalBinary = %x, want %x", b, v.b)
			}
		})
	}
}

func TestParseOversize(t *testing.T) {
	b := make([]byte, MaxMessageSize+1)
	b[0] = Version
	if _, err := ParseMessage(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ParseMessage of %d bytes = %v, want ErrMalformed", len(b), err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	lo := Item{Time: 1_750_000_000, ID: [32]byte{0x10}}
	mid := Item{Time: 1_750_000_000, ID: [32]byte{0x10, 0xff}}
	at := func(t uint64, b byte) Item { return Item{Time: t, ID: [32]byte{b, 1, 2, 3}} }
	m := &Message{Ranges: []Range{
		{Upper: lo, Mode: ModeIdList, Items: []Item{at(5, 1), at(1_749_999_999, 9)}},
		{Upper: mid, Mode: ModeFingerprint, Fingerprint: Fingerprint{1, 2, 3}},
		{Upper: Item{Time: 1_750_000_001}, Mode: ModeListDiff, Items: []Item{at(1_750_000_000, 0x20)}, Lacks: []int{0, 7, 8, 4095}},
		{Upper: Item{Time: 1_750_000_002}, Mode: ModeDeferred},
		{Upper: Item{Time: 1_750_000_003}, Mode: ModeSkip},
		{Upper: Item{Time: 1_750_000_004}, Mode: ModeSkip},
		{Upper: maxKey.item(), Mode: ModeIdList},
	}}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	if got := m.size(); got != len(b) {
		t.Fatalf("size() = %d, encoding has %d bytes", got, len(b))
	}
	p, err := ParseMessage(b)
	if err != nil {
		t.Fatalf("ParseMessage: %v", err)
	}
	if !reflect.DeepEqual(p, m) {
		t.Fatalf("ParseMessage(MarshalBinary(m)) = %+v, want %+v", p, m)
	}
}

func TestMarshalRefuses(t *testing.T) {
	end := maxKey.item()
	tests := []struct {
		name   string
		ranges []Range
	}{
		{"no ranges", nil},
		{"not reaching the end", []Range{{Upper: Item{Time: 5}}}},
		{"range after the end", []Range{{Upper: end}, {Upper: end}}},
		{"bounds not increasing", []Range{{Upper: Item{Time: 5}}, {Upper: Item{Time: 5}}, {Upper: end}}},
		{"fingerprint in a skip", []Range{{Upper: end, Fingerprint: Fingerprint{1}}}},
		{"items in a fingerprint", []Range{{Upper: end, Mode: ModeFingerprint, Items: []Item{{}}}}},
		{"lacks in a list", []Range{{Upper: end, Mode: ModeIdList, Lacks: []int{1}}}},
		{"empty listdiff", []Range{{Upper: end, Mode: ModeListDiff}}},
		{"lacks out of bounds", []Range{{Upper: end, Mode: ModeListDiff, Lacks: []int{MaxListItems}}}},
		{"lacks not increasing", []Range{{Upper: end, Mode: ModeListDiff, Lacks: []int{2, 2}}}},
		{"items not increasing", []Range{{Upper: end, Mode: ModeIdList, Items: []Item{{Time: 2}, {Time: 1}}}}},
		{"item beyond its range", []Range{{Upper: Item{Time: 5}, Mode: ModeIdList, Items: []Item{{Time: 6}}}, {Upper: end}}},
		{"unknown mode", []Range{{Upper: end, Mode: 9}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Message{Ranges: tc.ranges}
			if _, err := m.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("MarshalBinary = %v, want ErrMalformed", err)
			}
		})
	}
	var nilMsg *Message
	if _, err := nilMsg.MarshalBinary(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("MarshalBinary of nil = %v, want ErrMalformed", err)
	}
}

func TestRespondRefusesBadRequests(t *testing.T) {
	idx := openIndex(t)
	end := maxKey.item()
	notAligned := Item{Time: 1_750_000_000, ID: [32]byte{5}} // ends inside a leaf bucket's run of the root
	tests := []struct {
		name   string
		ranges []Range
	}{
		{"two skips in a row", []Range{{Upper: Item{Time: 5}}, {Upper: end}}},
		{"listdiff in a request", []Range{{Upper: end, Mode: ModeListDiff, Items: []Item{{}}}}},
		{"deferred in a request", []Range{{Upper: end, Mode: ModeDeferred}}},
		{"range not aligned", []Range{{Upper: notAligned, Mode: ModeFingerprint}, {Upper: end}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := idx.Respond(t.Context(), &Message{Ranges: tc.ranges}); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Respond = %v, want ErrMalformed", err)
			}
		})
	}
	t.Run("too many ranges", func(t *testing.T) {
		// Whole odd seconds as lists, the even seconds between them skipped.
		lastOf := func(sec uint64) Item { return Item{Time: sec, ID: end.ID} }
		var rs []Range
		for i := range MaxRanges + 1 {
			sec := uint64(2*i + 1)
			rs = append(rs, Range{Upper: lastOf(sec - 1)}, Range{Upper: lastOf(sec), Mode: ModeIdList})
		}
		rs = append(rs, Range{Upper: end})
		_, err := idx.Respond(t.Context(), &Message{Ranges: rs})
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than") {
			t.Fatalf("Respond = %v, want ErrMalformed for too many ranges", err)
		}
	})
}

func TestSessionMisuse(t *testing.T) {
	idx := openIndex(t)
	s := NewSession(idx)
	if _, _, err := s.Next(t.Context(), &Message{}); !errors.Is(err, ErrSession) {
		t.Fatalf("Next before Start = %v, want ErrSession", err)
	}
	if _, err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := s.Start(t.Context()); !errors.Is(err, ErrSession) {
		t.Fatalf("second Start = %v, want ErrSession", err)
	}
}
