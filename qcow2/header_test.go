package qcow2

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// qemuImg runs qemu-img and fails the test on error.
func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

func readHeaderFile(t *testing.T, path string) (*Header, error) {
	t.Helper()
	s, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return ReadHeader(s)
}

func TestReadHeaderFromQemuImg(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	qemuImg(t, "create", "-f", "raw", base, "1M")
	cases := []struct {
		name string
		opts string
		size string
		want func(*testing.T, *Header)
	}{
		{"v3-64k", "cluster_size=65536", "10G", func(t *testing.T, h *Header) {
			if h.Version != 3 || h.ClusterBits != 16 || h.Size != 10<<30 || h.RefcountOrder != 4 {
				t.Errorf("got %+v", h)
			}
			if len(h.Extensions.FeatureNames) == 0 {
				t.Errorf("no feature name table")
			}
		}},
		{"v2", "compat=0.10,cluster_size=4096", "1G", func(t *testing.T, h *Header) {
			if h.Version != 2 || h.ClusterBits != 12 || h.HeaderLength != headerV2Length {
				t.Errorf("got %+v", h)
			}
		}},
		{"refbits1-512", "cluster_size=512,refcount_bits=1", "64M", func(t *testing.T, h *Header) {
			if h.ClusterBits != 9 || h.RefcountOrder != 0 {
				t.Errorf("got %+v", h)
			}
		}},
		{"extl2-zstd-lazy", "cluster_size=2M,extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=64", "4T", func(t *testing.T, h *Header) {
			g := h.Geometry()
			if !g.ExtendedL2 || h.CompressionType != CompressionZstd || !h.LazyRefcounts() || h.RefcountOrder != 6 || g.l2Entries() != 2<<20/16 {
				t.Errorf("got %+v", h)
			}
		}},
		{"backing", "backing_file=" + base + ",backing_fmt=raw", "2M", func(t *testing.T, h *Header) {
			if h.BackingFile != base || h.Extensions.BackingFormat != "raw" {
				t.Errorf("backing %q format %q", h.BackingFile, h.Extensions.BackingFormat)
			}
		}},
		{"datafile", "data_file=" + filepath.Join(dir, "data.raw") + ",data_file_raw=on", "1M", func(t *testing.T, h *Header) {
			if !h.HasDataFile() || !h.DataFileRaw() || h.Extensions.DataFile != filepath.Join(dir, "data.raw") {
				t.Errorf("got %+v", h)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", c.opts, p, c.size)
			h, err := readHeaderFile(t, p)
			if err != nil {
				t.Fatal(err)
			}
			c.want(t, h)
			// Re-encoding the first cluster reproduces what qemu-img wrote, field for field.
			b, err := h.EncodeCluster0()
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(p)
			h2, err := DecodeHeader(b, uint64(st.Size()))
			if err != nil {
				t.Fatalf("re-decode: %v", err)
			}
			if h2.BackingFile != h.BackingFile || h2.Extensions.BackingFormat != h.Extensions.BackingFormat ||
				h2.L1TableOffset != h.L1TableOffset || h2.RefTableOffset != h.RefTableOffset || len(h2.Extensions.FeatureNames) != len(h.Extensions.FeatureNames) {
				t.Errorf("round trip changed the header:\n%+v\n%+v", h, h2)
			}
		})
	}
}

func TestReadHeaderRejectsGarbage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readHeaderFile(t, p); !errors.Is(err, ErrFormat) {
		t.Fatalf("got %v, want ErrFormat", err)
	}
}
