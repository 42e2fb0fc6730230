// qnbd-img create: qemu-img create's options, messages and checks (bdrv_img_create and the
// raw and qcow2 drivers' creation rules), then the engine's Create.
package main

import (
	"errors"
	"fmt"
	"math/bits"
	"syscall"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/qcow2"
)

func (a *app) create(argv []string) int {
	format := "raw"
	var baseFmt, base, options string
	var haveBaseFmt, haveBase, haveOptions, quiet, noBacking bool
	g := getopt.New(argv, ":F:b:f:ho:qu", []getopt.Option{longHelp, longObject})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'F':
			baseFmt, haveBaseFmt = g.Arg, true
		case 'b':
			base, haveBase = g.Arg, true
		case 'f':
			format = g.Arg
		case 'o':
			if !a.accumulateOptions(&options, g.Arg) {
				return 1
			}
			haveOptions = true
		case 'q':
			quiet = true
		case 'u':
			noBacking = true
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	ops := g.Operands()
	filename := ""
	if len(ops) > 0 {
		filename = ops[0]
	}
	if haveOptions && hasHelpOption(options) {
		return a.printOptionHelp(filename, format)
	}
	if len(ops) < 1 {
		return a.usage("Expecting image file name")
	}
	size := int64(-1)
	if len(ops) > 1 {
		v, ok := a.cvtnum("image size", ops[1])
		if !ok {
			return 1
		}
		size = v
	}
	if len(ops) > 2 {
		return a.usage("Unexpected argument: %s", ops[2])
	}
	req := createRequest{
		filename: filename, format: format, options: options, haveOptions: haveOptions,
		size: size, base: base, haveBase: haveBase, baseFmt: baseFmt, haveBaseFmt: haveBaseFmt,
		noBacking: noBacking, quiet: quiet,
	}
	if err := a.imgCreate(req); err != nil {
		a.errorf("%s: %s", filename, describe(err))
		return 1
	}
	return 0
}

// accumulateOptions joins -o arguments with commas after checking each, as qemu-img does.
func (a *app) accumulateOptions(all *string, arg string) bool {
	if !validOptionList(arg) {
		a.errorf("Invalid option list: %s", arg)
		return false
	}
	if *all == "" {
		*all = arg
	} else {
		*all += "," + arg
	}
	return true
}

// createOptList returns the creation options of a format, with the host file's options when
// the target file is known; nil for a format qnbd-img cannot create.
func createOptList(format string, withFile bool) optList {
	var lists [][]optDesc
	switch format {
	case "qcow2":
		lists = append(lists, qcow2OptsDescs)
	case "raw":
		lists = append(lists, rawOptsDescs)
	default:
		return nil
	}
	if withFile {
		lists = append(lists, fileOptsDescs)
	}
	return mergeOpts(lists...)
}

// unknownFormat is the message for a -f / -O naming a format qnbd-img cannot create.
func unknownFormat(format string) string {
	if qemuFormats[format] {
		return fmt.Sprintf("Format '%s' is not supported by qnbd-img (raw and qcow2 only)", format)
	}
	return fmt.Sprintf("Unknown file format '%s'", format)
}

// printOptionHelp is print_block_option_help.
func (a *app) printOptionHelp(filename, format string) int {
	list := createOptList(format, filename != "")
	if list == nil {
		a.errorf("%s", unknownFormat(format))
		return 1
	}
	if filename != "" {
		fmt.Fprintf(a.stdout, "Supported options:\n")
	} else {
		fmt.Fprintf(a.stdout, "Supported %s options:\n", format)
	}
	fmt.Fprint(a.stdout, list.printHelp())
	if filename == "" {
		fmt.Fprintf(a.stdout, "\nThe protocol level may support further options.\n"+
			"Specify the target filename to include those options.\n")
	}
	return 0
}

// createRequest is everything create (or convert) asks bdrv_img_create for.
type createRequest struct {
	filename, format      string
	options               string
	haveOptions           bool
	size                  int64 // -1: not given
	base, baseFmt         string
	haveBase, haveBaseFmt bool
	noBacking, quiet      bool
}

