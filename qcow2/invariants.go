// Self-checks of the engine's own invariants, compiled in only under the invariants or race tags.
package qcow2

import (
	"fmt"
	"iter"

	"github.com/qnbd/qnbd/internal/invariants"
)

// checkMappedRefcounts verifies, in invariant builds, that every image-file cluster a plan is
// about to use as guest data is counted (refcount >= 1): a mapping to a free cluster is how
// two guest clusters end up sharing one. A violation is a bug in the engine, not bad input
// (the image was consistent when opened, or the allocator would have refused it): panic.
func (img *Image) checkMappedRefcounts(ranges []hostRange) {
	if !invariants.Enabled || img.alloc == nil || img.data != img.file {
		return
	}
	g := img.geo
	for _, r := range ranges {
		if r.n == 0 {
			continue
		}
		for c := r.off.cluster(g); c <= r.off.Add(r.n-1).cluster(g); c++ {
			rc, err := img.alloc.refcount(c)
			if err != nil {
				return // an I/O error is reported by the request itself
			}
			if rc == 0 && img.accurateRefcounts() {
				panic(fmt.Sprintf("qcow2: invariant: guest data mapped to host cluster %d, whose refcount is 0", c))
			}
		}
	}
}

// checkOverlapIndex verifies, in invariant builds, that an overlap set (overlap.go clusterRefs)
// agrees for host cluster c with the table it follows, whose offsets offs yields: an entry
// changed behind its back (not through l1Table.set or allocator.setTableEntry) would make an
// overlap check miss a live structure, or refuse a cluster that is free. A mismatch is an
// engine bug: panic. Each check scans the table: hits (rare: corruption, or a stale set) are
// always checked, misses one lookup in 16 (r counts them).
func checkOverlapIndex(what string, c hostCluster, r *clusterRefs, hit bool, offs iter.Seq[HostOffset]) {
	if !invariants.Enabled {
		return
	}
	if r.checks++; !hit && r.checks%16 != 0 {
		return
	}
	var want uint32
	for off := range offs {
		if first, last := r.span(off); off != 0 && c >= first && c <= last {
			want++
		}
	}
	if got := r.n[c]; got != want {
		panic(fmt.Sprintf("qcow2: invariant: the %s overlap set counts cluster %d %d times, its table %d", what, c, got, want))
	}
}
