// Every command and flag, run by libnbd against this package and against qemu-nbd on copies
// of the same image: the same replies, the same block status, the same bytes, and a clean
// image afterwards.
package qcow2export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/server"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	// shapeSize is the virtual size of every scenario image.
	shapeSize = 8 * mib
)

// shape is a scenario image: made in dir with qemu-img and qemu-io, returning the top image.
type shape struct {
	name string
	make func(t *testing.T, dir string) string
	// backing: the image has a backing file.
	backing bool
}

func qemuIO(t *testing.T, format, path string, cmds ...string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, path)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "error") || strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io %q: %v\n%s", cmds, err, out)
	}
}

// prefill is the content every top image starts with: data, zero clusters, a discarded
// range, data near the end.
var prefill = []string{
	"write -P 0x11 0 1M",
	"write -z 2M 128k",
	"write -P 0x22 3M 192k",
	"discard 3M 64k",
	"write -P 0x23 7936k 256k",
}

func plainShape(name string, opts string) shape {
	return shape{name: name, make: func(t *testing.T, dir string) string {
		p := filepath.Join(dir, name+".qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-o", opts, p, fmt.Sprint(shapeSize))
		qemuIO(t, "qcow2", p, prefill...)
		return p
	}}
}

func backedShape(name, opts, baseFormat string) shape {
	return shape{name: name, backing: true, make: func(t *testing.T, dir string) string {
		base := filepath.Join(dir, name+".base."+baseFormat)
		qemuImg(t, "create", "-q", "-f", baseFormat, base, fmt.Sprint(shapeSize))
		qemuIO(t, baseFormat, base, "write -P 0x55 0 2M", "write -P 0x56 5M 1M")
		p := filepath.Join(dir, name+".qcow2")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-o", opts, "-b", filepath.Base(base), "-F", baseFormat, p)
		qemuIO(t, "qcow2", p, prefill...)
		return p
	}}
}

var shapes = []shape{
	plainShape("v3-64k", "cluster_size=65536"),
	plainShape("v3-4k", "cluster_size=4096"),
	plainShape("v3-extl2", "cluster_size=65536,extended_l2=on"),
	plainShape("v2-64k", "compat=0.10"),
	backedShape("v3-backing-qcow2", "cluster_size=65536", "qcow2"),
	backedShape("v3-backing-raw", "cluster_size=65536", "raw"),
	backedShape("v2-backing-qcow2", "compat=0.10", "qcow2"),
	backedShape("v3-extl2-backing", "cluster_size=65536,extended_l2=on", "qcow2"),
}

// op is one NBD command of a scenario.
type op struct {
	cmd   string // write, zero, trim, cache, flush
	off   uint64
	n     uint64
	flags uint32
	fill  byte // write payload byte (0: an all-zero payload)
	// plainOnly: run only on images without a backing file.
	plainOnly bool
}

const (
	fua      = libnbd.CmdFlagFUA
	noHole   = libnbd.CmdFlagNoHole
	fastZero = libnbd.CmdFlagFastZero
)

