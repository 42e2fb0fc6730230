package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// ccNewImage makes an image with qemu-img create -o opts and runs qemu-io commands on it.
func ccNewImage(t testing.TB, dir, name, opts, size string, io ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	ccRun(t, "qemu-img", append(args, p, size)...)
	ccIO(t, p, io...)
	return p
}

// ccIO runs qemu-io commands on an image.
func ccIO(t testing.TB, p string, cmds ...string) {
	t.Helper()
	if len(cmds) == 0 {
		return
	}
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ccRun(t, "qemu-io", append(args, p)...)
}

// ccScenario is an image built by qemu tools, possibly broken on purpose, and qemu-img check's
// expected verdict on it.
type ccScenario struct {
	name  string
	build func(t *testing.T, dir string) string
	want  int // qemu-img check exit status
	// repaired is qemu-img check's exit status after qemu-img check -r all (and after ours).
	repaired int
	// qemuCannotRepair: qemu-img check -r all gives up on this image (exit 1), we do not.
	qemuCannotRepair bool
	// unreadable: qemu refuses to read the guest data of the broken image.
	unreadable bool
}

var ccWrites = []string{"write -P 0x11 0 128k", "write -P 0x22 1M 64k", "write -P 0x33 3M 4k"}

func ccScenarios() []ccScenario {
	clean := func(opts, size string, io ...string) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string { return ccNewImage(t, dir, "t.qcow2", opts, size, io...) }
	}
	broken := func(opts string, poke func(m *ccImg)) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", opts, "64M", ccWrites...)
			poke(ccOpenImg(t, p))
			return p
		}
	}
	return []ccScenario{
		{name: "clean-64k", build: clean("", "64M", ccWrites...)},
		{name: "clean-empty-4T", build: clean("", "4T")},
		{name: "clean-512", build: clean("cluster_size=512", "16M", ccWrites...)},
		{name: "clean-2M", build: clean("cluster_size=2M", "64M", ccWrites...)},
		{name: "clean-v2", build: clean("compat=0.10", "64M", ccWrites...)},
		{name: "clean-refbits1", build: clean("refcount_bits=1,cluster_size=4k", "16M", ccWrites...)},
		{name: "clean-refbits64", build: clean("refcount_bits=64", "64M", ccWrites...)},
		{name: "clean-extl2", build: clean("extended_l2=on", "64M", "write -P 1 0 4k", "write -P 2 70k 6k", "write -z 200k 8k", "write -z -u 1M 64k")},
		{name: "clean-zero-clusters", build: clean("", "64M", "write -P 1 0 192k", "write -z 64k 64k", "write -z -u 128k 64k", "write -z 1M 64k")},
		{name: "clean-prealloc-metadata", build: clean("preallocation=metadata,cluster_size=16k", "8M", "write -P 3 8k 16k")},
		{name: "clean-datafile", build: func(t *testing.T, dir string) string {
			return ccNewImage(t, dir, "t.qcow2", "data_file="+filepath.Join(dir, "t.data"), "64M", ccWrites...)
		}},
		{name: "clean-snapshots", build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "", "64M", ccWrites...)
			ccRun(t, "qemu-img", "snapshot", "-c", "s1", p)
			ccIO(t, p, "write -P 0x44 0 64k", "write -P 0x55 8M 64k")
			ccRun(t, "qemu-img", "snapshot", "-c", "s2", p)
			ccIO(t, p, "write -P 0x66 64k 64k")
			return p
		}},
		{name: "clean-compressed", build: func(t *testing.T, dir string) string {
			src := ccNewImage(t, dir, "src.qcow2", "", "8M", "write -P 0x11 0 1M", "write -P 0x22 3M 100k")
			p := filepath.Join(dir, "t.qcow2")
			ccRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k", src, p)
			return p
		}},
		{name: "clean-bitmaps", build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "cluster_size=4k", "64M", "write -P 1 0 64k")
			ccRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b0")
			ccRun(t, "qemu-img", "bitmap", "--add", p, "b1")
			ccIO(t, p, "write -P 2 1M 1M", "write -P 3 40M 64k")
			return p
		}},
		{name: "leaked", want: 3, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "", "64M", append(ccWrites, "discard 1M 64k")...)
			m := ccOpenImg(t, p)
			// The discarded cluster is free but still inside the file: give it a refcount.
			for c := hostCluster(0); uint64(c) < uint64(ccFileSize(t, p))/m.h.ClusterSize(); c++ {
				if m.refcount(c) == 0 {
					m.setRefcount(c, 1)
					return p
				}
			}
			t.Fatal("no free cluster inside the file")
			return ""
		}},
		{name: "refcount0", want: 2, build: broken("", func(m *ccImg) { m.setRefcount(m.dataCluster(1<<20), 0) })},
		{name: "refcount-too-low", want: 2, build: broken("", func(m *ccImg) {
			ccRun(m.t, "qemu-img", "snapshot", "-c", "s", m.path)
			m.setRefcount(m.dataCluster(0), 1)
		})},
		{name: "l2-to-reftable", want: 2, build: broken("", func(m *ccImg) {
			m.putU64(m.l2EntryOff(2<<20), uint64(makeL2Entry(m.h.RefTableOffset, true, false)))
		})},
		{name: "l2-to-refblock", want: 2, build: broken("", func(m *ccImg) {
			rb := refTableEntry(m.u64(uint64(m.h.RefTableOffset))).Offset()
			m.putU64(m.l2EntryOff(2<<20), uint64(makeL2Entry(rb, true, false)))
		})},
		{name: "cross-link", want: 2, build: broken("", func(m *ccImg) {
			m.putU64(m.l2EntryOff(2<<20), m.u64(m.l2EntryOff(1<<20)))
		})},
		{name: "copied-l2-clear", want: 2, build: broken("", func(m *ccImg) {
			o := m.l2EntryOff(64 << 10)
			m.putU64(o, m.u64(o)&^entryCopied)
		})},
		{name: "copied-l1-clear", want: 2, build: broken("", func(m *ccImg) {
			o := m.l1EntryOff(0)
			m.putU64(o, m.u64(o)&^entryCopied)
		})},
		{name: "copied-on-compressed", want: 2, build: func(t *testing.T, dir string) string {
			src := ccNewImage(t, dir, "src.qcow2", "", "8M", "write -P 0x11 0 256k")
			p := filepath.Join(dir, "t.qcow2")
			ccRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", src, p)
			m := ccOpenImg(t, p)
			o := m.l2EntryOff(64 << 10)
			m.putU64(o, m.u64(o)|entryCopied)
			return p
		}, repaired: 2},
		{name: "unaligned-data", want: 2, repaired: 2, unreadable: true, build: broken("", func(m *ccImg) {
			o := m.l2EntryOff(1 << 20)
			m.putU64(o, m.u64(o)+512)
		})},
		{name: "unaligned-prealloc-zero", want: 2, unreadable: true, build: broken("", func(m *ccImg) {
			o := m.l2EntryOff(1 << 20)
			m.putU64(o, m.u64(o)+512|l2Zero)
		})},
		{name: "l2-reserved-bits", want: 2, repaired: 2, build: broken("", func(m *ccImg) {
			o := m.l2EntryOff(1 << 20)
			m.putU64(o, m.u64(o)|1<<57)
		})},
		{name: "past-eof", want: 2, repaired: 2, build: broken("", func(m *ccImg) {
			m.putU64(m.l2EntryOff(2<<20), uint64(makeL2Entry(1<<40, true, false)))
		})},
		{name: "refblock-unaligned", want: 1, qemuCannotRepair: true, build: broken("", func(m *ccImg) {
			m.putU64(uint64(m.h.RefTableOffset), m.u64(uint64(m.h.RefTableOffset))+512)
		})},
		{name: "crosslink-storm", want: 2, repaired: 2, build: func(t *testing.T, dir string) string {
			// Every L1 entry points at the first L2 table, whose every entry points at the
			// first data cluster: 81920 references to one cluster, over the 16-bit limit.
			p := ccNewImage(t, dir, "t.qcow2", "cluster_size=1k", "80M", "write -P 1 0 1k")
			m := ccOpenImg(t, p)
			l1e, l2e := m.u64(m.l1EntryOff(0)), m.u64(m.l2EntryOff(0))
			l2 := l1Entry(l1e).l2Offset()
			fill := func(n, v uint64) []byte {
				b := make([]byte, n*8)
				for i := range n {
					binary.BigEndian.PutUint64(b[i*8:], v)
				}
				return b
			}
			m.write(uint64(m.h.L1TableOffset), fill(uint64(m.h.L1Size), l1e))
			m.write(uint64(l2), fill(m.h.Geometry().l2Entries(), l2e))
			return p
		}},
		{name: "extl2-alloc-and-zero", want: 2, repaired: 2, unreadable: true, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "extended_l2=on", "64M", "write -P 1 0 64k", "write -P 2 1M 4k")
			m := ccOpenImg(t, p)
			o := m.l2EntryOff(1<<20) + 8
			m.putU64(o, m.u64(o)|m.u64(o)<<32) // the allocated subcluster also reads as zero
			return p
		}},
		{name: "extl2-unallocated-alloc-bits", want: 2, repaired: 2, unreadable: true, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "extended_l2=on", "64M", "write -P 1 0 64k")
			m := ccOpenImg(t, p)
			m.putU64(m.l2EntryOff(2<<20)+8, 1)
			return p
		}},
		{name: "bitmap-refcount0", want: 2, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "cluster_size=4k", "16M", "write -P 1 0 64k")
			ccRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b0")
			ccIO(t, p, "write -P 2 1M 1M")
			m := ccOpenImg(t, p)
			m.setRefcount(m.h.Extensions.Bitmaps.DirectoryStart.cluster(m.h.Geometry()), 0)
			return p
		}},
		{name: "datafile-copied-clear", want: 2, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "data_file="+filepath.Join(dir, "t.data"), "64M", ccWrites...)
			m := ccOpenImg(t, p)
			o := m.l2EntryOff(1 << 20)
			m.putU64(o, m.u64(o)&^entryCopied)
			return p
		}},
		{name: "v2-refcount0", want: 2, build: broken("compat=0.10", func(m *ccImg) { m.setRefcount(m.dataCluster(1<<20), 0) })},
		{name: "refbits64-refcount0", want: 2, build: broken("refcount_bits=64", func(m *ccImg) { m.setRefcount(m.dataCluster(1<<20), 0) })},
		{name: "dirty-lazy-512-many-refblocks", want: 2, build: func(t *testing.T, dir string) string {
			// 512-byte clusters: one refcount block covers 256 clusters, so the rebuild
			// writes a dozen of them.
			p := ccNewImage(t, dir, "t.qcow2", "lazy_refcounts=on,cluster_size=512", "16M", "write -P 0x11 0 64k")
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", "-c", "write -P 0x33 5M 512k", "-c", "sigraise 9", p)
			if err := cmd.Run(); err == nil {
				t.Fatal("qemu-io was not killed")
			}
			return p
		}},
		{name: "dirty-lazy-snapshot", want: 2, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "lazy_refcounts=on", "64M", "write -P 0x11 0 256k")
			ccRun(t, "qemu-img", "snapshot", "-c", "s1", p)
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 64k 64k", "-c", "write -P 0x33 5M 4k", "-c", "sigraise 9", p)
			if err := cmd.Run(); err == nil {
				t.Fatal("qemu-io was not killed")
			}
			return p
		}},
		{name: "dirty-lazy", want: 2, build: func(t *testing.T, dir string) string {
			p := ccNewImage(t, dir, "t.qcow2", "lazy_refcounts=on", "64M", "write -P 0x11 0 64k")
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 128k", "-c", "write -P 0x33 5M 4k", "-c", "sigraise 9", p)
			if err := cmd.Run(); err == nil {
				t.Fatal("qemu-io was not killed")
			}
			if h := ccOpenImg(t, p).h; !h.Dirty() {
				t.Fatal("image not dirty after kill")
			}
			return p
		}},
	}
}