// imgCreate is bdrv_img_create followed by the format driver's create: option parsing, the
// backing file, the "Formatting" line, validation and creation. Errors carry QEMU's text.
func (a *app) imgCreate(r createRequest) error {
	list := createOptList(r.format, true)
	if list == nil {
		return imgfmt.QemuError(unknownFormat(r.format))
	}
	opts := newQemuOpts(list, a.warnf)
	if r.haveOptions {
		if err := opts.parse(r.options); err != nil {
			return err
		}
	}
	if !opts.has("size") {
		if r.size >= 0 {
			opts.setNumber("size", uint64(r.size))
		}
	} else if r.size >= 0 {
		return qemuErrorf("The image size must be specified only once")
	}
	if r.haveBase {
		if list.find("backing_file") == nil {
			return qemuErrorf("Backing file not supported for file format '%s'", r.format)
		}
		opts.setString("backing_file", r.base)
	}
	if r.haveBaseFmt {
		if list.find("backing_fmt") == nil {
			return qemuErrorf("Backing file format not supported for file format '%s'", r.format)
		}
		opts.setString("backing_fmt", r.baseFmt)
	}
	backing, backingFmt := opts.str("backing_file"), opts.str("backing_fmt")
	if opts.has("backing_file") {
		if backing == r.filename {
			return qemuErrorf("Error: Trying to create an image with the same filename as the backing file")
		}
		if backing == "" {
			return qemuErrorf("Expected backing file name, got empty string")
		}
	}
	if opts.has("backing_file") && !r.noBacking {
		full := imgfmt.FullBackingFilename(r.filename, backing)
		f, msg := imageFormat(backingFmt)
		if msg != "" {
			return qemuErrorf("%s\nCould not open backing image.", msg)
		}
		d, err := imgfmt.Open(full, imgfmt.OpenOptions{Format: f, ReadOnly: true, NoBacking: true, Lock: &noLock, Warn: a.openWarning})
		if err != nil {
			return qemuErrorf("%s\nCould not open backing image.", openErrorText(full, err))
		}
		detected, bsize := d.Format(), d.Size()
		d.Close()
		if !opts.has("backing_fmt") {
			return qemuErrorf("Backing file specified without backing format\nDetected format of %s.", detected)
		}
		if !opts.has("size") {
			opts.setNumber("size", bsize)
		}
	} else if opts.has("backing_file") && !opts.has("backing_fmt") {
		return qemuErrorf("Backing file specified without backing format")
	}
	if !opts.has("size") {
		return qemuErrorf("Image creation needs a size parameter")
	}
	if !r.quiet {
		fmt.Fprintf(a.stdout, "Formatting '%s', fmt=%s %s\n", r.filename, r.format, opts.print())
	}
	if r.format == "raw" {
		return createRaw(r.filename, opts)
	}
	o, err := qcow2CreateOptions(opts)
	if err != nil {
		return err
	}
	o.UnsafeBacking = r.noBacking
	if err := imgfmt.CreateQcow2(r.filename, o); err != nil {
		return err
	}
	return nil
}

// createRaw is the raw driver's create over the host file.
func createRaw(name string, opts *qemuOpts) error {
	prealloc := imgfmt.PreallocOff
	if opts.has("preallocation") {
		switch v := opts.str("preallocation"); v {
		case "off", "falloc", "full":
			prealloc = imgfmt.Prealloc(v)
		case "metadata":
			return qemuErrorf("Unsupported preallocation mode: metadata")
		default:
			return qemuErrorf("invalid parameter value: %s", v)
		}
	}
	err := imgfmt.CreateRaw(name, opts.num("size"), prealloc)
	if errors.Is(err, syscall.EFBIG) {
		return qemuErrorf("The image size is too large for file format 'raw'")
	}
	if _, locked := lockText(err); locked {
		return err // QEMU's own two lines, without "Could not create"
	}
	if err != nil {
		return qemuErrorf("Could not create '%s': %s", name, strerror(err))
	}
	return nil
}

