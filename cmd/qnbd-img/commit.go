// qnbd-img commit: write what an image (and the layers between it and the base) holds into
// its base, then empty it unless -d or -b, with qemu-img 7.2's options, checks, messages and
// image locks (docs/chains.md).
package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// commitRequest is a parsed commit command line.
type commitRequest struct {
	format   string
	base     string
	haveBase bool
	drop     bool // -d, implied by -b: the top keeps its data
	progress bool
	quiet    bool
	filename string
}

func (a *app) commit(argv []string) int {
	var r commitRequest
	cache := "writeback"
	g := getopt.New(argv, ":f:ht:b:dpqr:", []getopt.Option{longHelp, longObject, longImageOpts})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			r.format = g.Arg
		case 't':
			cache = g.Arg
		case 'b':
			r.base, r.haveBase = g.Arg, true
			r.drop = true
		case 'd':
			r.drop = true
		case 'p':
			r.progress = true
		case 'q':
			r.quiet = true
		case 'r':
			// The rate limit is checked as qemu-img checks it; the copy itself is not throttled.
			if _, ok := a.cvtnum("rate limit", g.Arg); !ok {
				return 1
			}
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
	r.filename = ops[0]
	if !validCacheMode(cache) {
		a.errorf("Invalid cache option: %s", cache)
		return 1
	}
	return a.doCommit(r)
}

// doCommit opens the chain, finds the base and runs the commit.
func (a *app) doCommit(r commitRequest) int {
	// The first open is qemu-img's: the image read-write with its backing chain, which is
	// where a conflict with a process serving any of them shows, with QEMU's message.
	d := a.openImage(r.filename, r.format, imgfmt.OpenOptions{})
	if d == nil {
		return 1
	}
	p := newProgress(a.stdout, r.progress, 1.0)
	p.print(0, 100)
	layers := imgfmt.Chain(d)
	format := d.Format()
	d.Close()
	fail := func(format string, args ...any) int {
		p.end()
		a.errorf(format, args...)
		return 1
	}
	k := 1
	if r.haveBase {
		k = findBackingLayer(layers, r.base)
		if k < 0 {
			return fail("Did not find '%s' in the backing chain of '%s'", r.base, r.filename)
		}
	} else if len(layers) < 2 {
		return fail("Image does not have a backing file")
	}
	job, msg := a.openCommitJob(r, string(format), layers, k)
	if job == nil {
		p.end()
		if msg != "" {
			a.errorf("%s", msg)
		}
		return 1
	}
	job.p = p
	err := job.run()
	if cerr := job.close(); err == nil {
		err = cerr
	}
	if err == nil && !r.drop {
		err = job.empty()
	}
	job.release()
	if err != nil {
		return fail("%s", commitErrorText(err))
	}
	p.print(100, 0)
	p.end()
	if !r.quiet {
		fmt.Fprintln(a.stdout, "Image committed.")
	}
	return 0
}

// commitErrorText is the message for a failed commit: a lock conflict as QEMU words it, any
// other failure of the copy as QEMU's block job reports it.
func commitErrorText(err error) string {
	if text, ok := lockText(err); ok {
		return text
	}
	var ee *emptyError
	if errors.As(err, &ee) {
		return "Failed to empty blockdev: " + strerror(ee.err)
	}
	if errors.Is(err, imgfmt.ErrProbedRawWrite) {
		// The block-0 guard of a probed raw base refuses as QEMU's raw driver does: EPERM.
		return "Block job failed: " + strerror(syscall.EPERM)
	}
	return "Block job failed: " + strerror(err)
}

// emptyError is a failure to empty the top image after the copy.
type emptyError struct{ err error }

func (e *emptyError) Error() string { return e.err.Error() }
func (e *emptyError) Unwrap() error { return e.err }

// findBackingLayer is bdrv_find_backing_image: the index of the layer below the top that name
// designates, either as the name stored in the layer above it or as the same file (a
// relative name taken from the directory of the layer above); -1 when none is.
func findBackingLayer(layers []imgfmt.Layer, name string) int {
	for i := 1; i < len(layers); i++ {
		above := layers[i-1]
		if name == above.BackingFile {
			return i
		}
		want := name
		if !filepath.IsAbs(name) {
			want = imgfmt.FullBackingFilename(above.Filename, name)
		}
		if samePath(want, layers[i].Filename) {
			return i
		}
	}
	return -1
}

// samePath reports whether two names resolve to the same existing file (realpath equality).
func samePath(a, b string) bool {
	ra, err := realPath(a)
	if err != nil {
		return false
	}
	rb, err := realPath(b)
	return err == nil && ra == rb
}

func realPath(name string) (string, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// backingFormatGiven reports whether the image at layer i names its backing file's format;
// when it does not, the backing file was probed (and, if raw, is written under the block-0
// guard, docs/probing.md).
func backingFormatGiven(layer imgfmt.Layer) bool {
	info, err := imgfmt.QueryInfo(layer.Filename, layer.Format, true)
	return err == nil && info.BackingFormat != ""
}

// openCommitJob opens what the copy needs once the chain is known to be free: the top
// read-write without its backing chain (holding its locks, and emptied at the end), the
// base read-write (a conflict here is QEMU's reopen failure, printed without "Could not
// open"), and the top with its chain read-only for the reads. nil means failure, with msg
// to print.
func (a *app) openCommitJob(r commitRequest, topFormat string, layers []imgfmt.Layer, k int) (*commitJob, string) {
	j := &commitJob{depth: k}
	topRW, err := imgfmt.Open(r.filename, imgfmt.OpenOptions{Format: imgfmt.Format(topFormat), NoBacking: true, Warn: a.openWarning})
	if err != nil {
		return nil, fmt.Sprintf("Could not open '%s': %s", r.filename, openErrorText(r.filename, err))
	}
	j.topRW = topRW
	baseFormat := layers[k].Format
	if !backingFormatGiven(layers[k-1]) {
		baseFormat = "" // probed: open it probed again, so that the block-0 guard applies
	}
	baseName := layers[k].Filename
	base, err := imgfmt.Open(baseName, imgfmt.OpenOptions{Format: baseFormat, Warn: a.openWarning})
	if err != nil {
		j.release()
		if text, ok := lockText(err); ok {
			return nil, text
		}
		return nil, fmt.Sprintf("Could not open '%s': %s", baseName, openErrorText(baseName, err))
	}
	j.base = base
	top, err := imgfmt.Open(r.filename, imgfmt.OpenOptions{Format: imgfmt.Format(topFormat), ReadOnly: true, Warn: a.openWarning,
		Lock: &imagelock.Request{Perm: imagelock.ConsistentRead, Shared: imagelock.All, ForceShare: true}})
	if err != nil {
		j.release()
		return nil, fmt.Sprintf("Could not open '%s': %s", r.filename, openErrorText(r.filename, err))
	}
	j.top = top
	return j, ""
}
