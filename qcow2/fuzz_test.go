package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzHeader decodes arbitrary bytes as the first cluster of an image. Whatever decodes must
// re-encode with EncodeCluster0 and decode again to an equal Header (the tar FuzzReader
// pattern), and nothing may panic. The seeds in testdata/fuzz/FuzzHeader are the first
// clusters of qemu-img images made with many option combinations (QNBD_GEN_FUZZ_SEEDS=1
// regenerates them, see TestGenerateFuzzSeeds).
func FuzzHeader(f *testing.F) {
	f.Add([]byte("QFI\xfb"), uint64(0))
	f.Fuzz(func(t *testing.T, cluster0 []byte, fileSize uint64) {
		h, err := DecodeHeader(cluster0, fileSize)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		h1 := cloneHeader(h)
		b, err := h1.EncodeCluster0()
		if err != nil {
			// The only legitimate failure: the image filled its extension area without an
			// end marker (which QEMU accepts), and with the marker it no longer fits.
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "more than the") {
				t.Fatalf("decoded header does not re-encode: %v\n%+v", err, h)
			}
			return
		}
		if uint64(len(b)) != h.ClusterSize() {
			t.Fatalf("EncodeCluster0 returned %d bytes for a %d-byte cluster", len(b), h.ClusterSize())
		}
		h2, err := DecodeHeader(b, fileSize)
		if err != nil {
			t.Fatalf("re-encoded header does not decode: %v\nfirst: %+v", err, h)
		}
		if d := headerDiff(h, h2); d != "" {
			t.Fatalf("round trip changed the header: %s\nfirst:  %+v\nsecond: %+v", d, h, h2)
		}
		// The fixed part encodeFixed writes is the prefix of the whole cluster.
		if fixed := h2.encodeFixed(); !bytes.Equal(fixed, b[:len(fixed)]) {
			t.Fatalf("EncodeFixed differs from the start of EncodeCluster0")
		}
	})
}

// cloneHeader copies h deeply enough that encoding the copy cannot change h.
func cloneHeader(h *Header) *Header {
	c := *h
	c.UnknownFields = bytes.Clone(h.UnknownFields)
	c.Extensions.FeatureNames = append([]FeatureName(nil), h.Extensions.FeatureNames...)
	c.Extensions.Unknown = append([]RawExtension(nil), h.Extensions.Unknown...)
	return &c
}

// headerDiff compares two headers, ignoring where the backing name was stored (the encoder
// places it right after the extensions) and nil versus empty slices.
func headerDiff(a, b *Header) string {
	a, b = cloneHeader(a), cloneHeader(b)
	for _, h := range []*Header{a, b} {
		h.BackingFileOffset = 0
		if len(h.UnknownFields) == 0 {
			h.UnknownFields = nil
		}
		if len(h.Extensions.FeatureNames) == 0 {
			h.Extensions.FeatureNames = nil
		}
		if len(h.Extensions.Unknown) == 0 {
			h.Extensions.Unknown = nil
		}
	}
	if reflect.DeepEqual(a, b) {
		return ""
	}
	va, vb := reflect.ValueOf(*a), reflect.ValueOf(*b)
	var diffs []string
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s: %+v != %+v", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface()))
		}
	}
	return strings.Join(diffs, "; ")
}