func ccFileSize(t testing.TB, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestCheckMatchesQemu checks every scenario with Check and with qemu-img check and requires
// the same verdict and counters.
func TestCheckMatchesQemu(t *testing.T) {
	t.Parallel()
	for _, sc := range ccScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			p := sc.build(t, t.TempDir())
			q := corpus.QemuCheck(t, p, corpus.CheckOptions{})
			if q.ExitCode != sc.want {
				t.Fatalf("scenario is not what it claims: qemu-img check exit %d, want %d\n%s", q.ExitCode, sc.want, q.Stderr)
			}
			res, err := Check(p, RepairNone)
			if sc.want == 1 {
				// qemu-img gives up; we may finish or give up, but must say check errors.
				if err == nil && res.CheckErrors == 0 {
					t.Fatalf("no check errors on an image qemu-img cannot check: %q", res.Messages)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v (%q)", err, res.Messages)
			}
			ccCompareWithQemu(t, res, q)
			ccCompareMessages(t, res, q)
		})
	}
}

// ccCompareMessages requires that every finding qemu-img prints (lines starting with ERROR,
// Leaked or Repairing) is among ours, word for word.
func ccCompareMessages(t testing.TB, res *CheckResult, q *corpus.CheckResult) {
	t.Helper()
	ours := map[string]bool{}
	for _, m := range res.Messages {
		ours[m] = true
	}
	for _, line := range strings.Split(q.Stderr, "\n") {
		if strings.HasPrefix(line, "ERROR") || strings.HasPrefix(line, "Leaked") || strings.HasPrefix(line, "Repairing") {
			if !ours[line] {
				t.Errorf("qemu-img says %q; we did not (ours: %q)", line, res.Messages)
			}
		}
	}
}

