// Header layouts beyond the numeric matrix (duplicate and cut extensions, data-file,
// feature bits, short files) and backing names in real images, against qemu-img info.
package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// rawExt encodes one header extension record: type, length, data, padding to 8.
func rawExt(typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	return append(b, make([]byte, pad8(uint64(len(data)))-uint64(len(data)))...)
}

// rewriteExtensions replaces the extension area of the image in s with recs (end marker
// added unless noEnd), and moves the backing file name, if any, right after it.
func rewriteExtensions(t *testing.T, s *memstore.Store, recs [][]byte, noEnd bool) {
	t.Helper()
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	c0 := make([]byte, h.ClusterSize())
	copy(c0, h.encodeFixed())
	off := uint64(h.HeaderLength)
	for _, r := range recs {
		off += uint64(copy(c0[off:], r))
	}
	if !noEnd {
		off += 8 // end marker: already zero
	}
	if h.BackingFile != "" {
		copy(c0[off:], h.BackingFile)
		binary.BigEndian.PutUint64(c0[offBackingFileOffset:], off)
	}
	if _, err := s.WriteAt(c0, 0); err != nil {
		t.Fatal(err)
	}
}

// TestHeaderExtras: malformed and unusual layouts beyond the numeric matrix. Each
// case states our expected answer (success, or the field a FormatError names) and QEMU's,
// which `qemu-img info` confirms.
func TestHeaderExtras(t *testing.T) {
	dir := t.TempDir()
	img := func(name string, args ...string) string { // args end with the size
		p := filepath.Join(dir, name)
		n := len(args) - 1
		qemuImgOutput(t, append(append([]string{"create", "-q", "-f", "qcow2"}, args[:n]...), p, args[n])...)
		return p
	}
	backingRaw := filepath.Join(dir, "b.raw")
	qemuImgOutput(t, "create", "-q", "-f", "raw", backingRaw, "1M")
	plain := img("plain.qcow2", "1M")
	withBacking := img("backed.qcow2", "-b", backingRaw, "-F", "raw", "1M")
	v2 := img("v2.qcow2", "-o", "compat=0.10", "-b", backingRaw, "-F", "raw", "1M")
	dataFile := img("df.qcow2", "-o", "data_file="+filepath.Join(dir, "df.raw"), "1M")
	dataFileRaw := img("dfraw.qcow2", "-o", "data_file="+filepath.Join(dir, "dfr.raw")+",data_file_raw=on", "1M")
	dataBacking := img("dfb.qcow2", "-o", "data_file="+filepath.Join(dir, "dfb.raw"), "-b", backingRaw, "-F", "raw", "1M")
	extL2 := img("extl2.qcow2", "-o", "extended_l2=on,cluster_size=16384", "1M")
	bitmapped := img("bm.qcow2", "1M")
	qemuImgOutput(t, "bitmap", "--add", bitmapped, "bm0")
	type extra struct {
		name   string
		base   string
		mutate func(t *testing.T, s *memstore.Store)
		field  string // "" = we accept
		qemuOK bool
		check  func(t *testing.T, h *Header) // extra checks when we accept
		why    string                        // why we differ from QEMU, when we do
	}
	poke8 := func(off int64, v uint64) func(*testing.T, *memstore.Store) {
		return func(t *testing.T, s *memstore.Store) { poke(t, s, off, v) }
	}
	bf := rawExt(extBackingFormat, []byte("raw"))
	cases := []extra{
		{name: "duplicate backing format extension", base: withBacking, field: "header extension type", qemuOK: true,
			why:    "the spec allows each extension once; QEMU keeps the last copy",
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, [][]byte{bf, bf}, false) }},
		{name: "duplicate feature name table", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				ft := rawExt(extFeatureNames, append([]byte{0, 7}, make([]byte, 46)...))
				rewriteExtensions(t, s, [][]byte{ft, ft}, false)
			}},
		{name: "duplicate unknown extension", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				u := rawExt(0x12345678, []byte("abc"))
				rewriteExtensions(t, s, [][]byte{u, u}, false)
			},
			check: func(t *testing.T, h *Header) {
				if len(h.Extensions.Unknown) != 2 {
					t.Errorf("%d unknown extensions kept", len(h.Extensions.Unknown))
				}
			}},
		{name: "zero-length unknown extension", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(0x0badf00d, nil)}, false)
			}},
		{name: "zero-length backing format", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(extBackingFormat, nil)}, false)
			},
			check: func(t *testing.T, h *Header) {
				if h.Extensions.BackingFormat != "" || h.BackingFile == "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "no end marker, extensions fill the area", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, [][]byte{bf}, true) }},
		{name: "extension crossing the end of the cluster", base: plain, field: "header extension length", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				// An unknown extension 8 bytes before the cluster end claiming 16 bytes.
				fill := rawExt(0x11111111, make([]byte, 65536-112-8-8))
				rewriteExtensions(t, s, [][]byte{fill, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x22222222), 16)}, true)
			}},
		// The header is valid: the name can come from the command line (OpenOptions.DataFile).
		// Open must refuse when none is given, as qemu-io does ("'data-file' is required for
		// this image"); qemu-img info, which does no I/O, opens it.
		{name: "data-file bit without a name", base: dataFile, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, nil, false) },
			check: func(t *testing.T, h *Header) {
				if !h.HasDataFile() || h.Extensions.DataFile != "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "data-file name without the bit", base: dataFile, field: "external data file name extension", qemuOK: true,
			why:    "QEMU ignores the stray name; we refuse the inconsistency",
			mutate: poke8(offIncompatibleFeatures, 0)},
		{name: "raw-data bit without data-file", base: plain, field: "autoclear_features", qemuOK: true,
			why:    "the spec forbids it; QEMU ignores the bit when reading",
			mutate: poke8(offAutoclearFeatures, autoclearDataFileRaw)},
		{name: "data-file with a backing file (qemu-img made)", base: dataBacking, qemuOK: true,
			check: func(t *testing.T, h *Header) {
				if !h.HasDataFile() || h.BackingFile == "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "raw data-file with a backing file", base: dataBacking, field: "backing_file_offset", qemuOK: true,
			why:    "the spec: backing files are incompatible with raw external data; QEMU only refuses to create it",
			mutate: poke8(offAutoclearFeatures, autoclearDataFileRaw)},
		{name: "raw data-file (qemu-img made)", base: dataFileRaw, qemuOK: true},
		{name: "extended L2 with cluster_bits 13", base: extL2, field: "cluster_bits", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { poke(t, s, offClusterBits, uint32(13)) }},
		{name: "unknown compression type 2 with bit 3", base: plain, field: "compression_type", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				poke(t, s, offIncompatibleFeatures, incompatCompression)
				poke(t, s, offCompressionType, uint8(2))
			}},
		{name: "corrupt bit (header accepts; Open refuses read-write)", base: plain, qemuOK: true, mutate: poke8(offIncompatibleFeatures, incompatCorrupt),
			check: func(t *testing.T, h *Header) {
				if !h.Corrupt() {
					t.Error("corrupt bit lost")
				}
			}},
		{name: "dirty bit", base: plain, qemuOK: true, mutate: poke8(offIncompatibleFeatures, incompatDirty),
			check: func(t *testing.T, h *Header) {
				if !h.Dirty() {
					t.Error("dirty bit lost")
				}
			}},
		{name: "unknown incompatible bit named by the feature table", base: plain, field: "incompatible_features", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				name := append([]byte("shiny new thing"), make([]byte, 46-15)...)
				rewriteExtensions(t, s, [][]byte{rawExt(extFeatureNames, append([]byte{featureIncompatible, 9}, name...))}, false)
				poke(t, s, offIncompatibleFeatures, uint64(1)<<9)
			}},
		{name: "bitmaps extension with garbage, autoclear bit clear", base: bitmapped, qemuOK: true,
			why: "", mutate: func(t *testing.T, s *memstore.Store) {
				poke(t, s, offAutoclearFeatures, uint64(0))
				bm := rawExt(extBitmaps, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 0xffffffff_00000007), 1<<40), 12345))
				rewriteExtensions(t, s, [][]byte{bm}, false)
			},
			check: func(t *testing.T, h *Header) {
				if h.Extensions.Bitmaps == nil || h.Extensions.Bitmaps.Reserved != 7 {
					t.Errorf("bitmaps extension not kept: %+v", h.Extensions.Bitmaps)
				}
			}},
		{name: "bitmaps extension with the autoclear bit set and reserved != 0", base: bitmapped, field: "bitmaps extension reserved field", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				b := *h.Extensions.Bitmaps
				bm := rawExt(extBitmaps, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(b.Count)<<32|1), b.DirectorySize), uint64(b.DirectoryStart)))
				rewriteExtensions(t, s, [][]byte{bm}, false)
			}},
		{name: "crypto extension in an unencrypted image", base: plain, field: "full disk encryption header extension", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(extFullDiskCrypto, make([]byte, 16))}, false)
			}},
		{name: "header_length 120 with an unknown additional field", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				exts := h.Extensions.encode()
				poke(t, s, offHeaderLength, uint32(120))
				poke(t, s, 112, uint64(0xfeedface))
				if _, err := s.WriteAt(append(exts, make([]byte, 8)...), 120); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, h *Header) {
				b := h.encodeFixed()
				if len(b) != 120 || binary.BigEndian.Uint64(b[112:]) != 0xfeedface {
					t.Errorf("unknown additional field not preserved: % x", b[104:])
				}
			}},
		{name: "version 2 with a backing format extension", base: v2, qemuOK: true,
			check: func(t *testing.T, h *Header) {
				if h.Version != 2 || h.Extensions.BackingFormat != "raw" || h.BackingFile != backingRaw {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "backing name padded with NULs", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				poke(t, s, offBackingFileSize, uint32(len(h.BackingFile)+3))
			},
			check: func(t *testing.T, h *Header) {
				if h.BackingFile != backingRaw {
					t.Errorf("backing name %q", h.BackingFile)
				}
			}},
		{name: "file shorter than the header", base: plain, field: "", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { s.Truncate(100) }},
		{name: "empty file", base: plain, field: "", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { s.Truncate(0) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := storeOf(t, c.base)
			if c.mutate != nil {
				c.mutate(t, s)
			}
			var h *Header
			err := runMeasured(t, c.name, func() error {
				var err error
				if h, err = ReadHeader(s); err == nil {
					_, err = ReadSnapshots(s, h)
				}
				return err
			})
			qok, qout := qemuAccepts(t, s, dir)
			if qok != c.qemuOK {
				t.Errorf("qemu-img info: accepted=%v, the case says %v: %s", qok, c.qemuOK, lastLine(qout))
			}
			wantOK := c.field == "" && !strings.HasPrefix(c.name, "file shorter") && c.name != "empty file"
			switch {
			case wantOK && err != nil:
				t.Fatalf("refused: %v", err)
			case wantOK:
				if c.check != nil {
					c.check(t, h)
				}
			case err == nil:
				t.Fatalf("accepted, want an error naming %q", c.field)
			case c.field == "":
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("got %v, want ErrFormat", err)
				}
			default:
				if cerr := classify(err, []string{c.field}); cerr != nil {
					t.Fatal(cerr)
				}
			}
			if (err == nil) != qok && c.why == "" {
				t.Errorf("we differ from QEMU without a documented reason (ours: %v; qemu: %s)", err, lastLine(qout))
			}
			if c.name == "unknown incompatible bit named by the feature table" && !strings.Contains(err.Error(), "shiny new thing") {
				t.Errorf("the error does not name the feature: %v", err)
			}
		})
	}
}