// qcow2CreateOptions validates qcow2 creation options in the order and with the messages of
// QEMU 7.2's qcow2_co_create_opts / qcow2_co_create.
func qcow2CreateOptions(opts *qemuOpts) (imgfmt.Qcow2CreateOptions, error) {
	o := imgfmt.Qcow2CreateOptions{Size: opts.num("size"), Compat: "1.1", Preallocation: imgfmt.PreallocOff}
	version := 3
	if opts.has("compat") {
		switch v := opts.str("compat"); v {
		case "0.10", "v2":
			version, o.Compat = 2, "0.10"
		case "1.1", "v3":
		default:
			return o, qemuErrorf("Parameter 'version' does not accept value '%s'", v)
		}
	}
	if opts.has("preallocation") {
		p, ok := imgfmt.ParsePrealloc(opts.str("preallocation"))
		if !ok {
			return o, qemuErrorf("Parameter 'preallocation' does not accept value '%s'", opts.str("preallocation"))
		}
		o.Preallocation = p
	}
	if opts.has("compression_type") {
		switch v := opts.str("compression_type"); v {
		case "zlib":
		case "zstd":
			o.CompressionType = qcow2.CompressionZstd
		default:
			return o, qemuErrorf("Parameter 'compression-type' does not accept value '%s'", v)
		}
	}
	clusterSize := uint64(65536)
	if opts.has("cluster_size") {
		clusterSize = opts.num("cluster_size")
	}
	o.ExtendedL2 = opts.boolean("extended_l2")
	if o.ExtendedL2 && version < 3 {
		return o, qemuErrorf("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	if clusterSize < 512 || clusterSize > 2<<20 || clusterSize&(clusterSize-1) != 0 {
		return o, qemuErrorf("Cluster size must be a power of two between 512 and 2048k")
	}
	if o.ExtendedL2 && clusterSize < 512*qcow2.SubclustersPerCluster {
		return o, qemuErrorf("Extended L2 entries are only supported with cluster sizes of at least %d bytes", 512*qcow2.SubclustersPerCluster)
	}
	o.ClusterSize = uint32(clusterSize)
	hasBacking := opts.has("backing_file")
	if hasBacking && o.Preallocation != imgfmt.PreallocOff && !o.ExtendedL2 {
		return o, qemuErrorf("Backing file and preallocation can only be used at the same time if extended_l2 is on")
	}
	if opts.has("backing_fmt") && !hasBacking {
		return o, qemuErrorf("Backing format cannot be used without backing file")
	}
	o.LazyRefcounts = opts.boolean("lazy_refcounts")
	if version < 3 && o.LazyRefcounts {
		return o, qemuErrorf("Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	refBits := uint64(16)
	if opts.has("refcount_bits") {
		refBits = opts.num("refcount_bits")
	}
	if refBits > 64 || refBits == 0 || refBits&(refBits-1) != 0 {
		return o, qemuErrorf("Refcount width must be a power of two and may not exceed 64 bits")
	}
	if version < 3 && refBits != 16 {
		return o, qemuErrorf("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
	}
	o.RefcountBits = uint32(refBits)
	o.DataFile = opts.str("data_file")
	o.DataFileRaw = opts.boolean("data_file_raw")
	if o.DataFileRaw && o.DataFile == "" {
		return o, qemuErrorf("data-file-raw requires data-file")
	}
	if o.DataFileRaw && hasBacking {
		return o, qemuErrorf("Backing file and data-file-raw cannot be used at the same time")
	}
	if o.DataFileRaw && o.Preallocation == imgfmt.PreallocOff {
		// A raw data file needs a 1:1 mapping in the metadata (QEMU does the same).
		o.Preallocation = imgfmt.PreallocMetadata
	}
	if o.DataFile != "" && version < 3 {
		return o, qemuErrorf("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	if o.CompressionType != qcow2.CompressionZlib && version < 3 {
		return o, qemuErrorf("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)")
	}
	o.BackingFile, o.BackingFormat = opts.str("backing_file"), opts.str("backing_fmt")
	if !qcow2SizeFits(roundUp512(o.Size), clusterSize, o.ExtendedL2) {
		return o, qemuErrorf("The image size is too large for file format 'qcow2' (try using a larger cluster size)")
	}
	return o, nil
}

func roundUp512(n uint64) uint64 {
	if n > 1<<64-512 {
		return n
	}
	return (n + 511) &^ 511
}

// qcow2SizeFits reports whether a virtual size fits QEMU's 32 MiB limit on the L1 table.
func qcow2SizeFits(size, clusterSize uint64, extL2 bool) bool {
	entrySize := uint64(8)
	if extL2 {
		entrySize = 16
	}
	perL1 := clusterSize * (clusterSize / entrySize) // guest bytes one L2 table maps
	l1 := size / perL1
	if size%perL1 != 0 {
		l1++
	}
	hi, lo := bits.Mul64(l1, 8)
	return hi == 0 && lo <= qcow2.MaxL1Bytes
}
