// qnbd-img bitmap: add, remove, clear, enable, disable and merge the persistent dirty bitmaps
// of a qcow2 image, with qemu-img 7.2's argument handling, order of checks, messages and exit
// codes (docs/bitmaps.md).
package main

import (
	"errors"
	"fmt"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// qemuNodeName stands for the node name QEMU puts in some bitmap messages: an automatic
// "#blockNNN" whose number changes from run to run, so no value is more right than another.
const qemuNodeName = "#block100"

// bitmapAction is one --add, --remove, --clear, --enable, --disable or --merge SOURCE, run in
// command line order.
type bitmapAction struct {
	op  string // QEMU's name for it in "Operation OP on bitmap NAME failed"
	src string // --merge's source bitmap
}

// bitmapRequest is a parsed bitmap command line.
type bitmapRequest struct {
	format, srcFile, srcFormat string
	granularity                int64 // 0: not given
	actions                    []bitmapAction
	filename, bitmap           string
}

func (a *app) bitmap(argv []string) int {
	r, code, ok := a.parseBitmap(argv)
	if !ok {
		return code
	}
	// qemu-img opens the image read-write without the resize permission, and the source
	// read-only as its other commands do (lock.go).
	d := a.openImage(r.filename, r.format, imgfmt.OpenOptions{Lock: &convertTargetLock})
	if d == nil {
		return 1
	}
	src := d
	if r.srcFile != "" {
		src = a.openImage(r.srcFile, r.srcFormat, imgfmt.OpenOptions{ReadOnly: true, ReadBitmaps: true})
		if src == nil {
			d.Close()
			return 1
		}
		defer src.Close()
	}
	code = 0
	for _, act := range r.actions {
		if err := bitmapDo(d, src, r, act); err != nil {
			a.errorf("Operation %s on bitmap %s failed: %s", act.op, r.bitmap, bitmapErrorText(r.bitmap, err))
			code = 1
			break
		}
	}
	// As in QEMU, what the operations before a failure did is stored all the same.
	if err := d.Close(); err != nil && code == 0 {
		a.errorf("%s", describe(err))
		code = 1
	}
	return code
}

// parseBitmap reads the options and checks them in qemu-img's order; ok is false when the
// command must stop with code.
func (a *app) parseBitmap(argv []string) (r bitmapRequest, code int, ok bool) {
	add, merge := false, false
	g := getopt.New(argv, ":b:f:F:g:h", []getopt.Option{longHelp, longObject, longImageOpts,
		getopt.NoArg("add", optAdd), getopt.NoArg("remove", optRemove), getopt.NoArg("clear", optClear),
		getopt.NoArg("enable", optEnable), getopt.NoArg("disable", optDisable), getopt.ReqArg("merge", optMerge),
		getopt.ReqArg("granularity", 'g'), getopt.ReqArg("source-file", 'b'), getopt.ReqArg("source-format", 'F')})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'b':
			r.srcFile = g.Arg
		case 'f':
			r.format = g.Arg
		case 'F':
			r.srcFormat = g.Arg
		case 'g':
			v, valid := a.cvtnum("granularity", g.Arg)
			if !valid {
				return r, 1, false
			}
			r.granularity = v
		case optAdd:
			r.actions, add = append(r.actions, bitmapAction{op: "add"}), true
		case optRemove:
			r.actions = append(r.actions, bitmapAction{op: "remove"})
		case optClear:
			r.actions = append(r.actions, bitmapAction{op: "clear"})
		case optEnable:
			r.actions = append(r.actions, bitmapAction{op: "enable"})
		case optDisable:
			r.actions = append(r.actions, bitmapAction{op: "disable"})
		case optMerge:
			r.actions, merge = append(r.actions, bitmapAction{op: "merge", src: g.Arg}), true
		default:
			if code, done := a.commonOption(g, c); done {
				return r, code, false
			}
		}
	}
	switch ops := g.Operands(); {
	case len(r.actions) == 0:
		a.errorf("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
	case r.granularity != 0 && !add:
		a.errorf("granularity only supported with --add")
	case r.srcFormat != "" && r.srcFile == "":
		a.errorf("-F only supported with -b")
	case r.srcFile != "" && !merge:
		a.errorf("Merge bitmap source file only supported with --merge")
	case len(ops) != 2:
		a.errorf("Expecting filename and bitmap name")
	default:
		r.filename, r.bitmap = ops[0], ops[1]
		return r, 0, true
	}
	return r, 1, false
}

// bitmapDo runs one action on the bitmap r.bitmap of d.
func bitmapDo(d, src imgfmt.Disk, r bitmapRequest, act bitmapAction) error {
	switch act.op {
	case "add":
		// QEMU takes the granularity as a 32-bit number, given when the 64-bit one is not 0:
		// 4G is given, and its low half 0 is refused (1 stands for that).
		g := uint64(uint32(r.granularity))
		if r.granularity != 0 && g == 0 {
			g = 1
		}
		return imgfmt.AddBitmap(d, r.bitmap, g, false)
	case "remove":
		return imgfmt.RemoveBitmap(d, r.bitmap)
	case "clear":
		return imgfmt.ClearBitmap(d, r.bitmap)
	case "enable", "disable":
		return imgfmt.EnableBitmap(d, r.bitmap, act.op == "enable")
	case "merge":
		return imgfmt.MergeBitmap(d, r.bitmap, src, act.src)
	}
	return fmt.Errorf("unknown bitmap operation %q", act.op)
}

// bitmapErrorText is QEMU's text for a failed operation on bitmap name: the message, QEMU's
// prefix for a bitmap it cannot make persistent, and its hint on a line of its own.
func bitmapErrorText(name string, err error) string {
	var be *imgfmt.BitmapError
	switch {
	case errors.As(err, &be):
		msg := be.Msg
		if be.CantStore {
			msg = fmt.Sprintf("Can't make bitmap '%s' persistent in '%s': %s", name, qemuNodeName, msg)
		}
		if be.Hint != "" {
			msg += "\n" + be.Hint
		}
		return msg
	case errors.Is(err, imgfmt.ErrBitmapsUnsupported):
		return fmt.Sprintf("Can't store persistent bitmaps to %s: %s", qemuNodeName, err)
	}
	return describe(err)
}
