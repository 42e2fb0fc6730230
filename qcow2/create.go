// Create: new images, laid out as qemu-img lays them out, written independently of the runtime
// allocator.
package qcow2

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// CreateOptions are the qemu-img create -o options qnbd supports.
type CreateOptions struct {
	// Size is the virtual size in bytes, rounded up to 512 as qemu-img does. With a backing
	// file, 0 means the backing file's virtual size.
	Size uint64
	// ClusterSize is a power of two from 512 B to 2 MiB; 0 means 64 KiB.
	ClusterSize uint32
	// RefcountBits is a power of two from 1 to 64; 0 means 16.
	RefcountBits uint32
	// Compat is "1.1" (or "v3", or "": version 3) or "0.10" (or "v2": version 2).
	Compat string
	// ExtendedL2 selects 128-bit L2 entries with 32 subclusters (clusters of 16 KiB or more).
	ExtendedL2 bool
	// LazyRefcounts sets the lazy refcounts compatible bit (version 3).
	LazyRefcounts bool
	// CompressionType is CompressionZlib or CompressionZstd (stored in the header only).
	CompressionType uint8
	// BackingFile is stored as given; relative names are relative to the image's directory.
	BackingFile string
	// BackingFormat is the backing file's format ("qcow2", "raw"); it is required with a
	// backing file, as in qemu-img since 6.1.
	BackingFormat string
	// DataFile names an external data file, stored as given; Create creates or truncates it
	// (relative to the image's directory) to the virtual size.
	DataFile string
	// DataFileRaw sets the raw external data bit: the data file is a standalone raw image.
	// Every cluster is then mapped to it from the start (preallocation at least "metadata"),
	// as qemu-img does.
	DataFileRaw bool
	// Preallocation is "off" (or ""), "metadata" (every L2 table and data cluster allocated
	// and mapped), "falloc" (metadata, plus the data space reserved with fallocate) or "full"
	// (metadata, plus zeros written).
	Preallocation string
}

// featureTableMinCluster: images with clusters of this size or smaller get no feature name
// table (what qemu-img create does).
const featureTableMinCluster = 4096

// Preallocation modes.
const (
	preallocOff      = "off"
	preallocMetadata = "metadata"
	preallocFalloc   = "falloc"
	preallocFull     = "full"
)

