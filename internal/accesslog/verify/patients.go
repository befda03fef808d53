package verify

import "hash/maphash"

// patientTable maps a patient to the last patientSeq seen, for the ordered checks. Its key is a
// 128-bit hash of the pseudonym (one bit forced to one, so that zero marks an empty slot),
// keyed afresh for every run and computed by the workers: the table holds no strings, and a
// lookup is one probe of an open-addressing array, which the ordered stage prefetches for a
// whole batch before it checks the batch. Two of even 10^9 pseudonyms share a key with
// probability below 2^-66, and an export, written before the key was drawn, cannot aim at one.
type patientTable struct {
	seeds [2]maphash.Seed
	slots []patientSlot // a power of two in length, at most 70% full
	count int
}

type patientSlot struct {
	key [2]uint64
	seq uint64
}

func newPatientTable() *patientTable {
	return &patientTable{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, slots: make([]patientSlot, 1<<10)}
}

// key returns the table key of a pseudonym. It is safe for concurrent use.
func (t *patientTable) key(pseudonym []byte) [2]uint64 {
	return [2]uint64{maphash.Bytes(t.seeds[0], pseudonym), maphash.Bytes(t.seeds[1], pseudonym) | 1}
}

// touch reads the slot where key's probe starts, so that its cache line is loaded before
// next needs it; it returns what it read so that the read is not optimised away.
func (t *patientTable) touch(key [2]uint64) uint64 {
	return t.slots[key[0]&uint64(len(t.slots)-1)].seq
}

// next records seq as key's latest patientSeq and returns the one before (0 for a new patient).
func (t *patientTable) next(key [2]uint64, seq uint64) uint64 {
	s := t.find(key)
	if s.key != key {
		if 10*(t.count+1) > 7*len(t.slots) {
			t.grow()
			s = t.find(key)
		}
		s.key = key
		t.count++
	}
	last := s.seq
	s.seq = seq
	return last
}

// find returns key's slot, or the empty slot where it belongs (linear probing).
func (t *patientTable) find(key [2]uint64) *patientSlot {
	mask := uint64(len(t.slots) - 1)
	for i := key[0] & mask; ; i = (i + 1) & mask {
		if s := &t.slots[i]; s.key == key || s.key[1] == 0 {
			return s
		}
	}
}

func (t *patientTable) grow() {
	old := t.slots
	t.slots = make([]patientSlot, 2*len(old))
	for _, s := range old {
		if s.key[1] != 0 {
			*t.find(s.key) = s
		}
	}
}
