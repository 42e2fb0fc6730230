package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// propConfig is one image configuration of the randomized property test.
type propConfig struct {
	name    string
	opts    string // qemu-img create -o
	size    uint64
	backing string // "", "raw" or "qcow2"
	data    bool   // external data file
	dataRaw bool
}

func propConfigs() []propConfig {
	return []propConfig{
		{name: "64k", opts: "cluster_size=64k", size: 16 << 20},
		{name: "512-refbits1", opts: "cluster_size=512,refcount_bits=1", size: 2 << 20},
		{name: "512-refbits64", opts: "cluster_size=512,refcount_bits=64", size: 2 << 20},
		{name: "4k-refbits16", opts: "cluster_size=4k", size: 8 << 20},
		{name: "2M", opts: "cluster_size=2M", size: 24 << 20},
		{name: "v2-4k", opts: "compat=0.10,cluster_size=4k", size: 8 << 20},
		{name: "v2-4k-backing", opts: "compat=0.10,cluster_size=4k", size: 8 << 20, backing: "raw"},
		{name: "extl2-16k", opts: "extended_l2=on,cluster_size=16k", size: 8 << 20},
		{name: "extl2-64k-backing", opts: "extended_l2=on,cluster_size=64k", size: 16 << 20, backing: "qcow2"},
		{name: "lazy-4k", opts: "lazy_refcounts=on,cluster_size=4k", size: 8 << 20},
		{name: "backing-raw-64k", opts: "cluster_size=64k", size: 16 << 20, backing: "raw"},
		{name: "backing-qcow2-4k", opts: "cluster_size=4k", size: 8 << 20, backing: "qcow2"},
		{name: "datafile-64k", opts: "cluster_size=64k", size: 16 << 20, data: true},
		{name: "datafile-raw-4k", opts: "cluster_size=4k", size: 8 << 20, data: true, dataRaw: true},
	}
}

// propModel is the shadow: what the guest must read.
type propModel struct {
	cfg     propConfig
	shadow  []byte
	backing []byte // the backing file's contents (nil without one); it reads as zeros past them
	bsize   uint64 // the backing file's size
	cs      uint64
	v2      bool
}

func (m *propModel) discard(off, n uint64) {
	if m.v2 && m.backing != nil {
		return // QEMU refuses it (no zero flag to hide the backing file): nothing happens
	}
	end := off + n
	a := alignUp(off, m.cs)
	b := end / m.cs * m.cs
	if end == uint64(len(m.shadow)) {
		b = alignUp(end, m.cs)
	}
	for c := a; c < b && c < uint64(len(m.shadow)); c += m.cs {
		e := min(c+m.cs, uint64(len(m.shadow)))
		clear(m.shadow[c:e])
	}
}

// TestPropertyRandomOps runs random reads, writes, write-zeroes, discards, flushes and reopens
// against a raw shadow model on images of several cluster sizes, refcount widths, versions and
// features, checking every read, and at the end requires qemu-img check to find no error and
// no leak and qemu-img compare to find the image equal to the shadow.
func TestPropertyRandomOps(t *testing.T) {
	ops := 250
	if *longTests {
		ops = 4000
	}
	for i, cfg := range propConfigs() {
		t.Run(cfg.name, func(t *testing.T) {
			t.Parallel()
			runProperty(t, cfg, ops, uint64(i)*7919+1)
		})
	}
}