var scenario = []op{
	{cmd: "write", off: 100, n: 1000, fill: 0x31},                             // partial cluster over data
	{cmd: "write", off: 1*mib - 4*kib, n: 8 * kib, fill: 0x32, flags: fua},    // across a cluster boundary
	{cmd: "write", off: 4 * mib, n: 128 * kib, fill: 0},                       // all-zero payload, aligned
	{cmd: "write", off: 4*mib + 128*kib + 512, n: 4 * kib, fill: 0},           // all-zero payload, unaligned
	{cmd: "write", off: 1 * mib, n: 64 * kib, fill: 0, flags: fua},            // all-zero payload over data, FUA
	{cmd: "zero", off: 256 * kib, n: 128 * kib},                               // aligned, over data
	{cmd: "zero", off: 512*kib + 512, n: 1024},                                // inside a data cluster
	{cmd: "zero", off: 640 * kib, n: 64 * kib, flags: noHole},                 // keep allocated
	{cmd: "zero", off: 768 * kib, n: 64 * kib, flags: fastZero},               // aligned over data
	{cmd: "zero", off: 832*kib + 100, n: 200, flags: fastZero},                // unaligned over data: slow
	{cmd: "zero", off: 704*kib + 512, n: 128*kib - 512, flags: fastZero},      // partial head over data: slow
	{cmd: "zero", off: 640*kib + 512, n: 59 * kib, flags: fastZero},           // inside zero clusters
	{cmd: "zero", off: 6*mib + 100, n: 200, flags: fastZero, plainOnly: true}, // unaligned, unallocated
	{cmd: "zero", off: 2*mib + 100, n: 200, flags: fastZero},                  // unaligned in a zero cluster
	{cmd: "zero", off: 7 * mib, n: 128 * kib, flags: fastZero | noHole},       // aligned, unallocated
	{cmd: "zero", off: 5 * mib, n: 256 * kib, flags: fastZero},                // aligned, over backing data
	{cmd: "zero", off: 3 * mib, n: 64 * kib, flags: fua},                      // discarded range, FUA
	{cmd: "trim", off: 1*mib + 128*kib, n: 192 * kib},
	{cmd: "trim", off: 2*mib + 1000, n: 70000},
	{cmd: "trim", off: 3*mib + 64*kib, n: 64 * kib, flags: fua},
	{cmd: "flush"},
	{cmd: "zero", off: shapeSize - 1000, n: 1000}, // unaligned tail at the end of the image
	{cmd: "write", off: shapeSize - 512, n: 512, fill: 0x3f},
	{cmd: "zero", off: 0, n: 64 * kib, flags: fastZero}, // over the first writes' data
}

// optionSets are the export options each shape runs with.
var optionSets = []struct {
	name string
	o    serveOpts
}{
	{"default", serveOpts{}},
	{"discard", serveOpts{discard: true}},
	{"detect-zeroes", serveOpts{detectZeroes: server.DetectZeroesOn}},
	{"detect-unmap", serveOpts{discard: true, detectZeroes: server.DetectZeroesUnmap}},
}

// run performs o on h and returns what happened, as a comparable string.
func (o op) run(h *libnbd.Handle) string {
	var err error
	switch o.cmd {
	case "write":
		err = h.Pwrite(bytes.Repeat([]byte{o.fill}, int(o.n)), o.off, o.flags)
	case "zero":
		err = h.Zero(o.n, o.off, o.flags)
	case "trim":
		err = h.Trim(o.n, o.off, o.flags)
	case "cache":
		err = h.Cache(o.n, o.off, o.flags)
	case "flush":
		err = h.Flush(o.flags)
	}
	if err == nil {
		return "ok"
	}
	var le *libnbd.Error
	if errors.As(err, &le) {
		return le.Errno.Error()
	}
	return err.Error()
}

func TestOpsMatchQemuNBD(t *testing.T) {
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := sh.make(t, dir)
			for _, os := range optionSets {
				t.Run(os.name, func(t *testing.T) {
					runScenario(t, sh, orig, os.o)
				})
			}
		})
	}
}

