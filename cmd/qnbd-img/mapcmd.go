// qnbd-img map: qemu-img map's human and JSON listings of an image's allocation.
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// mapEntry is qemu-img's MapEntry.
type mapEntry struct {
	start, length uint64
	depth         int
	present, zero bool
	data          bool
	hasOffset     bool
	offset        uint64
	filename      string // set when hasOffset
}

func entryFromExtent(e imgfmt.Extent) mapEntry {
	m := mapEntry{start: e.Start, length: e.Length, depth: e.Depth, present: e.Present(),
		zero: e.Zero(), data: e.Kind == imgfmt.KindData}
	if e.HasOffset {
		m.hasOffset, m.offset, m.filename = true, e.Offset, e.File
	}
	return m
}

// mergeable is entry_mergeable.
func (c *mapEntry) mergeable(n *mapEntry) bool {
	if c.length == 0 {
		return false
	}
	if c.zero != n.zero || c.data != n.data || c.depth != n.depth || c.present != n.present ||
		c.hasOffset != n.hasOffset {
		return false
	}
	if c.hasOffset && (c.filename != n.filename || c.offset+c.length != n.offset) {
		return false
	}
	return true
}

// mapChunk bounds one Map call, so a huge sparse image is walked in steps.
const mapChunk = 1 << 32

func (a *app) mapCmd(argv []string) int {
	var format, output string
	var haveOutput, forceShare bool
	var start uint64
	maxLen := int64(-1)
	g := getopt.New(argv, ":f:s:l:hU", []getopt.Option{
		longHelp, longFormat, longOutputOpt, longObject, longImageOpts, longForceShare,
		getopt.ReqArg("start-offset", 's'),
		getopt.ReqArg("max-length", 'l'),
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			format = g.Arg
		case 'U':
			forceShare = true
		case optOutput:
			output, haveOutput = g.Arg, true
		case 's':
			v, ok := a.cvtnum("start offset", g.Arg)
			if !ok {
				return 1
			}
			start = uint64(v)
		case 'l':
			v, ok := a.cvtnum("max length", g.Arg)
			if !ok {
				return 1
			}
			maxLen = v
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
	}
	ops := g.Operands()
	if len(ops) != 1 {
		return a.usage("Expecting one image file name")
	}
	name := ops[0]
	ofmt, ok := a.parseOutput(output, haveOutput)
	if !ok {
		return 1
	}
	d := a.openImage(name, format, imgfmt.OpenOptions{ReadOnly: true, ForceShare: forceShare})
	if d == nil {
		return 1
	}
	defer d.Close()

	if ofmt == outputHuman {
		fmt.Fprintf(a.stdout, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
	} else {
		fmt.Fprint(a.stdout, "[")
	}
	length := d.Size()
	if maxLen != -1 {
		length = min(start+uint64(maxLen), length)
	}
	curr := mapEntry{start: start}
	cur := newExtentCursor(d, length)
	for curr.start+curr.length < length {
		off := curr.start + curr.length
		e, err := cur.at(off)
		if err != nil {
			a.errorf("Could not read file metadata: %s", strerror(err))
			return 1
		}
		e.Length = min(e.Length, length-off)
		next := entryFromExtent(e)
		if curr.mergeable(&next) {
			curr.length += next.length
			continue
		}
		if curr.length > 0 {
			if !a.dumpMapEntry(ofmt, &curr, &next) {
				return 1
			}
		}
		curr = next
	}
	if !a.dumpMapEntry(ofmt, &curr, nil) {
		return 1
	}
	if ofmt == outputJSON {
		fmt.Fprintln(a.stdout, "]")
	}
	return 0
}

// dumpMapEntry is dump_map_entry, including the way the human format rewrites the next
// entry's flags so that zero and unallocated runs coalesce.
func (a *app) dumpMapEntry(ofmt outputFormat, e, next *mapEntry) bool {
	if ofmt == outputHuman {
		if e.data && !e.hasOffset {
			a.errorf("File contains external, encrypted or compressed clusters.")
			return false
		}
		if e.data && !e.zero {
			fmt.Fprintf(a.stdout, "%-16s%-16s%-16s%s\n", cHex(e.start), cHex(e.length), cHex(e.offset), e.filename)
		}
		if next != nil && (!next.data || next.zero) {
			next.data, next.zero = false, true
		}
		return true
	}
	fmt.Fprintf(a.stdout, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
		int64(e.start), int64(e.length), e.depth, e.present, e.zero, e.data)
	if e.hasOffset {
		fmt.Fprintf(a.stdout, `, "offset": %d`, int64(e.offset))
	}
	fmt.Fprint(a.stdout, "}")
	if next != nil {
		fmt.Fprintln(a.stdout, ",")
	}
	return true
}

// cHex is C's "%#x": 0x-prefixed hex, except that zero is plain "0".
func cHex(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}
