// The crash enumeration's bitmap workload: every state a crash may leave while persistent
// bitmaps are marked at open, extended by requests and stored at close holds each bitmap old
// and consistent, new and consistent, in-use, or ignored (autoclear bit off), and never one
// that claims clean where data changed (docs/bitmaps.md).
package qcow2

import (
	"fmt"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

func init() {
	crashWorkloads = append(crashWorkloads, &cwWorkload{
		name: "bitmaps", opts: "cluster_size=64k", size: 4 * mib,
		bitmaps: [][]string{{"b0"}, {"-g", "512", "b1"}, {"-g", "128k", "--disable", "b2"}},
		run: func(r *cwRunner) {
			r.write(mib+512, 4*kib)
			r.flush()
			r.zero(2*mib, 100*kib, true)
			r.discard(3*mib, 64*kib)
			r.write(64*kib, 70*kib)
		},
		sanity: func(before, after *Header) error {
			if !after.bitmapsConsistent() || after.Extensions.Bitmaps.DirectoryStart == before.Extensions.Bitmaps.DirectoryStart {
				return fmt.Errorf("the close did not store the bitmaps in a new directory")
			}
			return nil
		},
	})
}

// checkBitmapState loads the state's consistent bitmaps read-only and requires each enabled
// one to mark every granule whose data differs from the image before the workload (the
// workload's bitmaps start clean; a disabled one must stay clean). With the workload's
// operations known, a consistent bitmap must also be either as it was (all clean: the crash
// came before the open marked it in-use) or exactly the granules the operations touched.
func (env *cwEnv) checkBitmapState(st *memstore.Store) error {
	h, err := ReadHeader(st)
	if err != nil || !h.bitmapsConsistent() {
		return err // without the autoclear bit QEMU ignores the bitmaps: nothing claims clean
	}
	img, err := env.open(st.Clone(), nil, func(o *OpenOptions) { o.ReadOnly = true })
	if err != nil {
		return fmt.Errorf("bitmaps: read-only open: %v", err)
	}
	defer img.Close()
	raw := make([]byte, h.Extensions.Bitmaps.DirectorySize)
	if err := readAtFull(img.file, raw, h.Extensions.Bitmaps.DirectoryStart); err != nil {
		return err
	}
	entries, err := parseBitmapDirectory(raw, h.Extensions.Bitmaps.Count, img.geo.ClusterSize(), img.Size())
	if err != nil {
		return fmt.Errorf("bitmaps: the directory QEMU would load is refused: %v", err)
	}
	data := make([]byte, img.Size())
	if _, err := img.ReadAt(data, 0); err != nil {
		return err
	}
	for _, e := range entries {
		if e.inUse() {
			continue
		}
		bm := newDirtyBitmap(e, img.Size())
		if err := img.loadBitmap(bm); err != nil {
			return fmt.Errorf("bitmaps: %s is consistent but cannot be loaded: %v", e.name, err)
		}
		if !e.enabled() {
			if n := bm.countSet(); n != 0 {
				return fmt.Errorf("bitmaps: the disabled %s has %d dirty granules", e.name, n)
			}
			continue
		}
		for sec := uint64(0); sec < img.Size()/sectorSize; sec++ {
			_, gen, _ := readStamp(data[sec*sectorSize:])
			if gen != env.init[sec] && !bm.get(granuleIndex(sec*sectorSize>>e.granBits)) {
				return fmt.Errorf("bitmaps: %s claims clean at sector %d, whose data changed (generation %d, was %d)", e.name, sec, gen, env.init[sec])
			}
		}
		if env.ops == nil {
			continue
		}
		want := map[uint64]bool{}
		for _, o := range env.ops {
			if o.kind == cwWrite || o.kind == cwZero || o.kind == cwZeroUnmap || o.kind == cwDiscard {
				for g := o.off >> e.granBits; g <= (o.off+o.n-1)>>e.granBits; g++ {
					want[g] = true
				}
			}
		}
		set := bm.countSet()
		if set != 0 && set != uint64(len(want)) {
			return fmt.Errorf("bitmaps: %s has %d dirty granules, neither the old 0 nor the new %d", e.name, set, len(want))
		}
		for g := range want {
			if set != 0 && !bm.get(granuleIndex(g)) {
				return fmt.Errorf("bitmaps: %s is neither old nor new: granule %d is clean", e.name, g)
			}
		}
	}
	return nil
}
