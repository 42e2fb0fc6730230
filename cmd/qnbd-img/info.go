// qnbd-img info: qemu-img info's human and JSON output for raw and qcow2 images.
package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

func (a *app) info(argv []string) int {
	var format, output string
	var haveOutput, chain, forceShare bool
	g := getopt.New(argv, ":f:hU", []getopt.Option{
		longHelp, longFormat, longOutputOpt,
		getopt.NoArg("backing-chain", optBackingChain),
		longObject, longImageOpts, longForceShare,
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			format = g.Arg
		case 'U':
			forceShare = true
		case optOutput:
			output, haveOutput = g.Arg, true
		case optBackingChain:
			chain = true
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
	ofmt, ok := a.parseOutput(output, haveOutput)
	if !ok {
		return 1
	}
	list, ok := a.collectInfo(ops[0], format, chain, forceShare)
	if !ok {
		return 1
	}
	switch {
	case ofmt == outputJSON && chain:
		items := make([]any, len(list))
		for i, info := range list {
			items[i] = infoJSON(info)
		}
		fmt.Fprintln(a.stdout, prettyJSON(items))
	case ofmt == outputJSON:
		fmt.Fprintln(a.stdout, prettyJSON(infoJSON(list[0])))
	default:
		for i, info := range list {
			if i > 0 {
				fmt.Fprintln(a.stdout)
			}
			fmt.Fprint(a.stdout, infoHuman(info))
		}
	}
	return 0
}

// collectInfo is collect_image_info_list: the image, and with chain its backing files, each
// opened without its own backing file (and locked as qemu-img info locks it, unless -U).
func (a *app) collectInfo(name, format string, chain, forceShare bool) ([]*imgfmt.ImageInfo, bool) {
	var list []*imgfmt.ImageInfo
	seen := map[string]bool{}
	for name != "" {
		if seen[name] {
			a.errorf("Backing file '%s' creates an infinite loop.", name)
			return nil, false
		}
		seen[name] = true
		f, msg := imageFormat(format)
		if msg != "" {
			a.errorf("Could not open '%s': %s", name, msg)
			return nil, false
		}
		info, err := imgfmt.QueryInfo(name, f, forceShare)
		if err != nil {
			a.errorf("Could not open '%s': %s", name, openErrorText(name, err))
			return nil, false
		}
		imgfmt.WarnIgnoredBitmaps(info, a.openWarning)
		list = append(list, info)
		name, format = "", ""
		if chain && info.BackingFile != "" {
			name, format = info.FullBackingFile, info.BackingFormat
		}
	}
	return list, true
}

// infoJSON builds the ImageInfo QAPI object.
func infoJSON(info *imgfmt.ImageInfo) *qdict {
	d := newQdict()
	d.put("filename", info.Filename)
	d.put("format", string(info.Format))
	d.put("dirty-flag", info.Dirty)
	if info.HasActualSize {
		d.put("actual-size", info.ActualSize)
	}
	d.put("virtual-size", info.VirtualSize)
	if info.ClusterSize != 0 {
		d.put("cluster-size", info.ClusterSize)
	}
	if info.BackingFile != "" {
		d.put("backing-filename", info.BackingFile)
		d.put("full-backing-filename", info.FullBackingFile)
		if info.BackingFormat != "" {
			d.put("backing-filename-format", info.BackingFormat)
		}
	}
	if len(info.Snapshots) > 0 {
		snaps := make([]any, len(info.Snapshots))
		for i, s := range info.Snapshots {
			sd := newQdict()
			sd.put("id", s.ID)
			sd.put("name", s.Name)
			sd.put("vm-state-size", s.VMStateSize)
			sd.put("date-sec", s.Date.Unix())
			sd.put("date-nsec", int64(s.Date.Nanosecond()))
			sd.put("vm-clock-sec", int64(s.VMClock/time.Second))
			sd.put("vm-clock-nsec", int64(s.VMClock%time.Second))
			if s.HasICount {
				sd.put("icount", s.ICount)
			}
			snaps[i] = sd
		}
		d.put("snapshots", snaps)
	}
	if info.Qcow2 != nil {
		d.put("format-specific", newQdict().put("type", "qcow2").put("data", qcow2SpecificJSON(info.Qcow2)))
	}
	return d
}

// qcow2SpecificJSON is ImageInfoSpecificQCow2, with the fields QEMU sets for each version.
func qcow2SpecificJSON(q *imgfmt.Qcow2Info) *qdict {
	d := newQdict()
	d.put("compat", q.Compat)
	if q.V3() {
		// The name when the header has one; the raw flag whenever the image has an external
		// data file (the incompatible bit), named or not (has_data_file, has_data_file_raw).
		if q.DataFile != "" {
			d.put("data-file", q.DataFile)
		}
		if q.ExternalData {
			d.put("data-file-raw", q.DataFileRaw)
		}
		d.put("extended-l2", q.ExtendedL2)
		d.put("lazy-refcounts", q.LazyRefcounts)
		d.put("corrupt", q.Corrupt)
		if len(q.Bitmaps) > 0 {
			list := make([]any, len(q.Bitmaps))
			for i, b := range q.Bitmaps {
				flags := []any{}
				if b.InUse {
					flags = append(flags, "in-use")
				}
				if b.Auto {
					flags = append(flags, "auto")
				}
				list[i] = newQdict().put("name", b.Name).put("granularity", b.Granularity).put("flags", flags)
			}
			d.put("bitmaps", list)
		}
	}
	d.put("refcount-bits", q.RefcountBits)
	d.put("compression-type", q.CompressionType)
	return d
}

// infoHuman is bdrv_image_info_dump.
func infoHuman(info *imgfmt.ImageInfo) string {
	var b strings.Builder
	dsize := "unavailable"
	if info.HasActualSize {
		dsize = sizeToStr(uint64(info.ActualSize))
	}
	fmt.Fprintf(&b, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\ndisk size: %s\n",
		info.Filename, info.Format, sizeToStr(info.VirtualSize), int64(info.VirtualSize), dsize)
	if info.ClusterSize != 0 {
		fmt.Fprintf(&b, "cluster_size: %d\n", info.ClusterSize)
	}
	if info.Dirty {
		b.WriteString("cleanly shut down: no\n")
	}
	if info.BackingFile != "" {
		fmt.Fprintf(&b, "backing file: %s", info.BackingFile)
		if info.BackingFile != info.FullBackingFile {
			fmt.Fprintf(&b, " (actual path: %s)", info.FullBackingFile)
		}
		b.WriteString("\n")
		if info.BackingFormat != "" {
			fmt.Fprintf(&b, "backing file format: %s\n", info.BackingFormat)
		}
	}
	if len(info.Snapshots) > 0 {
		b.WriteString("Snapshot list:\n")
		b.WriteString(snapshotHeader() + "\n")
		for _, s := range info.Snapshots {
			b.WriteString(snapshotLine(s) + "\n")
		}
	}
	if info.Qcow2 != nil {
		b.WriteString("Format specific information:\n")
		dumpQdict(&b, 1, qcow2SpecificJSON(info.Qcow2))
	}
	return b.String()
}

// dumpQdict is block/qapi.c's dump_qdict: QDict order, dashes in keys shown as spaces.
func dumpQdict(b *strings.Builder, indent int, d *qdict) {
	for _, k := range d.order() {
		dumpValue(b, indent, strings.ReplaceAll(k, "-", " "), d.vals[k])
	}
}

// dumpValue prints one "name: value" line, or "name:" and the nested object below it
// (dump_qobject; list elements are named "[i]").
func dumpValue(b *strings.Builder, indent int, name string, v any) {
	pad := strings.Repeat("    ", indent)
	switch v := v.(type) {
	case *qdict:
		fmt.Fprintf(b, "%s%s:\n", pad, name)
		dumpQdict(b, indent+1, v)
	case []any:
		fmt.Fprintf(b, "%s%s:\n", pad, name)
		for i, e := range v {
			dumpValue(b, indent+1, fmt.Sprintf("[%d]", i), e)
		}
	default:
		fmt.Fprintf(b, "%s%s: %v\n", pad, name, v)
	}
}

// snapshotHeader and snapshotLine are bdrv_snapshot_dump.
func snapshotHeader() string {
	return fmt.Sprintf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
}

func snapshotLine(s imgfmt.Snapshot) string {
	date := s.Date.Local().Format("2006-01-02 15:04:05")
	ns := int64(s.VMClock)
	secs := ns / 1e9
	clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, (secs/60)%60, secs%60, (ns/1e6)%1000)
	icount := ""
	if s.HasICount {
		icount = fmt.Sprint(s.ICount)
	}
	return fmt.Sprintf("%-9s %-16s %8s%20s%13s%11s", s.ID, s.Name, sizeToStr(s.VMStateSize), date, clock, icount)
}
