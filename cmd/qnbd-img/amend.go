// qnbd-img amend: change the options of an existing qcow2 image (compat, lazy_refcounts, size;
// the others refused as QEMU refuses them or as not supported here), with qemu-img 7.2's
// option handling, order of checks and messages (docs/chains.md).
package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/qcow2"
)

// qcow2AmendOpts are qcow2's amend options in QEMU's order (the order they are checked in);
// the help texts are QEMU's.
var qcow2AmendOpts = optList{
	{name: "encrypt.state", typ: optString, help: "Select new state of affected keyslots (active/inactive)"},
	{name: "encrypt.keyslot", typ: optNumber, help: "Select a single keyslot to modify explicitly"},
	{name: "encrypt.old-secret", typ: optString, help: "Select all keyslots that match this password"},
	{name: "encrypt.new-secret", typ: optString, help: "New secret to set in the matching keyslots. Empty string to erase"},
	{name: "encrypt.iter-time", typ: optNumber, help: "Time to spend in PBKDF in milliseconds"},
	optSizeDesc,
	{name: "compat", typ: optString, help: "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{name: "backing_file", typ: optString, help: "File name of a base image"},
	{name: "backing_fmt", typ: optString, help: "Image format of the base image"},
	{name: "data_file", typ: optString, help: "File name of an external data file"},
	{name: "data_file_raw", typ: optBool, help: "The external data file must stay valid as a raw image"},
	{name: "lazy_refcounts", typ: optBool, help: "Postpone refcount updates"},
	{name: "refcount_bits", typ: optNumber, help: "Width of a reference count entry in bits"},
}

func (a *app) amend(argv []string) int {
	var options, format, filename string
	cache := "writeback"
	var progressOn, quiet bool
	g := getopt.New(argv, ":ho:f:t:pq", []getopt.Option{longHelp, longObject, longImageOpts,
		getopt.NoArg("force", optForce)})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'o':
			if !a.accumulateOptions(&options, g.Arg) {
				return 1
			}
		case 'f':
			format = g.Arg
		case 't':
			cache = g.Arg
		case 'p':
			progressOn = true
		case 'q':
			quiet = true
		case optForce:
			// Only encryption amendments need --force; accepted.
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	if options == "" {
		return a.usage("Must specify options (-o)")
	}
	if quiet {
		progressOn = false
	}
	p := newProgress(a.stdout, progressOn, 1.0)
	defer p.end()
	ops := g.Operands()
	if len(ops) == 1 {
		filename = ops[0]
	}
	if format != "" && hasHelpOption(options) {
		return a.amendHelp(format)
	}
	if len(ops) != 1 {
		a.errorf("Expecting one image file name")
		return 1
	}
	if !validCacheMode(cache) {
		a.errorf("Invalid cache option: %s", cache)
		return 1
	}
	d := a.openImage(filename, format, imgfmt.OpenOptions{})
	if d == nil {
		return 1
	}
	defer d.Close()
	if hasHelpOption(options) {
		return a.amendHelp(string(d.Format()))
	}
	if d.Format() != imgfmt.Qcow2 {
		a.errorf("Format driver '%s' does not support option amendment", d.Format())
		return 1
	}
	opts := newQemuOpts(qcow2AmendOpts, a.warnf)
	if err := opts.parse(options); err != nil {
		all := newQemuOpts(mergeOpts(qcow2AmendOpts, qcow2OptsDescs), nil)
		msg := describe(err)
		if all.parse(options) == nil {
			msg += "\nThis option is only supported for image creation"
		}
		a.errorf("%s", msg)
		return 1
	}
	p.print(0, 0)
	err := a.amendQcow2(d, filename, opts, p)
	p.print(100, 0)
	if err != nil {
		a.errorf("%s", amendErrorText(err))
		return 1
	}
	return 0
}

// amendHelp is print_amend_option_help.
func (a *app) amendHelp(format string) int {
	if format != "qcow2" {
		if format == "raw" || qemuFormats[format] {
			a.errorf("Format driver '%s' does not support option amendment", format)
		} else {
			a.errorf("Unknown file format '%s'", format)
		}
		return 1
	}
	fmt.Fprintf(a.stdout, "Amend options for '%s':\n", format)
	fmt.Fprint(a.stdout, qcow2AmendOpts.printHelp())
	return 0
}

// amendErrorText is the message for a failed amendment.
func amendErrorText(err error) string {
	var ae *qcow2.AmendError
	if errors.As(err, &ae) {
		return ae.Msg
	}
	return describe(err)
}

// amendPlan is what the options ask, read in QEMU's order with its checks.
type amendPlan struct {
	version                 int // 2 or 3; the image's when compat is not given
	size                    uint64
	lazy                    bool
	refcountBits            uint64
	backingGiven, fmtGiven  bool
	backingFile, backingFmt string
}

func (a *app) amendQcow2(d imgfmt.Disk, filename string, opts *qemuOpts, p *progress) error {
	info, err := imgfmt.QueryInfo(filename, imgfmt.Qcow2, true)
	if err != nil {
		return err
	}
	q := info.Qcow2
	oldVersion := 3
	if !q.V3() {
		oldVersion = 2
	}
	bits := q.RefcountBits
	if bits == 0 {
		bits = 16
	}
	pl := amendPlan{version: oldVersion, lazy: q.LazyRefcounts, refcountBits: bits}
	for _, desc := range qcow2AmendOpts {
		if !opts.has(desc.name) {
			continue
		}
		switch name := desc.name; {
		case strings.HasPrefix(name, "encrypt."):
			return qemuErrorf("Can't amend encryption options - encryption not present")
		case name == "size":
			pl.size = opts.num(name)
		case name == "compat":
			switch v := opts.str(name); v {
			case "0.10", "v2":
				pl.version = 2
			case "1.1", "v3":
				pl.version = 3
			default:
				return qemuErrorf("Unknown compatibility level %s", v)
			}
		case name == "backing_file":
			pl.backingGiven, pl.backingFile = true, opts.str(name)
		case name == "backing_fmt":
			pl.fmtGiven, pl.backingFmt = true, opts.str(name)
		case name == "lazy_refcounts":
			pl.lazy = opts.boolean(name)
		case name == "refcount_bits":
			rb := opts.num(name)
			if rb == 0 || rb > 64 || rb&(rb-1) != 0 {
				return qemuErrorf("Refcount width must be a power of two and may not exceed 64 bits")
			}
			pl.refcountBits = rb
		case name == "data_file":
			if !q.ExternalData {
				return qemuErrorf("data-file can only be set for images that use an external data file")
			}
			if opts.str(name) != q.DataFile {
				return qemuErrorf("Changing the data file name is not supported by %s", a.prog)
			}
		case name == "data_file_raw":
			if opts.boolean(name) && !q.DataFileRaw {
				return qemuErrorf("data-file-raw cannot be set on existing images")
			}
			if !opts.boolean(name) && q.DataFileRaw {
				return qemuErrorf("Clearing data_file_raw is not supported by %s", a.prog)
			}
		}
	}
	return a.applyAmend(d, info, oldVersion, pl, p)
}

// applyAmend makes the changes in QEMU's order: upgrade, refcount width, backing file check,
// lazy refcounts, size, downgrade last. The upgrade, the width change and the downgrade
// report on the progress bar through QEMU's helper (amend_status.go).
func (a *app) applyAmend(d imgfmt.Disk, info *imgfmt.ImageInfo, oldVersion int, pl amendPlan, p *progress) error {
	st := &amendStatus{p: p}
	if pl.version != oldVersion {
		st.totalOps++
	}
	if pl.refcountBits != refcountBitsOf(info) {
		st.totalOps++
	}
	if pl.version > oldVersion {
		st.start(amendUpgrading)
		st.report(0, 2)
		st.report(1, 2)
		if err := imgfmt.Amend(d, imgfmt.AmendUpgrade); err != nil {
			return err
		}
		st.report(2, 2)
	}
	st.start(amendChangingRefcountOrder)
	if err := changeRefcountBits(d, info, pl, st.report); err != nil {
		return err
	}
	if pl.backingGiven || pl.fmtGiven {
		if !sameOptString(pl.backingGiven, pl.backingFile, info.BackingFile) ||
			!sameOptString(pl.fmtGiven, pl.backingFmt, info.BackingFormat) {
			return qemuErrorf("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
		}
	}
	if pl.lazy != info.Qcow2.LazyRefcounts {
		if pl.lazy && pl.version < 3 {
			return qemuErrorf("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
		}
		which := imgfmt.AmendLazyRefcountsOff
		if pl.lazy {
			which = imgfmt.AmendLazyRefcountsOn
		}
		if err := imgfmt.Amend(d, which); err != nil {
			return err
		}
	}
	if pl.size != 0 && pl.size != d.Size() {
		if err := d.Resize(pl.size, imgfmt.PreallocOff); err != nil {
			return err
		}
	}
	if pl.version < oldVersion {
		st.start(amendDowngrading)
		return downgrade(d, st.report)
	}
	return nil
}

// sameOptString is g_strcmp0 between an option (absent: NULL) and a header string ("": NULL).
func sameOptString(given bool, v, current string) bool {
	if !given {
		return current == ""
	}
	return v == current
}

// downgrade makes a version 3 image a version 2 one: checks and feature bits first, then every
// zero cluster of the active layer and of the snapshots becomes zeros stored as data (with a
// backing file, which would otherwise show through) or unallocated (without one), then the
// header.
func downgrade(d imgfmt.Disk, status func(done, total int64)) error {
	if err := imgfmt.Amend(d, imgfmt.AmendPrepareDowngrade); err != nil {
		return err
	}
	if err := imgfmt.ExpandZeroClusters(d, status); err != nil {
		var ae *qcow2.AmendError
		if errors.As(err, &ae) {
			return err
		}
		return qemuErrorf("Failed to turn zero into data clusters: %s", strerror(err))
	}
	return imgfmt.Amend(d, imgfmt.AmendDowngrade)
}

// refcountBitsOf is the image's refcount width (16 when the header does not say).
func refcountBitsOf(info *imgfmt.ImageInfo) uint64 {
	if info.Qcow2.RefcountBits == 0 {
		return 16
	}
	return info.Qcow2.RefcountBits
}

// changeRefcountBits rebuilds the refcount structures when the width asked differs from the
// image's; widths other than 16 need version 3 (after any upgrade).
func changeRefcountBits(d imgfmt.Disk, info *imgfmt.ImageInfo, pl amendPlan, status func(done, total int64)) error {
	if pl.refcountBits == refcountBitsOf(info) {
		return nil
	}
	if pl.version < 3 && pl.refcountBits != 16 {
		return qemuErrorf("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
	}
	return imgfmt.ChangeRefcountBits(d, pl.refcountBits, status)
}