func runScenario(t *testing.T, sh shape, orig string, o serveOpts) {
	// Each server gets its own copy of the image (and the shared, read-only backing file).
	mine := copyFile(t, orig, t.TempDir())
	theirs := copyFile(t, orig, t.TempDir())
	for _, p := range []string{mine, theirs} {
		if sh.backing {
			// Point the copy back at the original's backing file.
			info := qemuImg(t, "info", "--output=json", orig)
			base := jsonField(info, "full-backing-filename")
			format := jsonField(info, "backing-filename-format")
			qemuImg(t, "rebase", "-u", "-b", base, "-F", format, p)
		}
	}
	ours, stopOurs := serveQnbd(t, mine, o)
	ref, stopRef := serveQemu(t, theirs, o)
	ho, hr := connect(t, ours), connect(t, ref)

	for _, name := range []string{"trim", "zero", "fast-zero", "fua", "flush", "cache"} {
		if a, b := can(ho, name), can(hr, name); a != b {
			t.Errorf("can %s: qnbd %v, qemu-nbd %v", name, a, b)
		}
	}
	for i, op := range scenario {
		if op.plainOnly && sh.backing {
			continue
		}
		got, want := op.run(ho), op.run(hr)
		if got != want {
			t.Errorf("op %d %+v: qnbd %s, qemu-nbd %s", i, op, got, want)
		}
	}
	// The same commands leave the same allocation: block status of both servers alike.
	contexts := []string{"base:allocation", "qemu:allocation-depth"}
	var ourMaps [][]extent
	for _, ctx := range contexts {
		ourMaps = append(ourMaps, nbdMap(t, ours, ctx))
		if want := nbdMap(t, ref, ctx); !reflect.DeepEqual(ourMaps[len(ourMaps)-1], want) {
			t.Errorf("%s after the same commands\n qnbd:     %v\n qemu-nbd: %v", ctx, ourMaps[len(ourMaps)-1], want)
		}
	}
	a, b := make([]byte, shapeSize), make([]byte, shapeSize)
	if err := ho.Pread(a, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := hr.Pread(b, 0, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(a, b); i >= 0 {
		t.Errorf("content differs first at byte %d: qnbd %#x, qemu-nbd %#x", i, a[i], b[i])
	}
	ho.Close()
	hr.Close()
	stopOurs()
	stopRef()
	if out, err := exec.Command("qemu-img", "compare", "-q", mine, theirs).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare: %v\n%s", err, out)
	}
	checkClean(t, mine)
	// And the same image: qemu-img map, with host offsets where QEMU has them (their values
	// follow each allocator's placement, which differs: QEMU's is next-fit from its
	// free_cluster_index, the engine's first-fit; TestZeroDiscardMatchQemu in qcow2 compares
	// them where they agree).
	if a, b := mapShape(qemuImg(t, "map", "--output=json", mine)), mapShape(qemuImg(t, "map", "--output=json", theirs)); a != b {
		t.Errorf("qemu-img map after the same commands\n qnbd:\n%s\n qemu-nbd:\n%s", a, b)
	}
}

func can(h *libnbd.Handle, what string) bool {
	var ok bool
	var err error
	switch what {
	case "trim":
		ok, err = h.CanTrim()
	case "zero":
		ok, err = h.CanZero()
	case "fast-zero":
		ok, err = h.CanFastZero()
	case "fua":
		ok, err = h.CanFua()
	case "flush":
		ok, err = h.CanFlush()
	case "cache":
		ok, err = h.CanCache()
	}
	return ok && err == nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// jsonField pulls a string field out of qemu-img's JSON without a schema.
func jsonField(js, key string) string {
	i := strings.Index(js, `"`+key+`": "`)
	if i < 0 {
		return ""
	}
	rest := js[i+len(key)+5:]
	return rest[:strings.IndexByte(rest, '"')]
}

// checkClean requires qemu-img check to find nothing and the dirty bit to be clear.
func checkClean(t *testing.T, path string) {
	t.Helper()
	corpus.RequireClean(t, path)
	info := qemuImg(t, "info", "--output=json", path)
	if strings.Contains(info, `"dirty-flag": true`) {
		t.Errorf("%s: dirty bit still set", path)
	}
}

// mapShape is qemu-img map's JSON reduced to what does not depend on where the allocator put
// clusters: runs of equal depth/present/zero/data and whether they have an offset, merged.
func mapShape(js string) string {
	var ext []struct {
		Start, Length       uint64
		Depth               int
		Present, Zero, Data bool
		Offset              *uint64
	}
	if err := json.Unmarshal([]byte(js), &ext); err != nil {
		return "unparsable: " + js
	}
	var b strings.Builder
	for i := 0; i < len(ext); {
		e := ext[i]
		j := i + 1
		for j < len(ext) && ext[j].Depth == e.Depth && ext[j].Present == e.Present && ext[j].Zero == e.Zero &&
			ext[j].Data == e.Data && (ext[j].Offset == nil) == (e.Offset == nil) {
			e.Length += ext[j].Length
			j++
		}
		fmt.Fprintf(&b, "%d+%d depth %d present %v zero %v data %v offset %v\n", e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, e.Offset != nil)
		i = j
	}
	return b.String()
}