// Create makes a new qcow2 image at path, replacing any file there, as qemu-img create -f qcow2
// does. A relative backing file or data file name is resolved against the image's directory;
// the backing file must exist and, when Size is 0, gives the size.
func Create(path string, o CreateOptions) error {
	dir := filepath.Dir(path)
	if _, err := planCreate(o); err != nil { // refuse bad options before opening anything
		return err
	}
	if o.BackingFile != "" {
		size, err := backingSizeForCreate(dir, o.BackingFile, o.BackingFormat)
		if err != nil {
			return err
		}
		if o.Size == 0 {
			o.Size = size
		}
	}
	if _, err := planCreate(o); err != nil { // the size may have come from the backing file
		return err
	}
	var dp string
	if o.DataFile != "" {
		// Resolved as Open resolves it, so that the image finds the file Create made.
		var err error
		if dp, err = resolveBackingName(dir, o.DataFile); err != nil {
			return fmt.Errorf("qcow2: data file: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("qcow2: create %s: %w", path, err)
	}
	s := NewFileStorage(f)
	var data *FileStorage
	if o.DataFile != "" {
		df, err := os.OpenFile(dp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			f.Close()
			os.Remove(path)
			return fmt.Errorf("qcow2: create data file %s: %w", dp, err)
		}
		data = NewFileStorage(df)
	}
	var ds Storage
	if data != nil {
		ds = data
	}
	err = createStorage(s, o, ds)
	if data != nil {
		if cerr := data.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("qcow2: close data file: %w", cerr)
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("qcow2: close %s: %w", path, cerr)
	}
	if err != nil {
		os.Remove(path) // half an image is no image; the header is written last anyway
	}
	return err
}

// backingSizeForCreate checks that the backing file exists and returns its virtual size: the
// header's size for qcow2, the file's length for raw (qemu-img opens it with the format given).
func backingSizeForCreate(dir, name, format string) (uint64, error) {
	// Resolved as Open resolves it (relative to the image's directory; json: and protocol
	// names refused).
	p, err := resolveBackingName(dir, name)
	if err != nil {
		return 0, err
	}
	s, err := OpenFile(p, FileOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("qcow2: could not open backing file %s: %w", p, err)
	}
	defer s.Close()
	if format == "" {
		detected := "raw"
		var m [4]byte
		if n, _ := s.ReadAt(m[:], 0); n == 4 && uint32(m[0])<<24|uint32(m[1])<<16|uint32(m[2])<<8|uint32(m[3]) == Magic {
			detected = "qcow2"
		}
		return 0, fmt.Errorf("qcow2: backing file %s specified without backing format (detected format: %s)", name, detected)
	}
	switch format {
	case "qcow2":
		h, err := ReadHeader(s)
		if err != nil {
			return 0, fmt.Errorf("qcow2: backing file %s: %w", p, err)
		}
		return h.Size, nil
	case "raw":
		n, err := s.Size()
		if err != nil {
			return 0, fmt.Errorf("qcow2: backing file %s: %w", p, err)
		}
		return uint64(n), nil
	}
	// Another format: it exists, but only its own driver knows its size.
	return 0, nil
}

// createPlan is a validated set of options and the layout they give.
type createPlan struct {
	o        CreateOptions
	g        Geometry
	version  uint32
	size     uint64
	prealloc string
	dataFile bool

	l1Entries uint64
	// Cluster indices of each structure, in file order: header (0), reftable, refcount
	// blocks, L1 table, then (preallocation) each L2 table followed by its data clusters,
	// or, with a data file, the L2 tables alone.
	refTable, refBlocks, l1 hostCluster
	nRT, nRB, nL1           uint64
	prealloced              hostCluster // first cluster of the preallocated L2/data area
	total                   uint64      // clusters in the image file
}

// planCreate validates the options and computes the layout. Every error names the option
// and the limit.
func planCreate(o CreateOptions) (*createPlan, error) {
	p := &createPlan{o: o, dataFile: o.DataFile != ""}
	bad := func(field string, val any, format string, args ...any) error {
		return &FormatError{Off: -1, Field: field, Val: val, Msg: fmt.Sprintf(format, args...)}
	}
	switch o.Compat {
	case "", "1.1", "v3":
		p.version = 3
	case "0.10", "v2":
		p.version = 2
	default:
		return nil, bad("compat", o.Compat, `must be "1.1" (v3) or "0.10" (v2)`)
	}
	cs := o.ClusterSize
	if cs == 0 {
		cs = 64 << 10
	}
	if cs&(cs-1) != 0 || cs < 1<<minClusterBits || cs > 1<<maxClusterBits {
		return nil, bad("cluster_size", cs, "must be a power of two between %d and %d", 1<<minClusterBits, 1<<maxClusterBits)
	}
	rb := o.RefcountBits
	if rb == 0 {
		rb = 16
	}
	if rb&(rb-1) != 0 || rb > 64 {
		return nil, bad("refcount_bits", rb, "must be a power of two between 1 and 64")
	}
	p.g = Geometry{ClusterBits: uint32(log2(uint64(cs))), RefcountOrder: uint32(log2(uint64(rb))), ExtendedL2: o.ExtendedL2}
	if p.version == 2 {
		switch {
		case rb != 16:
			return nil, bad("refcount_bits", rb, "compat 0.10 images have 16-bit refcounts; use compat 1.1")
		case o.LazyRefcounts:
			return nil, bad("lazy_refcounts", true, "needs compat 1.1")
		case o.ExtendedL2:
			return nil, bad("extended_l2", true, "needs compat 1.1")
		case p.dataFile:
			return nil, bad("data_file", o.DataFile, "needs compat 1.1")
		case o.CompressionType != CompressionZlib:
			return nil, bad("compression_type", o.CompressionType, "a non-zlib compression type needs compat 1.1")
		}
	}
	if o.ExtendedL2 && p.g.ClusterBits < minExtendedL2ClusterBits {
		return nil, bad("extended_l2", true, "needs clusters of at least %d bytes (cluster_size is %d)", 1<<minExtendedL2ClusterBits, cs)
	}
	if o.CompressionType != CompressionZlib && o.CompressionType != CompressionZstd {
		return nil, bad("compression_type", o.CompressionType, "must be 0 (zlib) or 1 (zstd)")
	}
	if o.DataFileRaw && !p.dataFile {
		return nil, bad("data_file_raw", true, "needs data_file")
	}
	if p.dataFile && o.BackingFile != "" {
		return nil, bad("data_file", o.DataFile, "qnbd cannot open images with both an external data file and a backing file")
	}
	for _, f := range []struct{ name, val string }{{"backing_file", o.BackingFile}, {"backing_fmt", o.BackingFormat}, {"data_file", o.DataFile}} {
		if err := checkName(f.name, []byte(f.val)); err != nil {
			return nil, bad(f.name, f.val, "%v", err)
		}
	}
	switch o.Preallocation {
	case "", preallocOff:
		p.prealloc = preallocOff
	case preallocMetadata, preallocFalloc, preallocFull:
		p.prealloc = o.Preallocation
	default:
		return nil, bad("preallocation", o.Preallocation, `must be "off", "metadata", "falloc" or "full"`)
	}
	if o.DataFileRaw && p.prealloc == preallocOff {
		// A raw data file is the disk: every cluster is mapped to it from the start, as
		// qemu-img does.
		p.prealloc = preallocMetadata
	}
	if p.prealloc != preallocOff && o.BackingFile != "" && !o.ExtendedL2 {
		return nil, bad("preallocation", p.prealloc, "with a backing file needs extended_l2 (preallocated clusters would hide the backing file)")
	}
	if o.Size > math.MaxInt64-511 {
		return nil, bad("size", o.Size, "must be at most %d", int64(math.MaxInt64))
	}
	p.size = (o.Size + 511) &^ 511
	p.l1Entries = p.g.l1EntriesFor(p.size)
	if p.l1Entries*l1EntrySize > MaxL1Bytes {
		return nil, bad("size", p.size, "too large for %d-byte clusters: it needs an L1 table of %d bytes, over the %d-byte (32 MiB) limit; use a larger cluster size",
			cs, p.l1Entries*l1EntrySize, MaxL1Bytes)
	}
	return p, p.layout()
}

func log2(v uint64) int {
	n := 0
	for v > 1 {
		v >>= 1
		n++
	}
	return n
}

// layout places the structures: header, reftable, refcount blocks, L1 table, preallocated
// area, with as many refcount blocks as it takes to count every cluster of the file, the
// blocks and the reftable included.
func (p *createPlan) layout() error {
	cs := p.g.ClusterSize()
	p.nL1 = (p.l1Entries*l1EntrySize + cs - 1) / cs
	var prealloc uint64
	if p.prealloc != preallocOff {
		prealloc = p.l1Entries // one L2 table per L1 entry
		if !p.dataFile {
			prealloc += uint64(p.g.clustersFor(p.size))
		}
	}
	p.nRT, p.nRB = 1, 1
	for {
		p.total = 1 + p.nRT + p.nRB + p.nL1 + prealloc
		rb := (p.total + p.g.refBlockEntries() - 1) / p.g.refBlockEntries()
		rt := (rb*reftableEntrySize + cs - 1) / cs
		if rb == p.nRB && rt == p.nRT {
			break
		}
		p.nRB, p.nRT = max(rb, p.nRB), max(rt, p.nRT)
	}
	if p.nRT*cs > maxRefTableBytes {
		return &FormatError{Off: -1, Field: "size", Val: p.size, Msg: fmt.Sprintf("preallocating it needs a refcount table of %d bytes, over the %d-byte limit; use larger clusters or wider refcounts", p.nRT*cs, maxRefTableBytes)}
	}
	if p.total >= maxHostOffset/cs {
		return &FormatError{Off: -1, Field: "size", Val: p.size, Msg: "the preallocated image would reach past the largest host offset"}
	}
	p.refTable = 1
	p.refBlocks = p.refTable.Add(ClusterCount(p.nRT))
	p.l1 = p.refBlocks.Add(ClusterCount(p.nRB))
	p.prealloced = p.l1.Add(ClusterCount(p.nL1))
	return nil
}

// header returns the image header for the plan.
func (p *createPlan) header() *Header {
	o := p.o
	h := &Header{
		Version:          p.version,
		ClusterBits:      p.g.ClusterBits,
		Size:             p.size,
		HeaderLength:     headerV3Length,
		L1Size:           uint32(p.l1Entries),
		RefTableOffset:   p.refTable.Offset(p.g),
		RefTableClusters: uint32(p.nRT),
		RefcountOrder:    p.g.RefcountOrder,
		CompressionType:  o.CompressionType,
		BackingFile:      o.BackingFile,
		Extensions:       Extensions{BackingFormat: o.BackingFormat, DataFile: o.DataFile},
	}
	if p.l1Entries > 0 {
		h.L1TableOffset = p.l1.Offset(p.g)
	}
	if p.version == 2 {
		h.HeaderLength = headerV2Length
		return h
	}
	// qemu-img writes the feature name table only into clusters larger than 4 KiB, keeping
	// small first clusters for the backing file name; so do we, byte for byte.
	if p.g.ClusterSize() > featureTableMinCluster {
		h.Extensions.FeatureNames = defaultFeatureNames()
	}
	if p.dataFile {
		h.Incompatible |= incompatDataFile
	}
	if o.CompressionType != CompressionZlib {
		h.Incompatible |= incompatCompression
	}
	if o.ExtendedL2 {
		h.Incompatible |= IncompatExtendedL2
	}
	if o.LazyRefcounts {
		h.Compatible |= compatLazyRefcounts
	}
	if o.DataFileRaw {
		h.Autoclear |= autoclearDataFileRaw
	}
	return h
}

// createStorage writes a new image into s (truncating it first) with the options' layout, and
// the external data file into dataFile when DataFile is set. It does not look at a backing
// file: with one, Size must be given (Create fills it in).
//
// Write order: guest data space (falloc/full), L2 tables, L1 table, refcount blocks and
// reftable, fsync; then the header cluster, which points at all of them, last; fsync. A crash
// before the header lands leaves no valid image, never a half-valid one.
func createStorage(s Storage, o CreateOptions, dataFile Storage) error {
	p, err := planCreate(o)
	if err != nil {
		return err
	}
	if o.BackingFile != "" && o.BackingFormat == "" {
		return fmt.Errorf("%w: backing_fmt: a backing file needs its format", ErrFormat)
	}
	if o.BackingFile != "" && o.Size == 0 {
		return fmt.Errorf("%w: size: must be given with a backing file (Create reads it from the backing file)", ErrFormat)
	}
	if p.dataFile && dataFile == nil {
		return fmt.Errorf("qcow2: data file %q requested but no storage given for it", o.DataFile)
	}
	h := p.header()
	cluster0, err := h.EncodeCluster0()
	if err != nil {
		return err
	}
	cs := p.g.ClusterSize()
	// Check our own work with the reader's validation before writing a byte.
	if _, err := DecodeHeader(cluster0, p.total*cs); err != nil {
		return fmt.Errorf("qcow2: internal error: the header Create built does not validate: %w", err)
	}
	if err := s.Truncate(0); err != nil {
		return fmt.Errorf("qcow2: truncate image: %w", err)
	}
	if p.dataFile {
		if err := p.writeDataFile(dataFile); err != nil {
			return err
		}
	}
	if err := p.writePrealloc(s); err != nil {
		return err
	}
	if p.l1Entries > 0 {
		if err := p.writeL1(s); err != nil {
			return err
		}
	}
	if err := p.writeRefcounts(s); err != nil {
		return err
	}
	if p.prealloc != preallocOff {
		// The last data clusters may never have been written: the file still covers them.
		if err := s.Truncate(int64(p.total * cs)); err != nil {
			return fmt.Errorf("qcow2: extend image: %w", err)
		}
	}
	if err := s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync image: %w", err)
	}
	if _, err := s.WriteAt(cluster0, 0); err != nil {
		return fmt.Errorf("qcow2: write header: %w", err)
	}
	if err := s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	return nil
}

// writeRefcounts writes the refcount blocks (refcount 1 for every cluster of the layout) and
// the reftable.
func (p *createPlan) writeRefcounts(s Storage) error {
	cs := p.g.ClusterSize()
	per := p.g.refBlockEntries()
	table := make([]byte, p.nRT*cs)
	block := make([]byte, cs)
	for i := uint64(0); i < p.nRB; i++ {
		clear(block)
		rb := RefBlock{Data: block, Order: p.g.RefcountOrder}
		for j := uint64(0); j < per && i*per+j < p.total; j++ {
			rb.Set(refBlockIndex(j), 1)
		}
		off := p.refBlocks.Add(ClusterCount(i)).Offset(p.g)
		if _, err := s.WriteAt(block, int64(off)); err != nil {
			return fmt.Errorf("qcow2: write refcount block: %w", err)
		}
		w := writeBuf(table[i*reftableEntrySize:])
		w.u64(uint64(off))
	}
	if _, err := s.WriteAt(table, int64(p.refTable.Offset(p.g))); err != nil {
		return fmt.Errorf("qcow2: write reftable: %w", err)
	}
	return nil
}

// writeL1 writes the L1 table: exactly l1_size entries, as QEMU does, so that an image without
// preallocation ends right after them.
func (p *createPlan) writeL1(s Storage) error {
	buf := make([]byte, p.l1Entries*l1EntrySize)
	if p.prealloc != preallocOff {
		w := writeBuf(buf)
		for i := uint64(0); i < p.l1Entries; i++ {
			w.u64(uint64(makeL1Entry(p.l2Cluster(l1Index(i)).Offset(p.g), true)))
		}
	}
	if _, err := s.WriteAt(buf, int64(p.l1.Offset(p.g))); err != nil {
		return fmt.Errorf("qcow2: write L1 table: %w", err)
	}
	return nil
}

// zeroFill writes zeros over [off, off+n) of s.
func zeroFill(s Storage, off, n uint64) error {
	const chunk = 1 << 20
	zeros := make([]byte, min(n, chunk))
	for n > 0 {
		k := min(n, chunk)
		if _, err := s.WriteAt(zeros[:k], int64(off)); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// reserve makes [off, off+n) of s allocated space: fallocate, or zeros where the file system
// cannot (as posix_fallocate does), or zeros for "full".
func reserve(s Storage, off, n uint64, mode string) error {
	if n == 0 {
		return nil
	}
	if mode == preallocFalloc {
		if a, ok := s.(Preallocator); ok {
			err := a.Allocate(int64(off), int64(n))
			if !errors.Is(err, ErrUnsupported) {
				return err
			}
		}
	}
	return zeroFill(s, off, n)
}
