// qnbd-img resize: grow or shrink an image, with qemu-img resize's argument handling.
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

func (a *app) resize(argv []string) int {
	// The size is taken off the end first, so that "-1G" is not parsed as an option.
	if len(argv) < 3 {
		return a.usage("Not enough arguments")
	}
	sizeArg := argv[len(argv)-1]
	argv = argv[:len(argv)-1]
	var format string
	var quiet, shrink bool
	prealloc := imgfmt.PreallocOff
	g := getopt.New(argv, ":f:hq", []getopt.Option{
		longHelp, longObject, longImageOpts,
		getopt.ReqArg("preallocation", optPreallocation),
		getopt.NoArg("shrink", optShrink),
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			format = g.Arg
		case 'q':
			quiet = true
		case optPreallocation:
			p, ok := imgfmt.ParsePrealloc(g.Arg)
			if !ok {
				a.errorf("Invalid preallocation mode '%s'", g.Arg)
				return 1
			}
			prealloc = p
		case optShrink:
			shrink = true
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	ops := g.Operands()
	if len(ops) != 1 {
		return a.usage("Expecting image file name and size")
	}
	name := ops[0]
	relative := 0
	switch {
	case len(sizeArg) > 0 && sizeArg[0] == '+':
		relative, sizeArg = 1, sizeArg[1:]
	case len(sizeArg) > 0 && sizeArg[0] == '-':
		relative, sizeArg = -1, sizeArg[1:]
	}
	n, warnHex, err := parseOptionSize("size", sizeArg)
	if err != nil {
		a.errorf("%s", describe(err))
		return 1
	}
	if warnHex {
		a.warnf("Using a multiplier suffix on hex numbers is deprecated: %s", sizeArg)
	}
	d := a.openImage(name, format, imgfmt.OpenOptions{})
	if d == nil {
		return 1
	}
	defer d.Close()
	current := int64(d.Size())
	total := int64(n)
	switch relative {
	case 1:
		total = current + int64(n)
	case -1:
		total = current - int64(n)
	}
	if total <= 0 {
		a.errorf("New image size must be positive")
		return 1
	}
	if prealloc != imgfmt.PreallocOff && total < current {
		a.errorf("Preallocation can only be used for growing images")
		return 1
	}
	if total < current && !shrink {
		a.errorf("Use the --shrink option to perform a shrink operation.")
		a.warnf("Shrinking an image will delete all data beyond the shrunken image's end. " +
			"Before performing such an operation, make sure there is no important data there.")
		return 1
	}
	if d.Format() == imgfmt.Qcow2 && total%imgfmt.SectorSize != 0 {
		a.errorf("The new size must be a multiple of %d", imgfmt.SectorSize)
		return 1
	}
	if d.Format() == imgfmt.Raw && prealloc == imgfmt.PreallocMetadata {
		a.errorf("Unsupported preallocation mode: metadata")
		return 1
	}
	if err := d.Resize(uint64(total), prealloc); err != nil {
		a.errorf("%s", describe(err))
		return 1
	}
	if !quiet {
		fmt.Fprintln(a.stdout, "Image resized.")
	}
	return 0
}
