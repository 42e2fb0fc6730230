package main

import (
	"encoding/binary"
	"strings"
	"testing"
)

// TestBitmapsExtensionVerdictsLikeQemu: the bitmaps header extension itself damaged (its
// length, reserved word, count, directory offset and size), with the autoclear bit set (QEMU
// refuses the image, each case in its own words, in the order qcow2_read_extensions checks:
// qnbd-img info and check print what qemu-img prints and exit as it does, on copies) and, for
// a few, clear (QEMU ignores the extension, but for its length, and warns: info and
// check -r leaks, which drops the extension, alike).
func TestBitmapsExtensionVerdictsLikeQemu(t *testing.T) {
	t.Parallel()
	base, ext, entry1, _ := repairBitmapImage(t, t.TempDir())
	dirOff := binary.BigEndian.Uint64(base[ext+16:])
	dirSize := binary.BigEndian.Uint64(base[ext+8:])
	u32 := func(off uint64, v uint32) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) }
	}
	u64 := func(off, v uint64) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint64(b[off:], v) }
	}
	// off: also with the autoclear bit clear (QEMU then checks the length only).
	cases := []struct {
		name   string
		off    bool
		damage []func([]byte)
	}{
		{"length-16", true, []func([]byte){u32(ext-4, 16)}},
		{"length-32", false, []func([]byte){u32(ext-4, 32)}},
		{"reserved", true, []func([]byte){u32(ext+4, 1)}},
		{"reserved-count-max", false, []func([]byte){u32(ext+4, 1), u32(ext, 65536)}},
		{"count-max-unaligned", false, []func([]byte){u32(ext, 65536), u64(ext+16, dirOff+8)}},
		{"count-zero-unaligned", true, []func([]byte){u32(ext, 0), u64(ext+16, dirOff+8)}},
		{"count-high", false, []func([]byte){u32(ext, 3)}},
		{"count-low", false, []func([]byte){u32(ext, 1)}},
		{"dir-unaligned-size-huge", false, []func([]byte){u64(ext+16, dirOff+512), u64(ext+8, 64<<20+8)}},
		{"dir-past-eof", false, []func([]byte){u64(ext+16, 1<<40)}},
		{"dir-past-max-offset", false, []func([]byte){u64(ext+16, 1<<63)}},
		{"dir-at-header", false, []func([]byte){u64(ext+16, 0)}},
		{"dir-size-zero", true, []func([]byte){u64(ext+8, 0)}},
		{"dir-size-large", false, []func([]byte){u64(ext+8, dirSize+8)}},
		{"dir-size-short", false, []func([]byte){u64(ext+8, dirSize-8)}},
		{"dir-size-max", false, []func([]byte){u64(ext+8, 1024*65535)}},
		{"dir-size-max+1", false, []func([]byte){u64(ext+8, 1024*65535+1)}},
		{"entry-table-at-header", false, []func([]byte){u64(entry1, 0)}},
	}
	for _, c := range cases {
		for _, autoclear := range []bool{true, false} {
			if !autoclear && !c.off {
				continue
			}
			name := c.name
			if !autoclear {
				name += "/autoclear-off"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := append([]byte(nil), base...)
				for _, f := range c.damage {
					f(b)
				}
				if !autoclear {
					binary.BigEndian.PutUint64(b[88:], 0)
				}
				dir := t.TempDir()
				img := write(t, dir, "img.qcow2", b)
				runs := [][]string{{"info"}, {"check"}}
				if !autoclear {
					runs = [][]string{{"info"}, {"check", "-r", "leaks"}}
				}
				for _, args := range runs {
					want, got := onCopies(t, dir, img, args...)
					got.stderr = strings.ReplaceAll(got.stderr, "o.qcow2", "q.qcow2")
					if want != got {
						t.Errorf("%q:\nqemu-img: %v\nqnbd-img: %v", args, want, got)
					}
				}
			})
		}
	}
}
