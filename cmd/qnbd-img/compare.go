// qnbd-img compare: qemu-img compare's checks, messages and exit codes.
package main

import (
	"bytes"
	"fmt"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// Exit codes of compare.
const (
	compareSame      = 0
	compareDiffer    = 1
	compareOpenError = 2
	compareMapError  = 3
	compareReadError = 4
)

// ioBufSize is qemu-img's IO_BUF_SIZE: the most compare reads at once.
const ioBufSize = 2 << 20

// blockStatus packs the attributes qemu-img compare -s compares.
func blockStatus(e imgfmt.Extent) [4]bool {
	return [4]bool{e.Kind == imgfmt.KindData, e.Zero(), e.Present(), e.HasOffset}
}

func (a *app) compare(argv []string) int {
	var fmt1, fmt2 string
	cache := "writeback"
	var prog, quiet, strict, forceShare bool
	g := getopt.New(argv, ":hf:F:T:pqsU", []getopt.Option{longHelp, longObject, longImageOpts, longForceShare})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			fmt1 = g.Arg
		case 'F':
			fmt2 = g.Arg
		case 'T':
			cache = g.Arg
		case 'p':
			prog = true
		case 'q':
			quiet = true
		case 's':
			strict = true
		case 'U':
			forceShare = true
		case optObject, optImageOpts:
			a.commonOption(g, c)
			return compareOpenError
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	if quiet {
		prog = false
	}
	ops := g.Operands()
	if len(ops) != 2 {
		return a.usage("Expecting two image file names")
	}
	name1, name2 := ops[0], ops[1]
	p := newProgress(a.stdout, prog, 2.0)
	defer p.end()
	if !validCacheMode(cache) {
		a.errorf("Invalid source cache option: %s", cache)
		return compareOpenError
	}
	d1 := a.openImage(name1, fmt1, imgfmt.OpenOptions{ReadOnly: true, ForceShare: forceShare})
	if d1 == nil {
		return compareOpenError
	}
	defer d1.Close()
	d2 := a.openImage(name2, fmt2, imgfmt.OpenOptions{ReadOnly: true, ForceShare: forceShare})
	if d2 == nil {
		return compareOpenError
	}
	defer d2.Close()
	c := &comparer{a: a, quiet: quiet, p: p, buf1: make([]byte, ioBufSize), buf2: make([]byte, ioBufSize)}
	return c.run(d1, d2, strict)
}

type comparer struct {
	a          *app
	quiet      bool
	p          *progress
	buf1, buf2 []byte
}

func (c *comparer) say(format string, args ...any) {
	if !c.quiet {
		fmt.Fprintf(c.a.stdout, format, args...)
	}
}

func (c *comparer) run(d1, d2 imgfmt.Disk, strict bool) int {
	size1, size2 := d1.Size(), d2.Size()
	total := min(size1, size2)
	progressBase := float32(max(size1, size2))
	c.p.print(0, 100)
	if strict && size1 != size2 {
		c.say("Strict mode: Image size mismatch!\n")
		return compareDiffer
	}
	cur1, cur2 := newExtentCursor(d1, size1), newExtentCursor(d2, size2)
	for off := uint64(0); off < total; {
		e1, err := cur1.at(off)
		if err != nil {
			c.a.errorf("Sector allocation test failed for %s", d1.Filename())
			return compareMapError
		}
		e2, err := cur2.at(off)
		if err != nil {
			c.a.errorf("Sector allocation test failed for %s", d2.Filename())
			return compareMapError
		}
		chunk := min(e1.Length, e2.Length, total-off)
		if strict && blockStatus(e1) != blockStatus(e2) {
			c.say("Strict mode: Offset %d block status mismatch!\n", off)
			return compareDiffer
		}
		switch {
		case e1.Zero() && e2.Zero():
		case e1.Present() == e2.Present():
			if e1.Present() {
				chunk = min(chunk, ioBufSize)
				if code := c.compareData(d1, d2, off, chunk); code != compareSame {
					return code
				}
			}
		default:
			chunk = min(chunk, ioBufSize)
			d := d1
			if !e1.Present() {
				d = d2
			}
			if code := c.checkEmpty(d, off, chunk); code != compareSame {
				return code
			}
		}
		off += chunk
		c.p.print(float32(chunk)/progressBase*100, 100)
	}
	if size1 != size2 {
		c.say("Warning: Image size mismatch!\n")
		over := d1
		if size2 > size1 {
			over = d2
		}
		cur := newExtentCursor(over, over.Size())
		for off := total; off < over.Size(); {
			e, err := cur.at(off)
			if err != nil {
				c.a.errorf("Sector allocation test failed for %s", over.Filename())
				return compareMapError
			}
			chunk := e.Length
			if e.Present() && !e.Zero() {
				chunk = min(chunk, ioBufSize)
				if code := c.checkEmpty(over, off, chunk); code != compareSame {
					return code
				}
			}
			off += chunk
			c.p.print(float32(chunk)/progressBase*100, 100)
		}
	}
	c.say("Images are identical.\n")
	return compareSame
}

// compareData reads [off, off+n) from both images and reports the first differing sector, as
// compare_buffers does (the offset of the first sector whose contents differ).
func (c *comparer) compareData(d1, d2 imgfmt.Disk, off, n uint64) int {
	b1, b2 := c.buf1[:n], c.buf2[:n]
	if _, err := d1.ReadAt(b1, int64(off)); err != nil {
		c.a.errorf("Error while reading offset %d of %s: %s", off, d1.Filename(), strerror(err))
		return compareReadError
	}
	if _, err := d2.ReadAt(b2, int64(off)); err != nil {
		c.a.errorf("Error while reading offset %d of %s: %s", off, d2.Filename(), strerror(err))
		return compareReadError
	}
	for i := uint64(0); i < n; i += imgfmt.SectorSize {
		j := min(i+imgfmt.SectorSize, n)
		if !bytes.Equal(b1[i:j], b2[i:j]) {
			c.say("Content mismatch at offset %d!\n", off+i)
			return compareDiffer
		}
	}
	return compareSame
}

// checkEmpty is check_empty_sectors: the range must read as zeros; the mismatch is reported at
// the first non-zero byte.
func (c *comparer) checkEmpty(d imgfmt.Disk, off, n uint64) int {
	b := c.buf1[:n]
	if _, err := d.ReadAt(b, int64(off)); err != nil {
		c.a.errorf("Error while reading offset %d of %s: %s", off, d.Filename(), strerror(err))
		return compareReadError
	}
	if i := firstNonZero(b); i >= 0 {
		c.say("Content mismatch at offset %d!\n", off+uint64(i))
		return compareDiffer
	}
	return compareSame
}
