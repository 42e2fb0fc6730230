package qcow2

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestCacheModesSyncAndOpenFlagsLikeQemu: each of qemu-nbd's --cache modes, in the engine's
// options as cmd/qnbd sets them, opens the image file with the flags qemu-nbd 7.2 uses and
// syncs as often as it does, counted by the host-file layer (internal/hostfile). Measured with
// strace on qemu-nbd 7.2 over 20 allocating 4 KiB writes without a flush (docs/hostfile.md):
// no mode opens O_SYNC or O_DSYNC; none and directsync add O_DIRECT; writethrough and
// directsync fdatasync after every write (43 syncs); writeback and none only at a few
// metadata points (6, exit included); unsafe never (0).
func TestCacheModesSyncAndOpenFlagsLikeQemu(t *testing.T) {
	const writes = 20
	for _, tc := range []struct {
		mode       string
		o          OpenOptions
		direct     bool
		minS, maxS uint64 // syncs during the writes
	}{
		{"writeback", OpenOptions{}, false, 0, writes / 4},
		{"writethrough", OpenOptions{WriteThrough: true}, false, writes, 4 * writes},
		{"directsync", OpenOptions{WriteThrough: true, File: FileOptions{Direct: true}}, true, writes, 4 * writes},
		{"none", OpenOptions{File: FileOptions{Direct: true}}, true, 0, writes / 4},
		{"unsafe", OpenOptions{File: FileOptions{NoSync: true}}, false, 0, 0},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := engCreate(t, t.TempDir(), "m.qcow2", "cluster_size=64k", "1G")
			var fs *FileStorage
			o := tc.o
			o.Opener = func(path string, fo FileOptions) (Storage, error) {
				f, err := OpenFile(path, fo)
				if err != nil {
					return nil, err
				}
				if fo.Role == roleImage {
					fs = f
				}
				return f, nil
			}
			img := openTestImage(t, p, o)
			fl, err := fs.host().Flags()
			if err != nil {
				t.Fatal(err)
			}
			if fl&(unix.O_SYNC|unix.O_DSYNC) != 0 {
				t.Errorf("image file opened with flags %#o: O_SYNC or O_DSYNC set", fl)
			}
			if got := fl&unix.O_DIRECT != 0; got != tc.direct {
				t.Errorf("O_DIRECT %v, want %v (flags %#o)", got, tc.direct, fl)
			}
			before := fs.host().Syncs()
			buf := make([]byte, 4096)
			for i := range writes {
				fillPattern(buf, byte(i))
				// 3 clusters apart: every write allocates its cluster.
				if _, err := img.WriteAt(buf, int64(i)*3<<16); err != nil {
					t.Fatal(err)
				}
			}
			n := fs.host().Syncs() - before
			if n < tc.minS || n > tc.maxS {
				t.Errorf("%d syncs during %d writes, want %d to %d", n, writes, tc.minS, tc.maxS)
			}
			t.Logf("%s: %d syncs during %d writes, flags %#o", tc.mode, n, writes, fl)
		})
	}
}
