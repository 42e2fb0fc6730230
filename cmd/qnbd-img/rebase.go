// qnbd-img rebase: point an image at another backing file (or none), in safe mode first
// copying into it whatever would read differently, with qemu-img 7.2's options, checks,
// messages and exit codes (docs/chains.md).
package main

import (
	"errors"
	"syscall"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
	"github.com/qnbd/qnbd/qcow2"
)

// rebaseRequest is a parsed rebase command line.
type rebaseRequest struct {
	format        string
	backing       string
	haveBacking   bool
	backingFormat string
	unsafe        bool
	progress      bool
	quiet         bool
	forceShare    bool
	filename      string
}

// otherBlockDrivers are QEMU 7.2 driver names besides qemuFormats that -F accepts (QEMU
// writes any format name it knows into the header).
var otherBlockDrivers = map[string]bool{
	"host_cdrom": true, "blkverify": true, "blklogwrites": true, "blkreplay": true, "throttle": true,
	"null-co": true, "null-aio": true, "nvme": true, "quorum": true, "replication": true,
	"compress": true, "preallocate": true, "snapshot-access": true, "iscsi": true, "rbd": true,
	"ssh": true, "gluster": true, "nfs": true, "http": true, "https": true, "ftp": true, "ftps": true,
}

// knownFormatName is bdrv_find_format: is s the name of a block driver QEMU has?
func knownFormatName(s string) bool {
	return s == "raw" || s == "qcow2" || qemuFormats[s] || otherBlockDrivers[s]
}

func (a *app) rebase(argv []string) int {
	var r rebaseRequest
	cache, srcCache := "writeback", "writeback"
	g := getopt.New(argv, ":hf:F:b:upt:T:qU", []getopt.Option{longHelp, longObject, longImageOpts, longForceShare})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			r.format = g.Arg
		case 'F':
			r.backingFormat = g.Arg
		case 'b':
			r.backing, r.haveBacking = g.Arg, true
		case 'u':
			r.unsafe = true
		case 'p':
			r.progress = true
		case 't':
			cache = g.Arg
		case 'T':
			srcCache = g.Arg
		case 'q':
			r.quiet = true
		case 'U':
			r.forceShare = true
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	if r.quiet {
		r.progress = false
	}
	ops := g.Operands()
	if len(ops) != 1 {
		return a.usage("Expecting one image file name")
	}
	if !r.unsafe && !r.haveBacking {
		return a.usage("Must specify backing file (-b) or use unsafe mode (-u)")
	}
	r.filename = ops[0]
	p := newProgress(a.stdout, r.progress, 2.0)
	p.print(0, 100)
	code := a.doRebase(r, cache, srcCache, p)
	p.end()
	return code
}

// doRebase runs a rebase after the command line was checked; the caller ends the progress.
func (a *app) doRebase(r rebaseRequest, cache, srcCache string, p *progress) int {
	if !validCacheMode(cache) {
		a.errorf("Invalid cache option: %s", cache)
		return 1
	}
	if !validCacheMode(srcCache) {
		a.errorf("Invalid source cache option: %s", srcCache)
		return 1
	}
	top := a.openImage(r.filename, r.format, imgfmt.OpenOptions{NoBacking: r.unsafe})
	if top == nil {
		return 1
	}
	defer top.Close()
	if r.backingFormat != "" && !knownFormatName(r.backingFormat) {
		a.errorf("Invalid format name: '%s'", r.backingFormat)
		return 1
	}
	if !r.unsafe {
		var newBacking imgfmt.Disk
		if r.backing != "" {
			if newBacking = a.openNewBacking(r, top); newBacking == nil {
				return 1
			}
			defer newBacking.Close()
		}
		if !a.rebaseCopy(top, newBacking, p) {
			return 1
		}
	}
	code := 0
	if err := a.changeBacking(top, r); err != nil {
		code = 1
	}
	p.print(100, 0)
	return code
}

// openNewBacking opens the new backing file read-only, its name taken relative to the image's
// directory. A file already in the image's chain is opened with the format the chain has
// for it (QEMU reuses that node, whatever -F says).
func (a *app) openNewBacking(r rebaseRequest, top imgfmt.Disk) imgfmt.Disk {
	path := imgfmt.FullBackingFilename(top.Filename(), r.backing)
	format := r.backingFormat
	layers := imgfmt.Chain(top)
	for i := 1; i < len(layers); i++ {
		if samePath(path, layers[i].Filename) {
			format = string(layers[i].Format)
			break
		}
	}
	f, msg := imageFormat(format)
	if msg != "" {
		a.errorf("Could not open new backing file '%s': Could not open '%s': %s", r.backing, path, msg)
		return nil
	}
	d, err := imgfmt.Open(path, imgfmt.OpenOptions{Format: f, ReadOnly: true, ForceShare: r.forceShare, Warn: a.openWarning})
	if err != nil {
		a.errorf("Could not open new backing file '%s': %s", r.backing, openErrorText(path, err))
		return nil
	}
	return d
}

// changeBacking writes the new backing file name into the header, with QEMU's messages.
func (a *app) changeBacking(top imgfmt.Disk, r rebaseRequest) error {
	var err error
	switch {
	case r.backing != "" && r.backingFormat == "":
		err = errors.New("backing format must be specified")
		a.errorf("Could not change the backing file to '%s': %s", r.backing, err)
		return err
	case r.backing != "":
		err = imgfmt.SetBackingFile(top, r.backing, r.backingFormat)
	default:
		err = imgfmt.SetBackingFile(top, "", "")
	}
	if err == nil {
		return nil
	}
	name := r.backing
	if !r.haveBacking {
		name = "(null)"
	}
	switch {
	case errors.Is(err, qcow2.ErrHeaderFull):
		a.errorf("Could not change the backing file to '%s': No space left in the file header", name)
	case errors.Is(err, imgfmt.ErrNotSupported):
		a.errorf("Could not change the backing file to '%s': %s", name, strerror(syscall.ENOTSUP))
	default:
		a.errorf("Could not change the backing file to '%s': %s", name, strerror(err))
	}
	return err
}
