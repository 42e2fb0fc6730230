// Pieces every subcommand shares: long option ids, the standard option cases, --output,
// format names and opening images with QEMU's error messages.
package main

import (
	"errors"
	"os"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/qcow2"
)

// Long-only options, numbered as qemu-img numbers them (from 256).
const (
	optOutput rune = 256 + iota
	optBackingChain
	optObject
	optImageOpts
	optPattern
	optFlushInterval
	optNoDrain
	optTargetImageOpts
	optSizeOpt
	optPreallocation
	optShrink
	optSalvage
	optTargetIsZero
	optAdd
	optRemove
	optClear
	optEnable
	optDisable
	optMerge
	optBitmaps
	optForce
)

var (
	longHelp       = getopt.NoArg("help", 'h')
	longObject     = getopt.ReqArg("object", optObject)
	longImageOpts  = getopt.NoArg("image-opts", optImageOpts)
	longForceShare = getopt.NoArg("force-share", 'U')
	longFormat     = getopt.ReqArg("format", 'f')
	longOutputOpt  = getopt.ReqArg("output", optOutput)
)

// commonOption handles the cases every subcommand's option loop shares: getopt errors, -h,
// and the QEMU options qnbd-img refuses. done is true when the command must stop with code.
func (a *app) commonOption(g *getopt.Parser, c rune) (code int, done bool) {
	switch c {
	case getopt.Missing:
		return a.usage("missing argument for option '%s'", g.Bad), true
	case getopt.Unknown:
		return a.usage("unrecognized option '%s'", g.Bad), true
	case 'h':
		a.help()
		return 0, true
	case optObject:
		a.errorf("--object is not supported by %s (no encryption or secrets)", a.prog)
		return 1, true
	case optImageOpts, optTargetImageOpts:
		a.errorf("--image-opts is not supported by %s: give a file name and -f", a.prog)
		return 1, true
	}
	return 0, false
}

// outputFormat is --output: human (default) or json.
type outputFormat int

const (
	outputHuman outputFormat = iota
	outputJSON
)

// parseOutput checks --output's argument; ok is false after printing QEMU's error.
func (a *app) parseOutput(s string, given bool) (outputFormat, bool) {
	switch {
	case !given || s == "human":
		return outputHuman, true
	case s == "json":
		return outputJSON, true
	}
	a.errorf("--output must be used with human or json as argument.")
	return 0, false
}

// validCacheMode is bdrv_parse_cache_mode's list. qnbd-img accepts the modes for compatibility
// and otherwise ignores them: it always writes through the page cache and flushes at the end.
func validCacheMode(s string) bool {
	switch s {
	case "none", "off", "writeback", "writethrough", "directsync", "unsafe":
		return true
	}
	return false
}

// qemuFormats are formats QEMU has but qnbd-img does not: naming them gets a clearer error
// than "Unknown driver".
var qemuFormats = map[string]bool{
	"vmdk": true, "vdi": true, "vhdx": true, "vpc": true, "qed": true, "qcow": true,
	"luks": true, "parallels": true, "bochs": true, "cloop": true, "dmg": true, "vvfat": true,
	"file": true, "host_device": true, "nbd": true, "blkdebug": true, "copy-on-read": true,
}

// imageFormat turns a -f argument into a format; "" stays "" (probe). On failure it returns
// the text that follows "Could not open 'NAME': ".
func imageFormat(s string) (imgfmt.Format, string) {
	if s == "" {
		return "", ""
	}
	if f, err := imgfmt.ParseFormat(s); err == nil {
		return f, ""
	}
	if qemuFormats[s] {
		return "", "Format '" + s + "' is not supported by qnbd-img (raw and qcow2 only)"
	}
	return "", "Unknown driver '" + s + "'"
}

// openImage opens an image as qemu-img's img_open does, printing "Could not open ..." on
// failure (nil is returned then).
func (a *app) openImage(name, format string, o imgfmt.OpenOptions) imgfmt.Disk {
	f, msg := imageFormat(format)
	if msg != "" {
		a.errorf("Could not open '%s': %s", name, msg)
		return nil
	}
	o.Format, o.Warn = f, a.openWarning
	d, err := imgfmt.Open(name, o)
	if err != nil {
		a.errorf("Could not open '%s': %s", name, openErrorText(name, err))
		return nil
	}
	return d
}

// isOpenError reports errors that mean the image could not be opened at all (missing file,
// not the format it was taken for, invalid or unsupported header) rather than an operation
// failing on an open image.
func isOpenError(err error) bool {
	var pe *os.PathError
	var qe imgfmt.QemuError
	var le *imagelock.Error
	return errors.As(err, &pe) || errors.As(err, &qe) || errors.Is(err, qcow2.ErrFormat) ||
		errors.Is(err, qcow2.ErrUnsupported) || errors.Is(err, imgfmt.ErrUnknownFormat) ||
		errors.As(err, &le)
}

// isNotSupported reports imgfmt.ErrNotSupported.
func isNotSupported(err error) bool { return errors.Is(err, imgfmt.ErrNotSupported) }
