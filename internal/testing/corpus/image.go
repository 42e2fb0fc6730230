// Image and Op: what a corpus image is, what was written to it, and what it must read as.
package corpus

import (
	"encoding/binary"
	"fmt"
)

// Feature names used in Image.Features. Parameterised features carry a value after a colon
// (FeatureClusterSize+"65536").
const (
	FeatureClusterSize  = "cluster-size:"  // + cluster size in bytes
	FeatureRefcountBits = "refcount-bits:" // + refcount width in bits
	FeatureV2           = "compat-0.10"    // qcow2 version 2
	FeatureExtendedL2   = "extended-l2"    // subclusters
	FeatureCompressed   = "compressed:"    // + "zlib" or "zstd"
	FeatureCompressedRW = "compressed-overwritten"
	FeatureBacking      = "backing"            // has a backing file
	FeatureBackingRaw   = "backing-raw"        // some backing file in the chain is raw
	FeatureChain3       = "backing-chain-3"    // three levels: qcow2 -> qcow2 -> raw
	FeatureOverlayLarge = "overlay-larger"     // larger than its backing file
	FeatureDataFile     = "data-file"          // external data file
	FeatureDataFileRaw  = "data-file-raw"      // data_file_raw=on
	FeatureSnapshot     = "internal-snapshot"  // has an internal snapshot
	FeaturePrealloc     = "preallocation:"     // + "metadata", "falloc" or "full"
	FeatureLarge        = "large"              // 4 TiB virtual size
	FeatureDirty        = "dirty"              // lazy refcounts, dirty bit set, refcounts stale
	FeatureLazyRefcount = "lazy-refcounts"     // lazy_refcounts=on
	FeatureOddSize      = "odd-size"           // size not a multiple of the cluster size
	FeatureZeroClusters = "zero-clusters"      // written with write -z (zero flag)
	FeatureDiscard      = "discard"            // ranges discarded after being written
	FeatureEmpty        = "empty"              // nothing written
	FeatureL2Boundary   = "l2-table-boundary"  // a write crosses the range of one L2 table
	FeatureSubclusters  = "subcluster-writes"  // partial writes on an extended-L2 image
	FeatureBackingQcow2 = "backing-qcow2"      // some backing file in the chain is qcow2
	FeatureRaw          = "raw"                // the image itself is raw (a chain's base)
	FeaturePatternFill  = "pattern-fill"       // some writes are single-byte fills (-P)
	FeatureStamped      = "stamped"            // some writes are position-dependent stamps
	FeatureMultiL2      = "multiple-l2-tables" // data in more than one L2 table
)

// OpKind is what an Op does.
type OpKind int

// The operations the builder performs on a layer, in order.
const (
	// OpStamp writes Stamp(Seed, g) at every guest offset g of [Off, Off+Len) (qemu-io write -s).
	OpStamp OpKind = iota
	// OpText writes Text(Seed, g) at every guest offset g of [Off, Off+Len): position-dependent
	// like OpStamp but compressible, for compressed images (qemu-io write -s).
	OpText
	// OpFill writes the byte Seed over [Off, Off+Len) (qemu-io write -P).
	OpFill
	// OpZero writes zeros without unmapping (qemu-io write -z).
	OpZero
	// OpZeroUnmap writes zeros and allows unmapping (qemu-io write -z -u).
	OpZeroUnmap
	// OpDiscard discards [Off, Off+Len), which is cluster aligned; it reads back as zeros.
	OpDiscard
	// OpSnapshot takes an internal snapshot called Name (qemu-img snapshot -c).
	OpSnapshot
	// OpCompress rewrites the layer with every cluster compressed with Name ("zlib" or
	// "zstd") (qemu-img convert -c); the content does not change.
	OpCompress
	// OpCrash kills qemu-io with SIGKILL after the preceding writes (qemu-io sigraise 9),
	// leaving a lazy-refcounts image dirty. It is always the last op.
	OpCrash
)

