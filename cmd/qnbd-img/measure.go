// qnbd-img measure: how large an image of a format would be, for a size or for the contents
// of an existing image, with qemu-img 7.2's figures, checks and messages (docs/chains.md).
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// measureRequest is a parsed measure command line.
type measureRequest struct {
	srcFmt, outFmt string
	options        string
	haveOptions    bool
	size           uint64
	haveSize       bool
	output         outputFormat
	forceShare     bool
	filename       string
}

// measureInfo is QEMU's BlockMeasureInfo.
type measureInfo struct {
	required, fullyAllocated uint64
	bitmaps                  uint64
	hasBitmaps               bool
}

func (a *app) measure(argv []string) int {
	r := measureRequest{outFmt: "raw"}
	snapshot := false
	g := getopt.New(argv, ":hf:O:o:l:U", []getopt.Option{
		longHelp, longObject, longImageOpts, longForceShare,
		getopt.ReqArg("output", optOutput),
		getopt.ReqArg("size", optSizeOpt),
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			r.srcFmt = g.Arg
		case 'O':
			r.outFmt = g.Arg
		case 'o':
			if !a.accumulateOptions(&r.options, g.Arg) {
				return 1
			}
			r.haveOptions = true
		case 'l':
			snapshot = true
		case 'U':
			r.forceShare = true
		case optOutput:
			o, ok := a.parseOutput(g.Arg, true)
			if !ok {
				return 1
			}
			r.output = o
		case optSizeOpt:
			v, ok := a.cvtnum("image size", g.Arg)
			if !ok {
				return 1
			}
			r.size, r.haveSize = uint64(v), true
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	ops := g.Operands()
	switch {
	case len(ops) > 1:
		a.errorf("At most one filename argument is allowed.")
		return 1
	case len(ops) == 1:
		r.filename = ops[0]
	}
	if r.filename == "" && (r.srcFmt != "" || snapshot) {
		a.errorf("--image-opts, -f, and -l require a filename argument.")
		return 1
	}
	if r.filename != "" && r.haveSize {
		a.errorf("--size N cannot be used together with a filename.")
		return 1
	}
	if r.filename == "" && !r.haveSize {
		a.errorf("Either --size N or one filename must be specified.")
		return 1
	}
	if snapshot {
		a.errorf("Measuring an internal snapshot (-l) is not supported by %s", a.prog)
		return 1
	}
	return a.doMeasure(r)
}

// doMeasure opens the input (if any), parses the target format's options and prints the
// figures.
func (a *app) doMeasure(r measureRequest) int {
	var in imgfmt.Disk
	if r.filename != "" {
		in = a.openImage(r.filename, r.srcFmt, imgfmt.OpenOptions{ReadOnly: true, ForceShare: r.forceShare})
		if in == nil {
			return 1
		}
		defer in.Close()
	}
	list := createOptList(r.outFmt, true)
	if list == nil {
		if qemuFormats[r.outFmt] {
			a.errorf("Block driver '%s' does not support size measurement", r.outFmt)
		} else {
			a.errorf("Unknown file format '%s'", r.outFmt)
		}
		return 1
	}
	opts := newQemuOpts(list, a.warnf)
	if r.haveOptions {
		if err := opts.parse(r.options); err != nil {
			a.errorf("%s", describe(err))
			a.errorf("Invalid options for file format '%s'", r.outFmt)
			return 1
		}
	}
	if r.haveSize {
		opts.setNumber("size", r.size)
	}
	var info measureInfo
	var err error
	if r.outFmt == "raw" {
		info, err = measureRaw(opts, in)
	} else {
		var bitmaps []imgfmt.Bitmap
		var inV3 bool
		if in != nil && in.Format() == imgfmt.Qcow2 {
			bitmaps, inV3, err = inputBitmaps(r.filename, r.forceShare)
		}
		if err == nil {
			info, err = measureQcow2(opts, in, inV3, bitmaps)
		}
	}
	if err != nil {
		a.errorf("%s", describe(err))
		return 1
	}
	a.printMeasure(info, r.output)
	return 0
}

// inputBitmaps lists the persistent bitmaps of a qcow2 input and says whether it is a
// version 3 image (only those support persistent bitmaps).
func inputBitmaps(name string, forceShare bool) ([]imgfmt.Bitmap, bool, error) {
	info, err := imgfmt.QueryInfo(name, imgfmt.Qcow2, forceShare)
	if err != nil {
		return nil, false, err
	}
	if info.Qcow2 == nil || !info.Qcow2.V3() {
		return nil, false, nil
	}
	return info.Qcow2.Bitmaps, true, nil
}

func (a *app) printMeasure(info measureInfo, out outputFormat) {
	if out == outputJSON {
		d := newQdict().put("required", info.required).put("fully-allocated", info.fullyAllocated)
		if info.hasBitmaps {
			d.put("bitmaps", info.bitmaps)
		}
		fmt.Fprintln(a.stdout, prettyJSON(d))
		return
	}
	fmt.Fprintf(a.stdout, "required size: %d\n", info.required)
	fmt.Fprintf(a.stdout, "fully allocated size: %d\n", info.fullyAllocated)
	if info.hasBitmaps {
		fmt.Fprintf(a.stdout, "bitmaps size: %d\n", info.bitmaps)
	}
}

// measureRaw is QEMU's raw measure: the input's size, or the size option rounded up to a
// sector; a raw file is always fully allocated.
func measureRaw(opts *qemuOpts, in imgfmt.Disk) (measureInfo, error) {
	n := roundUp512(opts.num("size"))
	if in != nil {
		n = in.Size()
	}
	return measureInfo{required: n, fullyAllocated: n}, nil
}
