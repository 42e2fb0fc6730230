// Crash enumeration over qnbd-img amend's changes: the refcount width (both ways, with a
// snapshot, with compressed clusters, with loaded bitmaps stored at close), compat up and
// down (down with a snapshot and zero clusters to expand over a backing file), lazy
// refcounts on and off. Each
// keeps the content; every crash state must check clean or with leaks only and read as before.
package qcow2

import "fmt"

// Under -race (make test) only amend-refcount-down runs, the one whose switch carries the most
// (shared clusters, a narrower width, the old structures freed in the new ones). Plain `go
// test` and -qcow2.crash.full run them all.
func init() {
	for _, w := range amendCrashWorkloads {
		if !crashRaceBuild || w.name == "amend-refcount-down" {
			crashWorkloads = append(crashWorkloads, w)
		}
	}
}

var amendCrashWorkloads = []*cwWorkload{
	{name: "amend-refcount-down", opts: "cluster_size=4k,refcount_bits=64", size: 2 * mib, snapshot: true,
		setup: func(r *cwRunner) { r.write(1*mib, 64*kib) },
		run: func(r *cwRunner) {
			r.write(8*kib, 4*kib)
			r.amend(func(img *Image) error { return img.ChangeRefcountOrder(1, nil) })
			r.write(512*kib, 8*kib) // allocates through the new structures
			r.flush()
		},
		sanity: refcountOrderIs(1)},
	{name: "amend-refcount-up", opts: "cluster_size=512", size: 1 * mib, compressed: true,
		run: func(r *cwRunner) {
			r.amend(func(img *Image) error { return img.ChangeRefcountOrder(6, nil) })
			r.write(4*kib+512, 1024) // copy-on-write from a compressed cluster
			r.flush()
		},
		sanity: refcountOrderIs(6)},
	{name: "amend-refcount-bitmaps", opts: "cluster_size=4k", size: 2 * mib,
		bitmaps: [][]string{{"b0"}, {"-g", "512", "--disable", "b1"}},
		run: func(r *cwRunner) {
			r.write(0, 64*kib) // the bitmaps are in-use on disk from here on
			r.write(256*kib, 4*kib)
			r.amend(func(img *Image) error { return img.ChangeRefcountOrder(3, nil) })
			r.write(512*kib, 4*kib)
		}, // the close stores the bitmaps through the new refcount structures
		sanity: refcountOrderIs(3)},
	{name: "amend-downgrade", opts: "cluster_size=4k", size: 2 * mib,
		setup: func(r *cwRunner) { r.write(0, 64*kib) },
		run: func(r *cwRunner) {
			r.write(256*kib, 4*kib)
			r.amend(func(img *Image) error {
				if err := img.PrepareDowngrade(); err != nil {
					return err
				}
				return img.Downgrade()
			})
			r.write(512*kib, 4*kib)
			r.flush()
		},
		sanity: versionIs(2)},
	{name: "amend-downgrade-snapshots", opts: "cluster_size=4k", size: 2 * mib, snapshot: true, backing: true,
		setup: func(r *cwRunner) {
			r.write(0, 64*kib)
			r.zero(128*kib, 16*kib, false) // zero clusters the snapshot keeps
			r.zero(256*kib, 8*kib, true)
		},
		run: func(r *cwRunner) {
			r.write(8*kib, 4*kib)
			r.zero(16*kib, 8*kib, false) // zeros over clusters the snapshot shares
			r.amend(downgradeWithExpansion)
			r.write(512*kib, 4*kib)
			r.flush()
		},
		sanity: versionIs(2)},
	{name: "amend-upgrade", opts: "cluster_size=4k,compat=0.10", size: 2 * mib,
		setup: func(r *cwRunner) { r.write(0, 64*kib) },
		run: func(r *cwRunner) {
			r.amend((*Image).Upgrade)
			r.write(512*kib, 4*kib)
			r.flush()
		},
		sanity: versionIs(3)},
	{name: "amend-lazy", opts: "cluster_size=4k,lazy_refcounts=on", size: 2 * mib,
		setup: func(r *cwRunner) { r.write(0, 64*kib) },
		run: func(r *cwRunner) {
			r.write(256*kib, 8*kib) // the image is dirty from here on
			r.amend(func(img *Image) error { return img.SetLazyRefcounts(false) })
			r.write(512*kib, 4*kib)
			r.amend(func(img *Image) error { return img.SetLazyRefcounts(true) })
			r.write(768*kib, 4*kib)
			r.flush()
		},
		sanity: func(_, after *Header) error {
			if !after.LazyRefcounts() {
				return fmt.Errorf("lazy refcounts off at the end")
			}
			return nil
		}},
}

// amend runs f, an amendment that leaves every sector as it is.
func (r *cwRunner) amend(f func(img *Image) error) error {
	i := r.begin(cwOp{kind: cwAmend})
	return r.end(i, f(r.img))
}

// downgradeWithExpansion is qnbd-img's downgrade: checks, zero clusters expanded in every
// L1 table, the version 2 header.
func downgradeWithExpansion(img *Image) error {
	if err := img.PrepareDowngrade(); err != nil {
		return err
	}
	if err := img.ExpandZeroClusters(nil); err != nil {
		return err
	}
	return img.Downgrade()
}

func refcountOrderIs(order uint32) func(before, after *Header) error {
	return func(_, after *Header) error {
		if after.RefcountOrder != order {
			return fmt.Errorf("refcount order %d at the end, want %d", after.RefcountOrder, order)
		}
		return nil
	}
}

func versionIs(v uint32) func(before, after *Header) error {
	return func(_, after *Header) error {
		if after.Version != v {
			return fmt.Errorf("version %d at the end, want %d", after.Version, v)
		}
		return nil
	}
}
