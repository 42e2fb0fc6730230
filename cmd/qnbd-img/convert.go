// qnbd-img convert: option handling and target creation (qemu-img convert's checks and
// messages); the copy itself is in copy.go.
package main

import (
	"math"
	"strings"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// maxBufSectors is qemu-img's MAX_BUF_SECTORS: the largest -S, in sectors.
const maxBufSectors = 32768

// maxWorkers is qemu-img's MAX_COROUTINES: the largest -m.
const maxWorkers = 16

// convertRequest is a parsed convert command line.
type convertRequest struct {
	srcFmt, outFmt string
	outFmtGiven    bool
	options        string
	haveOptions    bool
	minSparse      uint64 // bytes; 0 disables sparse detection
	workers        int
	outOfOrder     bool // -W
	cache          string
	skipCreate     bool
	targetIsZero   bool
	forceShare     bool // -U: the sources are locked sharing everything
	progress       bool
	quiet          bool
	srcs           []string
	out            string
	compress       bool // -c (copy_compress.go)
	// bitmaps copies the source's persistent bitmaps (--bitmaps), skipBroken skips its
	// in-use ones (--skip-broken-bitmaps; convert_bitmaps.go).
	bitmaps, skipBroken bool
}

func (a *app) convert(argv []string) int {
	r := convertRequest{minSparse: 8 * imgfmt.SectorSize, workers: 8}
	cache, srcCache := "unsafe", "writeback"
	explicitSparse, copyRange := false, false
	g := getopt.New(argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", []getopt.Option{
		longHelp, longObject, longImageOpts, longForceShare,
		getopt.NoArg("target-image-opts", optTargetImageOpts),
		getopt.NoArg("salvage", optSalvage),
		getopt.NoArg("target-is-zero", optTargetIsZero),
		getopt.NoArg("bitmaps", optBitmaps),
		getopt.NoArg("skip-broken-bitmaps", optForce),
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			r.srcFmt = g.Arg
		case 'O':
			r.outFmt, r.outFmtGiven = g.Arg, true
		case 'o':
			if !a.accumulateOptions(&r.options, g.Arg) {
				return 1
			}
			r.haveOptions = true
		case 'S':
			v, ok := a.sparseSize(g.Arg)
			if !ok {
				return 1
			}
			r.minSparse, explicitSparse = v, true
		case 'p':
			r.progress = true
		case 't':
			cache = g.Arg
		case 'T':
			srcCache = g.Arg
		case 'q':
			r.quiet = true
		case 'n':
			r.skipCreate = true
		case 'm':
			v, ok := parseCLong(g.Arg)
			if !ok || v < 1 || v > maxWorkers {
				a.errorf("Invalid number of coroutines. Allowed number of coroutines is between 1 and %d", maxWorkers)
				return 1
			}
			r.workers = int(v)
		case 'W':
			r.outOfOrder = true
		case 'U':
			r.forceShare = true
		case 'C':
			copyRange = true
		case optTargetIsZero:
			r.targetIsZero = true
		case 'c':
			r.compress = true
		case optBitmaps:
			r.bitmaps = true
		case optForce:
			r.skipBroken = true
		default:
			if a.convertRefuses(c) {
				return 1
			}
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	if !a.convertFlagsAgree(&r, explicitSparse, copyRange) {
		return 1
	}
	ops := g.Operands()
	if len(ops) >= 2 {
		r.srcs, r.out = ops[:len(ops)-1], ops[len(ops)-1]
	}
	if r.haveOptions && hasHelpOption(r.options) {
		return a.printOptionHelp(r.out, r.outFmt)
	}
	if len(r.srcs) < 1 {
		a.errorf("Must specify image file name")
		return 1
	}
	if !validCacheMode(srcCache) {
		a.errorf("Invalid source cache option: %s", srcCache)
		return 1
	}
	if !validCacheMode(cache) {
		a.errorf("Invalid cache option: %s", cache)
		return 1
	}
	r.cache = cache
	return a.doConvert(r)
}

// convertFlagsAgree defaults the output format and refuses the flag combinations qemu-img
// refuses, in qemu-img's order; false means it printed the error.
func (a *app) convertFlagsAgree(r *convertRequest, explicitSparse, copyRange bool) bool {
	if !r.outFmtGiven {
		r.outFmt = "raw"
	}
	if r.skipBroken && !r.bitmaps {
		a.errorf("Use of --skip-broken-bitmaps requires --bitmaps")
		return false
	}
	if explicitSparse && copyRange {
		a.errorf("Cannot enable copy offloading when -S is used")
		return false
	}
	if r.compress && copyRange {
		a.errorf("Cannot enable copy offloading when -c is used")
		return false
	}
	if r.skipCreate && r.haveOptions {
		a.errorf("-o has no effect when skipping image creation")
		return false
	}
	if r.targetIsZero && !r.skipCreate {
		a.errorf("--target-is-zero requires use of -n flag")
		return false
	}
	return true
}

// sparseSize reads -S, the run of zeros that convert leaves unallocated; ok is false after
// printing qemu-img's error.
func (a *app) sparseSize(arg string) (uint64, bool) {
	v, ok := a.cvtnum("buffer size for sparse output", arg)
	if !ok {
		return 0, false
	}
	if v%imgfmt.SectorSize != 0 || v/imgfmt.SectorSize > maxBufSectors {
		a.errorf("Invalid buffer size for sparse output specified. Valid sizes are "+
			"multiples of %d up to %d. Select 0 to disable sparse detection (fully "+
			"allocates output).", imgfmt.SectorSize, maxBufSectors*imgfmt.SectorSize)
		return 0, false
	}
	return uint64(v), true
}

// convertRefuses prints why convert refuses option c, one qnbd-img does not implement, and
// reports whether it did.
func (a *app) convertRefuses(c rune) bool {
	switch c {
	case 'B', 'F':
		a.errorf("A backing file for the convert target (-B, -F) is not supported by %s", a.prog)
	case 'l':
		a.errorf("Converting from an internal snapshot (-l) is not supported by %s", a.prog)
	case 'r':
		a.errorf("Rate limiting (-r) is not supported by %s", a.prog)
	case optSalvage:
		a.errorf("--salvage is not supported by %s", a.prog)
	default:
		return false
	}
	return true
}

// parseCLong is qemu_strtol with base 0 on the whole string (values outside int64 refused).
func parseCLong(s string) (int64, bool) {
	v, n, err := strtou64(s, 0)
	if err != nil || n != len(s) {
		return 0, false
	}
	neg := strings.Contains(s, "-")
	if (!neg && v > math.MaxInt64) || (neg && v != 0 && v < 1<<63) {
		return 0, false
	}
	return int64(v), true
}

// doConvert opens the sources, creates or opens the target and copies.
func (a *app) doConvert(r convertRequest) int {
	p := newProgress(a.stdout, r.progress && !r.quiet, 1.0)
	p.print(0, 100)
	var srcs []imgfmt.Disk
	defer func() {
		for _, d := range srcs {
			d.Close()
		}
	}()
	var total uint64
	for _, name := range r.srcs {
		d := a.openImage(name, r.srcFmt, imgfmt.OpenOptions{ReadOnly: true, ForceShare: r.forceShare,
			Lock: &convertSourceLock, ReadBitmaps: r.bitmaps})
		if d == nil {
			p.end()
			return 1
		}
		srcs = append(srcs, d)
		total += d.Size()
	}
	if r.compress && r.outFmt == "raw" {
		a.errorf("Compression not supported for this file format")
		p.end()
		return 1
	}
	if r.bitmaps && !a.convertCheckBitmaps(r, srcs) {
		p.end()
		return 1
	}
	dst, code := a.convertTarget(r, total)
	if dst == nil || (r.bitmaps && !a.targetTakesBitmaps(dst)) {
		p.end()
		return max(code, 1)
	}
	then := a.bitmapCopy(r, srcs, dst)
	if r.compress {
		return a.convertCompressed(r, srcs, dst, total, p, then)
	}
	cp := &copier{a: a, srcs: srcs, dst: dst, total: total, minSparse: r.minSparse,
		workers: r.workers, zeroInit: !r.skipCreate || r.targetIsZero, p: p,
		inOrder: !r.outOfOrder && dst.Format() == imgfmt.Qcow2}
	if cs, ok := dst.(interface{ ClusterSize() uint64 }); ok {
		cp.cluster = cs.ClusterSize()
	}
	err := cp.run()
	return a.finishConvert(dst, p, err, then)
}

// convertTarget creates the target (unless -n) and opens it for writing. nil means the
// error was reported and code is the exit status.
func (a *app) convertTarget(r convertRequest, total uint64) (imgfmt.Disk, int) {
	if !r.skipCreate {
		list := createOptList(r.outFmt, true)
		if list == nil {
			a.errorf("%s", unknownFormat(r.outFmt))
			return nil, 1
		}
		opts := newQemuOpts(list, a.warnf)
		if r.haveOptions {
			if err := opts.parse(r.options); err != nil {
				a.errorf("%s", describe(err))
				return nil, 1
			}
		}
		if opts.has("backing_file") {
			a.errorf("A backing file for the convert target is not supported by %s", a.prog)
			return nil, 1
		}
		opts.setNumber("size", roundUp512(total))
		var err error
		if r.outFmt == "raw" {
			err = createRaw(r.out, opts)
		} else {
			var o imgfmt.Qcow2CreateOptions
			if o, err = qcow2CreateOptions(opts); err == nil {
				err = imgfmt.CreateQcow2(r.out, o)
			}
		}
		if err != nil {
			a.errorf("%s: error while converting %s: %s", r.out, r.outFmt, describe(err))
			return nil, 1
		}
	}
	format := r.outFmt
	if r.skipCreate && !r.outFmtGiven {
		format = "" // probe, so that a probed raw target refuses to be given a qcow2 header
		// qemu-img would open the target as raw here whatever it holds; refuse to overwrite a
		// qcow2 image's metadata with raw data unless -O raw says so.
		if f, err := imgfmt.Probe(r.out); err == nil && f == imgfmt.Qcow2 {
			a.errorf("'%s' is a qcow2 image: give -O qcow2 to convert into it, or -O raw to overwrite it as raw bytes", r.out)
			return nil, 1
		}
	}
	dst := a.openImage(r.out, format, imgfmt.OpenOptions{NoFlush: r.cache == "unsafe", Lock: &convertTargetLock})
	if dst == nil {
		return nil, 1
	}
	if r.skipCreate && dst.Size() < total {
		a.errorf("output file is smaller than input file")
		dst.Close()
		return nil, 1
	}
	return dst, 0
}

// finishConvert runs then (nil: nothing; convert_bitmaps.go) after a copy that succeeded, closes
// the new image, reports a close failure as qemu-img does, and completes the progress bar only
// on success; it returns the exit code.
func (a *app) finishConvert(dst imgfmt.Disk, p *progress, err error, then func() error) int {
	if err == nil && then != nil {
		err = then()
	}
	if cerr := dst.Close(); err == nil && cerr != nil {
		a.errorf("Could not close the new file: %s", strerror(cerr))
		err = cerr
	}
	if err != nil {
		p.end()
		return 1
	}
	p.print(100, 0)
	p.end()
	return 0
}
