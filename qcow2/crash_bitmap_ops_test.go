// The crash enumeration's workloads for the bitmap operations (bitmap_ops.go), run as amend
// operations (they keep the content; a failed one is a failed request): bitmaps added,
// removed, enabled and disabled before the writes, stored by the close through each of its
// paths — a directory with another count, the first bitmap of an image (the extension
// created), the last one removed (the extension dropped). Every state is checked by
// checkBitmapState (crash_bitmap_test.go) and the refcount checks.
package qcow2

import "fmt"

// Not under -race (make test), where each would add some 20 seconds of qemu-img checks to the
// budget: plain `go test -run TestCrashStates/bitmap-` runs all three.
func init() {
	if !crashRaceBuild {
		crashWorkloads = append(crashWorkloads, bitmapOpsCrashWorkloads...)
	}
}

// bitmapOpsWrites dirties a few regions; the bitmaps the operations leave enabled must mark
// exactly their granules.
func bitmapOpsWrites(r *cwRunner) {
	r.write(64*kib, 70*kib)
	r.zero(2*mib, 100*kib, true)
}

var bitmapOpsCrashWorkloads = []*cwWorkload{
	{name: "bitmap-ops", opts: "cluster_size=64k", size: 4 * mib,
		bitmaps: [][]string{{"b0"}, {"-g", "512", "b1"}, {"-g", "128k", "--disable", "b2"}},
		run: func(r *cwRunner) {
			r.amend(func(img *Image) error { return img.AddBitmap("n", 4096, false) })
			r.amend(func(img *Image) error { return img.RemoveBitmap("b1") })
			r.amend(func(img *Image) error { return img.EnableBitmap("b0", false) })
			r.amend(func(img *Image) error { return img.EnableBitmap("b2", true) })
			bitmapOpsWrites(r)
		},
		sanity: bitmapCountIs(3)},
	{name: "bitmap-first", opts: "cluster_size=4k", size: 4 * mib, bitmaps: [][]string{},
		run: func(r *cwRunner) {
			r.amend(func(img *Image) error { return img.AddBitmap("n", 0, false) })
			r.amend(func(img *Image) error { return img.AddBitmap("d", 65536, true) })
			bitmapOpsWrites(r)
		},
		sanity: bitmapCountIs(2)},
	{name: "bitmap-last", opts: "cluster_size=64k", size: 4 * mib, bitmaps: [][]string{{"b0"}, {"-g", "4k", "b1"}},
		run: func(r *cwRunner) {
			r.amend(func(img *Image) error { return img.RemoveBitmap("b0") })
			r.amend(func(img *Image) error { return img.RemoveBitmap("b1") })
			bitmapOpsWrites(r)
		},
		sanity: bitmapCountIs(0)},
}

// bitmapCountIs requires the workload to end with n consistent bitmaps (0: no extension and
// the autoclear bit off, as QEMU leaves an image whose last bitmap it removed).
func bitmapCountIs(n uint32) func(before, after *Header) error {
	return func(_, after *Header) error {
		if n == 0 {
			if after.Extensions.Bitmaps != nil || after.Autoclear&AutoclearBitmaps != 0 {
				return fmt.Errorf("the bitmaps extension or its autoclear bit is left after the last bitmap's removal")
			}
			return nil
		}
		if !after.bitmapsConsistent() || after.Extensions.Bitmaps.Count != n {
			return fmt.Errorf("the close did not store %d consistent bitmaps: %+v", n, after.Extensions.Bitmaps)
		}
		return nil
	}
}