func propSetup(t *testing.T, cfg propConfig, rng *rand.Rand) (string, *propModel) {
	dir := t.TempDir()
	opts := cfg.opts
	m := &propModel{cfg: cfg, shadow: make([]byte, cfg.size)}
	if cfg.backing != "" {
		bsize := cfg.size * 3 / 4 // shorter than the overlay: the rest reads as zeros
		base := filepath.Join(dir, "base."+cfg.backing)
		content := make([]byte, bsize)
		for i := uint64(0); i < bsize; i += 4096 {
			if rng.IntN(3) > 0 {
				fillPattern(content[i:min(i+4096, bsize)], byte(rng.IntN(255)+1))
			}
		}
		raw := filepath.Join(dir, "base.content")
		if err := os.WriteFile(raw, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if cfg.backing == "raw" {
			if err := os.Rename(raw, base); err != nil {
				t.Fatal(err)
			}
		} else {
			engQemu(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4k", raw, base)
		}
		opts += ",backing_file=" + base + ",backing_fmt=" + cfg.backing
		m.backing = make([]byte, cfg.size)
		m.bsize = bsize
		copy(m.backing, content)
		copy(m.shadow, content)
	}
	if cfg.data {
		opts += ",data_file=" + filepath.Join(dir, "data.raw")
		if cfg.dataRaw {
			opts += ",data_file_raw=on"
		}
	}
	p := engCreate(t, dir, "img.qcow2", opts, fmt.Sprint(cfg.size))
	h, err := readHeaderFile(t, p)
	if err != nil {
		t.Fatal(err)
	}
	m.cs = h.ClusterSize()
	m.v2 = h.Version == 2
	return p, m
}

// fillPattern fills b with 512-byte runs of seed, seed+1, ... (fast under -race: copies).
func fillPattern(b []byte, seed byte) {
	for i := 0; i < len(b); i += 512 {
		s := b[i:min(i+512, len(b))]
		s[0] = seed + byte(i/512)
		for j := 1; j < len(s); j *= 2 {
			copy(s[j:], s[:j])
		}
	}
}

// propRange picks a request: sometimes cluster aligned, sometimes tiny, sometimes spanning.
func propRange(rng *rand.Rand, size, cs uint64) (uint64, uint64) {
	var off, n uint64
	switch rng.IntN(4) {
	case 0: // aligned clusters
		off = rng.Uint64N(size/cs) * cs
		n = (rng.Uint64N(4) + 1) * cs
	case 1: // small
		off = rng.Uint64N(size)
		n = rng.Uint64N(4096) + 1
	case 2: // sector aligned, spanning
		off = rng.Uint64N(size/512) * 512
		n = (rng.Uint64N(3*cs/512+8) + 1) * 512
	default:
		off = rng.Uint64N(size)
		n = rng.Uint64N(3*cs) + 1
	}
	n = min(n, 1<<20) // bound request sizes with 2 MiB clusters
	if off+n > size {
		n = size - off
	}
	return off, n
}

func runProperty(t *testing.T, cfg propConfig, ops int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	p, m := propSetup(t, cfg, rng)
	open := func() *Image { return openTestImage(t, p, OpenOptions{L2CacheBytes: int64(4 * m.cs)}) }
	img := open()
	defer func() { img.Close() }()
	size := cfg.size
	var log []string
	fail := func(format string, args ...any) {
		t.Helper()
		tail := log
		if len(tail) > 20 {
			tail = tail[len(tail)-20:]
		}
		t.Fatalf("%s\nlast operations:\n%s", fmt.Sprintf(format, args...), bytes.Join(toBytes(tail), []byte("\n")))
	}
	for i := 0; i < ops; i++ {
		off, n := propRange(rng, size, m.cs)
		switch r := rng.IntN(100); {
		case r < 40:
			buf := make([]byte, n)
			fillPattern(buf, byte(rng.IntN(255)+1))
			log = append(log, fmt.Sprintf("write %d %d", off, n))
			if _, err := img.WriteAt(buf, int64(off)); err != nil {
				fail("write %d+%d: %v", off, n, err)
			}
			copy(m.shadow[off:], buf)
		case r < 65:
			log = append(log, fmt.Sprintf("read %d %d", off, n))
			buf := make([]byte, n)
			if _, err := img.ReadAt(buf, int64(off)); err != nil {
				fail("read %d+%d: %v", off, n, err)
			}
			if !bytes.Equal(buf, m.shadow[off:off+n]) {
				fail("read %d+%d differs from the model: %s", off, n, engFirstDiff(buf, m.shadow[off:off+n]))
			}
		case r < 78:
			unmap := rng.IntN(2) == 0
			log = append(log, fmt.Sprintf("zero %d %d unmap=%v", off, n, unmap))
			if err := img.Zero(GuestOffset(off), n, unmapFlag(unmap)); err != nil {
				fail("zero %d+%d: %v", off, n, err)
			}
			clear(m.shadow[off : off+n])
		case r < 88:
			log = append(log, fmt.Sprintf("discard %d %d", off, n))
			if err := img.Discard(GuestOffset(off), n); err != nil {
				fail("discard %d+%d: %v", off, n, err)
			}
			m.discard(off, n)
		case r < 93 && len(log) > 0:
			// Resize between half and twice the original size (a multiple of 512).
			ns := (cfg.size/2 + rng.Uint64N(cfg.size*3/2)) / 512 * 512
			log = append(log, fmt.Sprintf("resize %d -> %d", size, ns))
			if err := img.Resize(ns); err != nil {
				// QEMU cannot zero the new area of a version 2 image over a longer backing
				// file either: refused, nothing changed.
				if m.v2 && ns > size && m.bsize > size && errors.Is(err, ErrUnsupported) {
					log = append(log, "refused")
					continue
				}
				fail("resize %d: %v", ns, err)
			}
			if ns < size {
				m.shadow = m.shadow[:ns]
			} else {
				m.shadow = append(m.shadow, make([]byte, ns-size)...)
			}
			size = ns
		case r < 96:
			log = append(log, "flush")
			if err := img.Flush(); err != nil {
				fail("flush: %v", err)
			}
		default:
			log = append(log, "reopen")
			if err := img.Close(); err != nil {
				fail("close: %v", err)
			}
			if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
				fail("qemu-img check after close: %v", q)
			}
			img = open()
		}
	}
	got := engReadAll(t, img)
	if !bytes.Equal(got, m.shadow) {
		fail("final contents differ: %s", engFirstDiff(got, m.shadow))
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
		fail("qemu-img check: %v", q)
	}
	ro, err := Open(p, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	engCompareMap(t, ro, p)
	ro.Close()
	engCompareShadow(t, p, m.shadow)
}

func toBytes(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i := range s {
		out[i] = []byte(s[i])
	}
	return out
}