// TestRepairAllMatchesQemu repairs each scenario with RepairAll and a copy with qemu-img
// check -r all, and requires: the same counters, qemu-img check's verdict on our repaired
// image equal to its verdict on its own, and unchanged guest data.
func TestRepairAllMatchesQemu(t *testing.T) {
	t.Parallel()
	for _, sc := range ccScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := sc.build(t, dir)
			before := ccCopy(t, p, dir, "before.qcow2")
			theirs := ccCopy(t, p, dir, "theirs.qcow2")
			q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: "all"})
			res, err := Check(p, RepairAll)
			if err != nil {
				t.Fatalf("RepairAll: %v (%q)", err, res.Messages)
			}
			after := corpus.QemuCheck(t, p, corpus.CheckOptions{})
			if after.ExitCode != sc.repaired {
				t.Errorf("qemu-img check after our repair: exit %d, want %d\n%s\nours: %q", after.ExitCode, sc.repaired, after.Stderr, res.Messages)
			}
			if res.ExitCode() != after.ExitCode {
				t.Errorf("our verdict after repair %d, qemu-img's %d", res.ExitCode(), after.ExitCode)
			}
			if sc.qemuCannotRepair {
				if q.ExitCode != 1 {
					t.Errorf("qemu-img check -r all: exit %d, the scenario says it gives up", q.ExitCode)
				}
			} else if q.ExitCode != sc.repaired {
				t.Errorf("qemu-img check -r all: exit %d, want %d (scenario expectation wrong?)", q.ExitCode, sc.repaired)
			} else if int64(res.CorruptionsFixed) != q.CorruptionsFixed || int64(res.LeaksFixed) != q.LeaksFixed {
				t.Errorf("fixed: ours corruptions %d leaks %d, qemu-img corruptions %d leaks %d\nours: %q\nqemu: %s",
					res.CorruptionsFixed, res.LeaksFixed, q.CorruptionsFixed, q.LeaksFixed, res.Messages, q.Stderr)
			}
			if sc.want != 0 && sc.repaired == 0 && res.CorruptionsFixed+res.LeaksFixed == 0 {
				t.Errorf("nothing repaired on a broken image: %q", res.Messages)
			}
			if h := ccOpenImg(t, p).h; h.Dirty() && after.ExitCode == 0 {
				t.Errorf("dirty bit still set after a successful repair")
			}
			if !sc.unreadable && !ccSameGuest(t, before, p) {
				t.Errorf("guest data changed by the repair")
			}
		})
	}
}

