// Test helpers of the check/repair/create tests: qemu-img/qemu-io as oracles, and byte pokes at
// offsets read from an image's own header.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ccRun runs a command and returns its stdout; it fails the test if the command fails.
func ccRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return out.String()
}

// ccQemuCheck is the oracle's verdict on an image: qemu-img check's exit status and JSON.
type ccQemuCheck struct {
	Exit             int
	Corruptions      int    `json:"corruptions"`
	Leaks            int    `json:"leaks"`
	CheckErrors      int    `json:"check-errors"`
	CorruptionsFixed int    `json:"corruptions-fixed"`
	LeaksFixed       int    `json:"leaks-fixed"`
	ImageEndOffset   uint64 `json:"image-end-offset"`
	TotalClusters    uint64 `json:"total-clusters"`
	Allocated        uint64 `json:"allocated-clusters"`
	Fragmented       uint64 `json:"fragmented-clusters"`
	Compressed       uint64 `json:"compressed-clusters"`
	Stderr           string
}

// ccQemuImgCheck runs qemu-img check --output=json [extra...] on path.
func ccQemuImgCheck(t testing.TB, path string, extra ...string) ccQemuCheck {
	t.Helper()
	args := append([]string{"check", "--output=json"}, extra...)
	args = append(args, path)
	var out, errb bytes.Buffer
	cmd := exec.Command("qemu-img", args...)
	// Relative data file names resolve against qemu-img's working directory.
	cmd.Dir, cmd.Stdout, cmd.Stderr = filepath.Dir(path), &out, &errb
	err := cmd.Run()
	var r ccQemuCheck
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	default:
		t.Fatalf("qemu-img check: %v", err)
	}
	r.Stderr = errb.String()
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
			t.Fatalf("qemu-img check output %q: %v", out.String(), jerr)
		}
	}
	return r
}

// ccCompareWithQemu fails the test unless our result agrees with qemu-img check's on every
// counter and the exit class.
func ccCompareWithQemu(t testing.TB, ours *CheckResult, q ccQemuCheck) {
	t.Helper()
	type row struct {
		name      string
		got, want uint64
	}
	rows := []row{
		{"exit", uint64(ours.ExitCode()), uint64(q.Exit)},
		{"corruptions", uint64(ours.Corruptions), uint64(q.Corruptions)},
		{"leaks", uint64(ours.Leaks), uint64(q.Leaks)},
		{"check-errors", uint64(ours.CheckErrors), uint64(q.CheckErrors)},
		{"corruptions-fixed", uint64(ours.CorruptionsFixed), uint64(q.CorruptionsFixed)},
		{"leaks-fixed", uint64(ours.LeaksFixed), uint64(q.LeaksFixed)},
		{"image-end-offset", ours.ImageEndOffset, q.ImageEndOffset},
		{"total-clusters", ours.TotalClusters, q.TotalClusters},
		{"allocated-clusters", ours.AllocatedClusters, q.Allocated},
		{"fragmented-clusters", ours.FragmentedClusters, q.Fragmented},
		{"compressed-clusters", ours.CompressedClusters, q.Compressed},
	}
	for _, r := range rows {
		if r.got != r.want {
			t.Errorf("%s: ours %d, qemu-img %d\nours: %q\nqemu-img stderr:\n%s", r.name, r.got, r.want, ours.Messages, q.Stderr)
		}
	}
}

// ccCopy copies src to a new file in dir and returns its path.
func ccCopy(t testing.TB, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// ccImg gives tests byte-level access to an image file, at offsets read from its own header.
type ccImg struct {
	t    testing.TB
	path string
	h    *Header
}

func ccOpenImg(t testing.TB, path string) *ccImg {
	t.Helper()
	s, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &ccImg{t: t, path: path, h: h}
}

func (m *ccImg) read(off uint64, n int) []byte {
	m.t.Helper()
	f, err := os.Open(m.path)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		m.t.Fatalf("read %d bytes at %#x: %v", n, off, err)
	}
	return b
}

func (m *ccImg) write(off uint64, b []byte) {
	m.t.Helper()
	f, err := os.OpenFile(m.path, os.O_RDWR, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *ccImg) u64(off uint64) uint64 { return binary.BigEndian.Uint64(m.read(off, 8)) }

func (m *ccImg) putU64(off, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	m.write(off, b[:])
}

// l2EntryOff returns the file offset of the L2 entry mapping guest offset g (the active L1 must
// map it to an L2 table).
func (m *ccImg) l2EntryOff(g uint64) uint64 {
	m.t.Helper()
	geo := m.h.Geometry()
	l1e := l1Entry(m.u64(uint64(m.h.L1TableOffset) + uint64(GuestOffset(g).l1Index(geo))*8))
	if l1e.l2Offset() == 0 {
		m.t.Fatalf("guest %#x has no L2 table", g)
	}
	return uint64(l1e.l2Offset()) + uint64(GuestOffset(g).l2Index(geo))*geo.l2EntrySize()
}

func (m *ccImg) l1EntryOff(g uint64) uint64 {
	return uint64(m.h.L1TableOffset) + uint64(GuestOffset(g).l1Index(m.h.Geometry()))*8
}

// dataCluster returns the host cluster holding guest offset g.
func (m *ccImg) dataCluster(g uint64) hostCluster {
	m.t.Helper()
	e := l2Entry(m.u64(m.l2EntryOff(g)))
	if e.Offset() == 0 {
		m.t.Fatalf("guest %#x not allocated (entry %#x)", g, uint64(e))
	}
	return e.Offset().cluster(m.h.Geometry())
}

// refcount reads cluster c's stored refcount.
func (m *ccImg) refcount(c hostCluster) refcount {
	m.t.Helper()
	g := m.h.Geometry()
	rt := refTableEntry(m.u64(uint64(m.h.RefTableOffset) + uint64(c.refTableIndex(g))*8))
	if rt.Offset() == 0 {
		return 0
	}
	return RefBlock{Data: m.read(uint64(rt.Offset()), int(g.ClusterSize())), Order: g.RefcountOrder}.Get(c.refBlockIndex(g))
}

// setRefcount stores v as cluster c's refcount; its refcount block must exist.
func (m *ccImg) setRefcount(c hostCluster, v refcount) {
	m.t.Helper()
	g := m.h.Geometry()
	rt := refTableEntry(m.u64(uint64(m.h.RefTableOffset) + uint64(c.refTableIndex(g))*8))
	if rt.Offset() == 0 {
		m.t.Fatalf("no refcount block for cluster %d", c)
	}
	blk := RefBlock{Data: m.read(uint64(rt.Offset()), int(g.ClusterSize())), Order: g.RefcountOrder}
	blk.Set(c.refBlockIndex(g), v)
	m.write(uint64(rt.Offset()), blk.Data)
}

// ccSameGuest reports whether two qcow2 images hold the same guest data (qemu-img compare,
// which reads sparsely and so copes with multi-TiB virtual disks).
func ccSameGuest(t testing.TB, a, b string) bool {
	t.Helper()
	cmd := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b)
	cmd.Dir = filepath.Dir(a)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false
	}
	t.Fatalf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	return false
}
