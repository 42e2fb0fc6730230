// qnbd-img check against qemu-img check on images whose internal snapshot table is damaged
// (one of each kind of verdict; qcow2's TestCheckSnapshotDamageMatchesQemu covers every kind).
package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapDamagedImages makes, in dir, one image per damage (1 MiB, compat 1.1, 0x01 in the first
// 64 KiB, snapshot s1) and returns their names with qemu-img check's exit status on them.
func snapDamagedImages(t *testing.T, dir string) map[string]int {
	t.Helper()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", "base.qcow2", "1M")
	sh(t, dir, "qemu-io", "-c", "write -P 1 0 64k", "base.qcow2")
	sh(t, dir, "qemu-img", "snapshot", "-c", "s1", "base.qcow2")
	base, err := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	table := int(binary.BigEndian.Uint64(base[64:]))
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	}
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint64(b[off:], v); return b }
	}
	damages := []struct {
		name string
		fn   func([]byte) []byte
		exit int
	}{
		{"extra-short-v3", put32(table+36, 8), 2},                               // "entry 0 is incomplete"
		{"truncated-in-name", func(b []byte) []byte { return b[:table+57] }, 0}, // zeros past the end
		{"extra-too-large", put32(table+36, 2000), 1},                           // EFBIG, with a hint
		{"count-too-large", put32(60, 70000), 1},                                // the table check of open
		{"table-unaligned", put64(64, 0x1000), 1},                               // EINVAL
		{"offset-overflows", put64(64, 0x7fffffffffff0000), 1},                  // EIO
		{"l1-unaligned", put64(table, 0x50001), 2},                              // and three leaks
		{"table-at-header", put64(64, 0), 2},                                    // the header read as an entry
	}
	out := map[string]int{}
	for _, d := range damages {
		name := d.name + ".qcow2"
		write(t, dir, name, d.fn(bytes.Clone(base)))
		out[name] = d.exit
	}
	return out
}

func TestOracleCheckSnapshotDamage(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	for img, code := range snapDamagedImages(t, src) {
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			checkSnapshotDamage(t, isolated(t, src, img), img, code)
		})
	}
}

// checkSnapshotDamage compares check and check -r on img in dir.
func checkSnapshotDamage(t *testing.T, dir, img string, code int) {
	for _, args := range [][]string{{"check", img}, {"check", "--output=json", img}} {
		if r := same(t, dir, args...); r.code != code {
			t.Errorf("%q: exit %d, want %d", args, r.code, code)
		}
	}
	// Repairs: each tool on its own copy. -r leaks and -r all must do what qemu-img does
	// (-r all cuts extra data and rewrites the table), except for more snapshots than
	// the limit, where qemu-img -r all drops the excess and then marks the image corrupt:
	// that is refused, and the image left as it was.
	for _, mode := range []string{"leaks", "all"} {
		for _, output := range []string{"human", "json"} {
			args := []string{"check", "-r", mode, "--output=" + output}
			want, got := onCopies(t, dir, img, args...)
			if mode == "all" && strings.Contains(got.stderr, "dropping the snapshots over the limit is not supported") {
				before, err := os.ReadFile(filepath.Join(dir, img))
				if err != nil {
					t.Fatal(err)
				}
				after, err := os.ReadFile(filepath.Join(dir, "o.qcow2"))
				if err != nil {
					t.Fatal(err)
				}
				if got.code != 1 || !bytes.Equal(before, after) {
					t.Errorf("check -r all %s refused with exit %d, image changed %v", img, got.code, !bytes.Equal(before, after))
				}
				continue
			}
			if got != want {
				t.Errorf("check -r %s %s (%s):\nqemu-img: %v\nqnbd-img: %v", mode, img, output, want, got)
			}
		}
	}
}
