// qnbd-img check: consistency check and repair with qemu-img's output and exit codes.
package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// Exit codes of check (qemu-img.c img_check).
const (
	checkClean       = 0  // check completed, image is good
	checkFailed      = 1  // check not completed because of internal errors
	checkCorrupt     = 2  // check completed, image is corrupted
	checkLeaks       = 3  // check completed, image has leaked clusters, but is good otherwise
	checkUnsupported = 63 // checks are not supported by the image format
)

// checkArgs is check's command line.
type checkArgs struct {
	name, format, output, cache   string
	haveOutput, quiet, forceShare bool
	mode                          imgfmt.RepairMode
}

// checkOptions parses check's command line; done is true when check must exit with code.
func (a *app) checkOptions(argv []string) (o checkArgs, code int, done bool) {
	o.cache = "writeback"
	g := getopt.New(argv, ":hf:r:T:qU", []getopt.Option{
		longHelp, longFormat,
		getopt.ReqArg("repair", 'r'),
		longOutputOpt, longObject, longImageOpts, longForceShare,
	})
	for c := g.Next(); c != getopt.End; c = g.Next() {
		switch c {
		case 'f':
			o.format = g.Arg
		case 'r':
			switch g.Arg {
			case "leaks":
				o.mode = imgfmt.RepairLeaks
			case "all":
				o.mode = imgfmt.RepairAll
			default:
				return o, a.usage("Unknown option value for -r (expecting 'leaks' or 'all'): %s", g.Arg), true
			}
		case optOutput:
			o.output, o.haveOutput = g.Arg, true
		case 'T':
			o.cache = g.Arg
		case 'q':
			o.quiet = true
		case 'U':
			o.forceShare = true
		default:
			if code, done := a.commonOption(g, c); done {
				return o, code, true
			}
		}
	}
	ops := g.Operands()
	if len(ops) != 1 {
		return o, a.usage("Expecting one image file name"), true
	}
	o.name = ops[0]
	return o, 0, false
}

func (a *app) check(argv []string) int {
	o, code, done := a.checkOptions(argv)
	if done {
		return code
	}
	ofmt, ok := a.parseOutput(o.output, o.haveOutput)
	if !ok {
		return 1
	}
	if !validCacheMode(o.cache) {
		a.errorf("Invalid source cache option: %s", o.cache)
		return 1
	}
	f, msg := imageFormat(o.format)
	if msg != "" {
		a.errorf("Could not open '%s': %s", o.name, msg)
		return 1
	}
	if f == "" {
		p, err := imgfmt.Probe(o.name)
		if err != nil {
			a.errorf("Could not open '%s': %s", o.name, openErrorText(o.name, err))
			return 1
		}
		f = p
	}
	if o.forceShare && o.mode != imgfmt.RepairNone {
		a.errorf("Could not open '%s': %s", o.name, msgForceShareWritable)
		return checkFailed
	}
	res, err := imgfmt.Check(o.name, f, o.mode, o.forceShare, a.openWarning)
	if res != nil {
		defer a.closeMessages(res.CloseMessages) // qemu-img prints them at close, last
	}
	if err != nil && res != nil {
		a.checkMessages(res.Messages)
	}
	switch {
	case isNotSupported(err):
		a.errorf("This image format does not support checks")
		return checkUnsupported
	case err != nil && isOpenError(err):
		a.errorf("Could not open '%s': %s", o.name, openErrorText(o.name, err))
		return checkFailed
	case err != nil:
		a.errorf("Check failed: %s", strerror(err))
		return checkFailed
	}
	a.checkMessages(res.Messages)
	if res.CorruptionsFixed != 0 || res.LeaksFixed != 0 {
		if ofmt == outputHuman && !o.quiet {
			fmt.Fprintf(a.stdout, "The following inconsistencies were found and repaired:\n\n"+
				"    %d leaked clusters\n    %d corruptions\n\nDouble checking the fixed image now...\n",
				res.LeaksFixed, res.CorruptionsFixed)
		}
	}
	if !o.quiet {
		if ofmt == outputJSON {
			fmt.Fprintln(a.stdout, prettyJSON(checkJSON(o.name, f, res)))
		} else {
			writeCheckHuman(a.stdout, res)
		}
	}
	switch {
	case res.CheckErrors != 0:
		a.errorf("Check failed")
		return checkFailed
	case res.Corruptions != 0:
		return checkCorrupt
	case res.Leaks != 0:
		return checkLeaks
	}
	return checkClean
}

// checkMessages prints the check's findings on stderr. The few that qemu-img reports with
// error_report (the snapshot table checks of qcow2_check_read_snapshot_table) carry the
// program name in front, as there; the rest are printed as they are.
func (a *app) checkMessages(msgs []string) {
	for _, m := range msgs {
		if isCheckErrorReport(m) {
			a.errorf("%s", m)
		} else {
			fmt.Fprintln(a.stderr, m)
		}
	}
}

// closeMessages prints what closing the repaired image printed, as they are.
func (a *app) closeMessages(msgs []string) {
	for _, m := range msgs {
		fmt.Fprintln(a.stderr, m)
	}
}

// checkErrorReports are the beginnings of the check messages qemu-img prints with
// error_report.
var checkErrorReports = []string{
	"ERROR snapshot table too large",
	"ERROR snapshot table offset invalid",
	"ERROR failed to read the snapshot table: ",
}

func isCheckErrorReport(m string) bool {
	for _, p := range checkErrorReports {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

// checkJSON is the ImageCheck QAPI object: filename, format and check-errors always, the
// other counters only when non-zero.
func checkJSON(name string, f imgfmt.Format, r *imgfmt.CheckResult) *qdict {
	d := newQdict()
	d.put("filename", name)
	d.put("format", string(f))
	d.put("check-errors", r.CheckErrors)
	optional := []struct {
		key string
		v   uint64
	}{
		{"corruptions", uint64(r.Corruptions)},
		{"leaks", uint64(r.Leaks)},
		{"corruptions-fixed", uint64(r.CorruptionsFixed)},
		{"leaks-fixed", uint64(r.LeaksFixed)},
		{"image-end-offset", r.ImageEndOffset},
		{"total-clusters", r.TotalClusters},
		{"allocated-clusters", r.AllocatedClusters},
		{"fragmented-clusters", r.FragmentedClusters},
		{"compressed-clusters", r.CompressedClusters},
	}
	for _, o := range optional {
		if o.v != 0 {
			d.put(o.key, o.v)
		}
	}
	return d
}

// writeCheckHuman is dump_human_image_check.
func writeCheckHuman(w io.Writer, r *imgfmt.CheckResult) {
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		fmt.Fprintf(w, "No errors were found on the image.\n")
	} else {
		if r.Corruptions != 0 {
			fmt.Fprintf(w, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks != 0 {
			fmt.Fprintf(w, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors != 0 {
			fmt.Fprintf(w, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		fmt.Fprintf(w, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset != 0 {
		fmt.Fprintf(w, "Image end offset: %d\n", r.ImageEndOffset)
	}
}