// TestBackingNamesInImages: images whose headers name json:, protocol or absolute backing
// files decode (the header is valid), and resolveBackingName then refuses the json: and
// protocol ones, as qnbd's policy says.
func TestBackingNamesInImages(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		refuse bool
	}{
		{`json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":"10809"}}`, true},
		{"nbd:///etc/shadow", true},
		{"nbd://127.0.0.1:10809/export", true},
		{"http://127.0.0.1/disk.img", true},
		{"/etc/shadow", false},
		{"sub/relative.raw", false},
	} {
		p := filepath.Join(dir, "x.qcow2")
		os.Remove(p)
		qemuImgOutput(t, "create", "-q", "-f", "qcow2", "-u", "-b", c.name, "-F", "raw", p, "1M")
		h, err := ReadHeader(openStorage(t, p))
		if err != nil {
			t.Fatalf("%q: header refused: %v", c.name, err)
		}
		if h.BackingFile != c.name {
			t.Fatalf("backing name %q, want %q", h.BackingFile, c.name)
		}
		got, err := resolveBackingName(dir, h.BackingFile)
		if c.refuse != (err != nil) {
			t.Errorf("%q: resolveBackingName = %q, %v", c.name, got, err)
		}
		if err != nil && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q: %v is not ErrUnsupported", c.name, err)
		}
	}
}