// TestRepairLeaks checks RepairLeaks: leaks go away, a needed rebuild is refused with
// errNeedRebuild (qemu-img -r leaks exits 1 there), other corruptions stay.
func TestRepairLeaks(t *testing.T) {
	t.Parallel()
	for _, sc := range ccScenarios() {
		switch sc.name {
		case "leaked", "refcount0", "cross-link", "dirty-lazy", "clean-64k":
		default:
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := sc.build(t, dir)
			theirs := ccCopy(t, p, dir, "theirs.qcow2")
			q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: "leaks"})
			res, err := Check(p, RepairLeaks)
			if q.ExitCode == 1 {
				if !errors.Is(err, errNeedRebuild) {
					t.Fatalf("qemu-img -r leaks gives up (%s); we returned %v", q.Stderr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("RepairLeaks: %v (%q)", err, res.Messages)
			}
			ccCompareWithQemu(t, res, q)
			if after := corpus.QemuCheck(t, p, corpus.CheckOptions{}); after.ExitCode != q.ExitCode {
				t.Errorf("after our -r leaks qemu-img says %d, after its own %d", after.ExitCode, q.ExitCode)
			}
		})
	}
}

// TestRepairClearsCorruptAndDirtyBits: a repair that leaves the image consistent clears the
// corrupt bit and the dirty bit, as qemu-img check -r does; a plain check changes nothing.
func TestRepairClearsCorruptAndDirtyBits(t *testing.T) {
	t.Parallel()
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := ccNewImage(t, dir, "t.qcow2", "lazy_refcounts=on", "64M", ccWrites...)
			m := ccOpenImg(t, p)
			m.putU64(offIncompatibleFeatures, m.h.Incompatible|incompatCorrupt|incompatDirty)
			q := corpus.QemuCheck(t, p, corpus.CheckOptions{})
			res, err := Check(p, RepairNone)
			if err != nil {
				t.Fatal(err)
			}
			ccCompareWithQemu(t, res, q)
			if h := ccOpenImg(t, p).h; !h.Corrupt() || !h.Dirty() {
				t.Fatal("a plain check changed the header")
			}
			if res, err = Check(p, mode); err != nil || res.ExitCode() != 0 {
				t.Fatalf("%v: %v %+v", mode, err, res)
			}
			if h := ccOpenImg(t, p).h; h.Corrupt() || h.Dirty() {
				t.Fatalf("bits still set after %v: %#x", mode, h.Incompatible)
			}
			info := ccInfo(t, dir, p)
			spec := info["format-specific"].(map[string]any)["data"].(map[string]any)
			if spec["corrupt"] != false || info["dirty-flag"] != false {
				t.Fatalf("qemu-img info after repair: %v", info)
			}
		})
	}
}
