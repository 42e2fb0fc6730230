// Self-checks of the engine's own invariants, compiled in only under the invariants or race tags.
package qcow2

import (
	"fmt"

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
		for c := r.off.Cluster(g); c <= r.off.Add(r.n-1).Cluster(g); c++ {
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
