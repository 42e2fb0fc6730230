// The qcow2 figures of qnbd-img measure: option checks, the size of a fully allocated image,
// the data an input image would need and the space its persistent bitmaps would take, all
// as QEMU 7.2's qcow2 driver computes them (docs/chains.md).
package main

import (
	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/qcow2"
)

// measureQcow2Options are the creation options qcow2's measure looks at.
type measureQcow2Options struct {
	clusterSize  uint64
	version      int
	refcountBits uint64
	extendedL2   bool
	prealloc     imgfmt.Prealloc
	hasBacking   bool
}

// parseMeasureQcow2 reads the options in QEMU's order, with its messages (which differ from
// the create command's).
func parseMeasureQcow2(opts *qemuOpts) (measureQcow2Options, error) {
	o := measureQcow2Options{clusterSize: 65536, version: 3, refcountBits: 16, prealloc: imgfmt.PreallocOff}
	o.extendedL2 = opts.boolean("extended_l2")
	if opts.has("cluster_size") {
		o.clusterSize = opts.num("cluster_size")
	}
	cs := o.clusterSize
	if cs < 512 || cs > 2<<20 || cs&(cs-1) != 0 {
		return o, qemuErrorf("Cluster size must be a power of two between 512 and 2048k")
	}
	if o.extendedL2 && cs < 512*qcow2.SubclustersPerCluster {
		return o, qemuErrorf("Extended L2 entries are only supported with cluster sizes of at least %d bytes",
			512*qcow2.SubclustersPerCluster)
	}
	if opts.has("compat") {
		switch v := opts.str("compat"); v {
		case "0.10":
			o.version = 2
		case "1.1":
		default:
			return o, qemuErrorf("Invalid compatibility level: '%s'", v)
		}
	}
	if opts.has("refcount_bits") {
		o.refcountBits = opts.num("refcount_bits")
	}
	rb := o.refcountBits
	if rb > 64 || rb == 0 || rb&(rb-1) != 0 {
		return o, qemuErrorf("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if o.version < 3 && rb != 16 {
		return o, qemuErrorf("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	if opts.has("preallocation") {
		p, ok := imgfmt.ParsePrealloc(opts.str("preallocation"))
		if !ok {
			return o, qemuErrorf("invalid parameter value: %s", opts.str("preallocation"))
		}
		o.prealloc = p
	}
	o.hasBacking = opts.has("backing_file")
	return o, nil
}

// measureQcow2 is QEMU's qcow2 measure. in is the input image (nil for --size); inV3 and
// bitmaps describe it when it is a qcow2 image.
func measureQcow2(opts *qemuOpts, in imgfmt.Disk, inV3 bool, bitmaps []imgfmt.Bitmap) (measureInfo, error) {
	o, err := parseMeasureQcow2(opts)
	if err != nil {
		return measureInfo{}, err
	}
	cs := o.clusterSize
	virtual := alignUp64(opts.num("size"), cs)
	if !qcow2SizeFits(virtual, cs, o.extendedL2) {
		return measureInfo{}, qemuErrorf("The image size is too large (try using a larger cluster size)")
	}
	var required uint64
	if in != nil {
		virtual = alignUp64(in.Size(), cs)
		if o.hasBacking {
			// The new image's backing file may share nothing with the input.
			required = virtual
		} else if required, err = dataClusters(in, cs); err != nil {
			return measureInfo{}, err
		}
	}
	if o.prealloc == imgfmt.PreallocFull || o.prealloc == imgfmt.PreallocFalloc {
		required = virtual
	}
	full := qcow2FullSize(virtual, cs, o.refcountBits, o.extendedL2)
	info := measureInfo{fullyAllocated: full, required: full - virtual + required}
	if o.version >= 3 && in != nil && in.Format() == imgfmt.Qcow2 && inV3 {
		info.hasBitmaps = true
		info.bitmaps = bitmapsSize(bitmaps, in.Size(), cs)
	}
	return info, nil
}

// dataClusters counts the bytes of the clusters the input's data would occupy, walking its
// block status as QEMU does: zero runs are skipped, a data run is extended to the end of its
// last cluster and counted from the start of its first one (QEMU adds the offset into the
// first cluster to the extended length; the next run starts at a cluster boundary).
func dataClusters(in imgfmt.Disk, cs uint64) (uint64, error) {
	size := in.Size()
	cur := newExtentCursor(in, size)
	var required uint64
	for off := uint64(0); off < size; {
		e, err := cur.at(off)
		if err != nil {
			return 0, qemuErrorf("Unable to get block status: %s", strerror(err))
		}
		n := min(e.End(), size) - off
		if !e.Zero() && e.Kind == imgfmt.KindData {
			n = alignUp64(off+n, cs) - off
			required += off%cs + n
		}
		off += n
	}
	return required, nil
}

// qcow2FullSize is qcow2_calc_prealloc_size: header cluster, L2 tables, L1 table, refcount
// structures and every data cluster of an image of virtual size total.
func qcow2FullSize(total, cs, refcountBits uint64, extendedL2 bool) uint64 {
	l2e := uint64(8)
	if extendedL2 {
		l2e = 16
	}
	aligned := alignUp64(total, cs)
	meta := cs
	nl2e := alignUp64(aligned/cs, cs/l2e)
	meta += nl2e * l2e
	nl1e := alignUp64(nl2e*l2e/cs, cs/8)
	meta += nl1e * 8
	meta += refcountMetadataSize((meta+aligned)/cs, cs, refcountBits)
	return meta + aligned
}

// refcountMetadataSize is the fixed point of refcount table and block clusters needed to
// count clusters clusters and themselves (qcow2_refcount_metadata_size without the generous
// increase).
func refcountMetadataSize(clusters, cs, refcountBits uint64) uint64 {
	perTable := cs / 8
	perBlock := cs * 8 / refcountBits
	var table, blocks, n uint64
	for {
		last := n
		blocks = divRoundUp(clusters+table+blocks, perBlock)
		table = divRoundUp(blocks, perTable)
		n = clusters + blocks + table
		if n == last {
			break
		}
	}
	return (blocks + table) * cs
}

// bitmapsSize is the space the input's persistent bitmaps would take in the new image: each
// bitmap fully allocated, its table, and the directory.
func bitmapsSize(bitmaps []imgfmt.Bitmap, diskSize, cs uint64) uint64 {
	var total, dir uint64
	for _, b := range bitmaps {
		bits := divRoundUp(diskSize, b.Granularity)
		clusters := divRoundUp(divRoundUp(bits, 8), cs)
		total += clusters * cs
		total += alignUp64(clusters*8, cs)
		dir += alignUp64(24+uint64(len(b.Name)), 8)
	}
	return total + alignUp64(dir, cs)
}

func alignUp64(n, a uint64) uint64 { return (n + a - 1) / a * a }

func divRoundUp(n, d uint64) uint64 { return (n + d - 1) / d }
