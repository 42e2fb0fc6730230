package qcow2

import "testing"

// TestStampsRoundTripAndRejectEveryDamagedByte: a stamped sector reads back as its own
// sector and generation, zeros read as generation 0, and one changed byte anywhere in
// either makes the sector garbage, so the crash checks cannot take damage for data.
func TestStampsRoundTripAndRejectEveryDamagedByte(t *testing.T) {
	b := make([]byte, sectorSize)
	for _, c := range []struct {
		sector uint64
		gen    uint32
	}{{0, 0}, {0, 1}, {7, 3}, {1 << 40, 0xffffffff}} {
		stampSector(b, c.sector, c.gen)
		sec, gen, ok := readStamp(b)
		if !ok || gen != c.gen || (c.gen != 0 && sec != c.sector) {
			t.Fatalf("stamp of sector %d gen %d reads as sector %d gen %d ok %v", c.sector, c.gen, sec, gen, ok)
		}
		for i := range b {
			b[i] ^= 0x40
			if sec, gen, ok := readStamp(b); ok {
				t.Fatalf("sector %d gen %d with byte %d changed reads as sector %d gen %d", c.sector, c.gen, i, sec, gen)
			}
			b[i] ^= 0x40
		}
	}
}