func (k OpKind) String() string {
	switch k {
	case OpStamp:
		return "stamp"
	case OpText:
		return "text"
	case OpFill:
		return "fill"
	case OpZero:
		return "zero"
	case OpZeroUnmap:
		return "zero-unmap"
	case OpDiscard:
		return "discard"
	case OpSnapshot:
		return "snapshot"
	case OpCompress:
		return "compress"
	case OpCrash:
		return "crash"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one step of building a layer.
type Op struct {
	Kind     OpKind
	Off, Len int64
	Seed     byte   // OpStamp, OpFill
	Name     string // OpSnapshot: snapshot name; OpCompress: compression type
}

func (o Op) String() string {
	switch o.Kind {
	case OpSnapshot, OpCompress:
		return fmt.Sprintf("%v %s", o.Kind, o.Name)
	case OpCrash:
		return o.Kind.String()
	}
	return fmt.Sprintf("%v seed=%#x [%d, +%d)", o.Kind, o.Seed, o.Off, o.Len)
}

// changesData reports whether the op changes guest content.
func (o Op) changesData() bool {
	switch o.Kind {
	case OpStamp, OpText, OpFill, OpZero, OpZeroUnmap, OpDiscard:
		return true
	}
	return false
}

// Image is one built image (or one layer of a chain).
type Image struct {
	// Name identifies the image in the catalogue, e.g. "cluster-4k-refcount-8".
	Name string
	// Path is the image file's absolute path.
	Path string
	// Format is "qcow2" or "raw".
	Format string
	// Features lists what the image exercises (Feature* constants).
	Features []string
	// Size is the virtual size in bytes.
	Size int64
	// ClusterSize and RefcountBits describe a qcow2 image (0 for raw).
	ClusterSize  int64
	RefcountBits int
	// Backing is the backing image, nil if none. Its Path is the file QEMU opens.
	Backing *Image
	// DataFile is the external data file's absolute path, "" if none.
	DataFile string
	// Ops are the steps applied to this layer, in order.
	Ops []Op
}

// Has reports whether the image has the feature f (an exact Features entry).
func (img *Image) Has(f string) bool {
	for _, x := range img.Features {
		if x == f {
			return true
		}
	}
	return false
}

// Snapshots lists the names of the internal snapshots taken, in order.
func (img *Image) Snapshots() []string {
	var out []string
	for _, op := range img.Ops {
		if op.Kind == OpSnapshot {
			out = append(out, op.Name)
		}
	}
	return out
}

// Files lists every file the image consists of: the image, its data file and its backing
// chain.
func (img *Image) Files() []string {
	var out []string
	for l := img; l != nil; l = l.Backing {
		out = append(out, l.Path)
		if l.DataFile != "" {
			out = append(out, l.DataFile)
		}
	}
	return out
}

// Expected fills p with what the image must read as at guest offset off. Bytes past the end
// of the image are set to zero.
func (img *Image) Expected(off int64, p []byte) {
	img.expected(off, p, len(img.Ops))
}

// ExpectedSnapshot fills p with what snapshot name read as at guest offset off (that is,
// the content before the OpSnapshot that created it). It panics if there is no such
// snapshot, which is a bug in the calling test.
func (img *Image) ExpectedSnapshot(name string, off int64, p []byte) {
	for i, op := range img.Ops {
		if op.Kind == OpSnapshot && op.Name == name {
			img.expected(off, p, i)
			return
		}
	}
	panic(fmt.Sprintf("corpus: image %s has no snapshot %q", img.Name, name))
}

// expected computes the content from the backing image and the first nops ops.
func (img *Image) expected(off int64, p []byte, nops int) {
	clear(p)
	if img.Backing != nil && off < img.Backing.Size {
		n := min(int64(len(p)), img.Backing.Size-off)
		img.Backing.Expected(off, p[:n])
	}
	for _, op := range img.Ops[:nops] {
		if !op.changesData() {
			continue
		}
		lo, hi := max(op.Off, off), min(op.Off+op.Len, off+int64(len(p)))
		if lo >= hi {
			continue
		}
		dst := p[lo-off : hi-off]
		switch op.Kind {
		case OpStamp:
			FillStamp(op.Seed, lo, dst)
		case OpText:
			FillText(op.Seed, lo, dst)
		case OpFill:
			for i := range dst {
				dst[i] = op.Seed
			}
		default:
			clear(dst)
		}
	}
	if end := img.Size - off; end < int64(len(p)) {
		clear(p[max(end, 0):])
	}
}

// Stamp is the byte a stamped write with seed puts at guest offset g. Each 8-byte word is a
// hash of its offset and the seed, so data read from the wrong offset or the wrong write
// does not match.
func Stamp(seed byte, g int64) byte {
	w := stampWord(seed, uint64(g)>>3)
	return byte(w >> (8 * (uint64(g) & 7)))
}

// FillStamp fills p with the stamp of seed for guest offsets off, off+1, ...
func FillStamp(seed byte, off int64, p []byte) {
	g := uint64(off)
	i := 0
	for i < len(p) && g&7 != 0 {
		p[i] = Stamp(seed, int64(g))
		i++
		g++
	}
	var word [8]byte
	for ; i+8 <= len(p); i, g = i+8, g+8 {
		binary.LittleEndian.PutUint64(word[:], stampWord(seed, g>>3))
		copy(p[i:], word[:])
	}
	for ; i < len(p); i, g = i+1, g+1 {
		p[i] = Stamp(seed, int64(g))
	}
}

// stampWord is splitmix64 of the word index mixed with the seed.
func stampWord(seed byte, word uint64) uint64 {
	z := word + uint64(seed)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Text is the byte a text write with seed puts at guest offset g: every 16-byte record reads
// "SS@OOOOOOOOOOOO\n" with the seed and the record's offset in hex (the offset truncated to
// 12 digits), so runs compress well yet every record names its place.
func Text(seed byte, g int64) byte {
	const hex = "0123456789abcdef"
	rec, i := uint64(g)>>4, uint64(g)&15
	switch {
	case i < 2:
		return hex[(seed>>(4*(1-i)))&15]
	case i == 2:
		return '@'
	case i == 15:
		return '\n'
	}
	return hex[((rec<<4)>>(4*(14-i)))&15]
}

// FillText fills p with the text of seed for guest offsets off, off+1, ...
func FillText(seed byte, off int64, p []byte) {
	for i := range p {
		p[i] = Text(seed, off+int64(i))
	}
}