// fuzzSeedImages are the qemu-img option combinations the header seeds come from.
var fuzzSeedImages = []struct {
	name, opts, size string
	backing          bool
	snapshot, bitmap bool
}{
	{"v3-64k", "cluster_size=65536", "1G", false, false, false},
	{"v2-64k", "compat=0.10", "1G", false, false, false},
	{"v2-512-backing", "compat=0.10,cluster_size=512", "16M", true, false, false},
	{"v3-512-refbits1", "cluster_size=512,refcount_bits=1", "64M", false, false, false},
	{"v3-4k-refbits64", "cluster_size=4096,refcount_bits=64", "1G", false, false, false},
	{"v3-2m-extl2-zstd", "cluster_size=2M,extended_l2=on,compression_type=zstd", "4T", false, false, false},
	{"v3-16k-extl2-lazy", "cluster_size=16384,extended_l2=on,lazy_refcounts=on", "1G", false, false, false},
	{"v3-backing", "cluster_size=65536", "1G", true, false, false},
	{"v3-datafile", "data_file=data.raw", "1M", false, false, false},
	{"v3-datafile-raw", "data_file=data2.raw,data_file_raw=on", "1M", false, false, false},
	{"v3-snapshot-bitmap-backing", "cluster_size=65536", "1G", true, true, true},
	{"v3-preallocated", "cluster_size=4096,preallocation=metadata", "8M", false, false, false},
	{"v3-zstd-refbits8", "compression_type=zstd,refcount_bits=8", "100M", false, true, false},
}

// seedBytes is how much of the first cluster a seed keeps at most (everything up to the
// backing name fits in it for every image above); a seed is cut after the last byte that
// matters, since DecodeHeader reads a short first cluster as the start of a short file.
const seedBytes = 4096

// TestGenerateFuzzSeeds writes testdata/fuzz/FuzzHeader from qemu-img images when
// QNBD_GEN_FUZZ_SEEDS is set; otherwise it checks that the committed seeds still decode, so
// the corpus cannot silently rot.
func TestGenerateFuzzSeeds(t *testing.T) {
	seedDir := filepath.Join("testdata", "fuzz", "FuzzHeader")
	if os.Getenv("QNBD_GEN_FUZZ_SEEDS") == "" {
		entries, err := os.ReadDir(seedDir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), "qemu-") {
				continue
			}
			n++
			data, size := readSeed(t, filepath.Join(seedDir, e.Name()))
			if _, err := DecodeHeader(data, size); err != nil {
				t.Errorf("seed %s no longer decodes: %v", e.Name(), err)
			}
		}
		if n < len(fuzzSeedImages) {
			t.Errorf("%d qemu-img seeds in %s, want %d", n, seedDir, len(fuzzSeedImages))
		}
		return
	}
	dir := t.TempDir()
	backing := filepath.Join(dir, "base.raw")
	qemuImg(t, "create", "-q", "-f", "raw", backing, "1M")
	if err := os.MkdirAll(seedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range fuzzSeedImages {
		img := filepath.Join(dir, c.name+".qcow2")
		args := []string{"create", "-q", "-f", "qcow2", "-o", strings.ReplaceAll(c.opts, "data_file=", "data_file="+dir+"/")}
		if c.backing {
			args = append(args, "-b", "base.raw", "-F", "raw")
		}
		qemuImg(t, append(args, img, c.size)...)
		if c.snapshot {
			qemuImg(t, "snapshot", "-c", "seed", img)
		}
		if c.bitmap {
			qemuImg(t, "bitmap", "--add", img, "seed")
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		h, err := DecodeHeader(b[:min(len(b), seedBytes)], uint64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// Keep the header, the extensions with their end marker, and the backing name.
		need := uint64(h.HeaderLength) + uint64(len(h.Extensions.encode())) + extHeaderSize
		if h.BackingFile != "" {
			need = max(need, h.BackingFileOffset+uint64(len(h.BackingFile)))
		}
		data := b[:need]
		if _, err := DecodeHeader(data, uint64(len(b))); err != nil {
			t.Fatalf("%s, cut to %d bytes: %v", c.name, need, err)
		}
		seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint64(%d)\n", data, len(b))
		if err := os.WriteFile(filepath.Join(seedDir, "qemu-"+c.name), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readSeed parses a two-value corpus file written by TestGenerateFuzzSeeds.
func readSeed(t *testing.T, path string) ([]byte, uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a corpus file", path)
	}
	var data string
	var size uint64
	if _, err := fmt.Sscanf(lines[1], "[]byte(%q)", &data); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, err := fmt.Sscanf(lines[2], "uint64(%d)", &size); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(data), size
}
